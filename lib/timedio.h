/* timedio: reads and writes on non-blocking fds, every wait bounded by a deadline.
 *
 * Two levels:
 *   - fd level, for code that keeps its own buffers (smtp-send, lib/tlsclient's BearSSL
 *     callbacks, lib/pop3io): timedio_wait is the one "wait until readable or writable or the
 *     deadline" loop of the tree; timedio_fdread / timedio_fdwrite wrap read(2) / write(2) in it.
 *   - session level: a timedio holds a read fd and a write fd with an input and an output
 *     buffer, for line-oriented protocol programs. The fds are plain (0 and 1 from tcpserver or
 *     tls-serve) or, after STARTTLS, UCSPI-TLS's SSLREADFD and SSLWRITEFD: timedio_setfds
 *     switches and drops every buffered input byte (RFC 3207 4.2, the STARTTLS injection).
 *
 * Deadlines are absolute skalibs tains (timedio_timeout sets now + seconds). A wait that
 * reaches the deadline fails with errno ETIMEDOUT. EINTR is retried (skalibs'
 * buffer_timed_fill returns it, which would end a session on every SIGCHLD). Lines are bounded:
 * a line longer than the caller's maximum is dropped through its LF and reported as such,
 * never returned in pieces. No allocation: a timedio is one static object.
 */
#ifndef PILLARBOX_TIMEDIO_H
#define PILLARBOX_TIMEDIO_H

#include <stddef.h>
#include <sys/types.h>
#include <skalibs/tai.h>

#define TIMEDIO_IBUF 4096  /* input buffer: the longest line timedio_getline can return */
#define TIMEDIO_OBUF 16384 /* output buffer */

#define TIMEDIO_TOOLONG (-2) /* timedio_getline: the line was longer than max (dropped) */

/* Waits until fd is readable (forwrite 0) or writable (forwrite 1). Returns 1, or -1 on error
 * or when the deadline passes (errno ETIMEDOUT). */
int timedio_wait(int fd, int forwrite, tain const *deadline);

/* timedio_wait that also watches xfd for reading (imap-maildir's IDLE: the client or a
 * change in the folder): 1 when fd is ready, 2 when xfd is readable and fd is not, -1 as
 * timedio_wait. xfd < 0: timedio_wait. */
int timedio_wait2(int fd, int forwrite, int xfd, tain const *deadline);

/* read(2) on a non-blocking fd, waiting up to the deadline: > 0 bytes, 0 EOF, -1 error or
 * timeout (errno ETIMEDOUT). */
ssize_t timedio_fdread(int fd, char *buf, size_t len, tain const *deadline);

/* Writes all of s, waiting up to the deadline: 1, or 0 on error or timeout (errno). */
int timedio_fdwrite(int fd, char const *s, size_t len, tain const *deadline);

typedef struct timedio_s timedio;
struct timedio_s {
  int rfd, wfd;
  tain deadline;
  size_t ipos, ilen, olen;
  char ibuf[TIMEDIO_IBUF];
  char obuf[TIMEDIO_OBUF];
};

/* Sets the fds, makes them non-blocking, empties the buffers; the deadline is "now + 300 s"
 * until set. Returns 1, or 0 (errno). */
int timedio_init(timedio *t, int rfd, int wfd);

/* Switches to other fds (STARTTLS): flushes nothing, DROPS the buffered input. 1 or 0. */
int timedio_setfds(timedio *t, int rfd, int wfd);

/* The deadline of the waits that follow: now + secs, or an absolute one. */
void timedio_timeout(timedio *t, unsigned int secs);
void timedio_deadline(timedio *t, tain const *deadline);

/* Reads one line, LF included, of at most max bytes (max <= TIMEDIO_IBUF). Flushes the output
 * before it waits for input. Returns 1 with the line in line[0..*len) (not NUL-terminated),
 * 0 at EOF (a last line without LF is dropped), -1 on error or timeout (errno ETIMEDOUT), or
 * TIMEDIO_TOOLONG when the line was longer than max (it has been read and dropped). */
int timedio_getline(timedio *t, char *line, size_t max, size_t *len);

/* Reads up to len bytes, the buffered ones first (a DATA body, a literal). > 0, 0 EOF, -1. */
ssize_t timedio_read(timedio *t, char *buf, size_t len);

/* The count of buffered input bytes not yet consumed (the client pipelined). */
size_t timedio_pending(timedio const *t);

/* Output through the buffer; each returns 1, or 0 on a write error or timeout (errno). */
int timedio_put(timedio *t, char const *s, size_t len);
int timedio_puts(timedio *t, char const *s);
int timedio_flush(timedio *t);

#endif
