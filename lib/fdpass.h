/* fdpass: one octet with descriptors attached (SCM_RIGHTS) over a UNIX stream socket, the
 * hand-over of the STARTTLS engine (lib/ucspitls sends, lib/tlsengine receives).
 *
 * The message is exactly one octet carrying exactly n descriptors. The receiver takes them
 * close-on-exec, and closes whatever else arrives with a malformed message. Both sides wait
 * on the (non-blocking or blocking) socket until the deadline.
 */
#ifndef PILLARBOX_FDPASS_H
#define PILLARBOX_FDPASS_H

#include <skalibs/tai.h>

#define FDPASS_MAX 4 /* descriptors in one message */

/* Sends c with fds[0..n) (n <= FDPASS_MAX). 1 ok, 0 error (errno; ETIMEDOUT). */
int fdpass_send(int sock, char c, int const *fds, unsigned int n, tain const *deadline);

/* Receives one octet into *c with exactly n descriptors into fds. 1 ok; 0 error (errno:
 * ETIMEDOUT, EPIPE at EOF, EPROTO when the message has not exactly n descriptors). */
int fdpass_recv(int sock, char *c, int *fds, unsigned int n, tain const *deadline);

#endif
