/* authclient: asking the auth service (auth-serve) whether a password is good.
 *
 * The service listens on a UNIX stream socket, MAILROOT/run/auth/socket (or $AUTH_SOCKET).
 * Its directory's mode and group decide who may connect (group pb-authc when run as root).
 * One request per connection, then the service answers and closes:
 *   request  'C' user '\0' password '\0'      check a password (at most AUTHPROTO_REQ_MAX
 *                                             octets in all; user 1..AUTHPROTO_USER_MAX)
 *            'S'                              statistics
 *   reply    'K' address '\0' maildir '\0'    good: the account and its Maildir
 *            'N'                              bad credentials (unknown user, wrong password,
 *                                             disabled account: the same answer)
 *            'T' reason '\0'                  trouble (database unreadable, service busy past
 *                                             its queue deadline, hashing failed): temporary
 *            'S' "name=value\n"...            the statistics (see auth-serve(8))
 * A reply is at most AUTHPROTO_REPLY_MAX octets. The same bytes work on a socketpair with
 * `auth-serve -i` (one request on fd 0, its reply on fd 1): auth-check's direct mode.
 */
#ifndef PILLARBOX_AUTHCLIENT_H
#define PILLARBOX_AUTHCLIENT_H

#include <stddef.h>
#include <skalibs/stralloc.h>
#include <skalibs/tai.h>

#define AUTHPROTO_REQ_MAX 1024
#define AUTHPROTO_USER_MAX 320
#define AUTHPROTO_REPLY_MAX 4096
#define AUTHCLIENT_TIMEOUT 25 /* seconds, under the 30 s the protocol programs give a check */

#define AUTHCLIENT_OK 0
#define AUTHCLIENT_BAD 1
#define AUTHCLIENT_TEMP 111
#define AUTHCLIENT_NOSERVICE (-1) /* there is no socket file (ENOENT) */

/* The socket's path into sa (NUL-terminated): $AUTH_SOCKET, else MAILROOT/run/auth/socket.
 * 1 ok, 0 error. */
int authclient_path(stralloc *sa);

/* Builds the 'C' request for user/pass into buf (at least AUTHPROTO_REQ_MAX octets). Returns
 * its length, or 0 when it would not fit or the user is empty or holds a NUL. */
size_t authclient_request(char *buf, char const *user, size_t ulen, char const *pass,
                          size_t plen);

/* Sends req on fd and reads the reply until EOF (at most AUTHPROTO_REPLY_MAX octets) before
 * the deadline. 1 ok, 0 error (errno; ETIMEDOUT). */
int authclient_exchange(int fd, char const *req, size_t reqlen, stralloc *reply,
                        tain const *deadline);

/* Connects to path, asks about user/pass, and parses the reply. AUTHCLIENT_OK fills address
 * and maildir (NUL-terminated); AUTHCLIENT_NOSERVICE when path does not exist. */
int authclient_check(char const *path, char const *user, size_t ulen, char const *pass,
                     size_t plen, stralloc *address, stralloc *maildir);

/* Direct mode: runs `auth-serve -i` (found by PATH) on a socketpair and exchanges req with it.
 * 1 ok (reply filled), 0 error (errno). */
int authclient_direct(char const *req, size_t reqlen, stralloc *reply);

/* authclient_check, then authclient_direct when there is no socket file. Returns
 * AUTHCLIENT_OK, _BAD or _TEMP (errno set, or 0 when the service answered "trouble"). */
int authclient_ask(char const *path, char const *user, size_t ulen, char const *pass,
                   size_t plen, stralloc *address, stralloc *maildir);

/* Parses a reply: AUTHCLIENT_OK (address, maildir filled), _BAD or _TEMP. */
int authclient_parse(char const *s, size_t len, stralloc *address, stralloc *maildir);

#endif
