/* checkpw: asking whether a login is good, for protocol programs (SMTP AUTH).
 *
 * Protocol programs never see password hashes. By default checkpw asks the auth service
 * in-process (lib/authclient: MAILROOT/run/auth/socket, or `auth-serve -i` when there is no
 * socket file), the same question auth-check asks, without an exec. When $AUTH_CHECK names a
 * checkpassword program, it runs `$AUTH_CHECK true` with "user\0password\0\0" on fd 3 and
 * looks at the exit code instead. The wait is bounded (the auth client's 25 s; for a program,
 * CHECKPW_TIMEOUT seconds, then the child is killed). Trouble of any kind is CHECKPW_TEMP.
 */
#ifndef PILLARBOX_CHECKPW_H
#define PILLARBOX_CHECKPW_H

#include <stddef.h>
#include <sys/types.h>

#define CHECKPW_OK 0      /* good credentials: 235 */
#define CHECKPW_BAD 1     /* bad credentials (or misuse): 535 5.7.8 */
#define CHECKPW_TEMP 111  /* trouble: 454 4.7.0 */

#define CHECKPW_TIMEOUT 30
#define CHECKPW_INPUT_MAX 512 /* octets on fd 3, the checkpassword interface's bound */

/* Runs auth-check for user[0..userlen) and pass[0..passlen). Returns CHECKPW_*. */
int checkpw(char const *user, size_t userlen, char const *pass, size_t passlen);

/* The other side of the interface, for the checkpassword programs (auth-check,
 * login-handoff): reads fd 3 to its end into buf (room for CHECKPW_INPUT_MAX + 1 octets), closes
 * it and returns the length. Exits as the interface says: 2 when fd 3 is not open or holds more
 * than CHECKPW_INPUT_MAX octets (buf is wiped first), 111 on a read error. */
size_t checkpw_read3(char *buf);

/* For the pre-login fronts (pop3-serve, imap-serve) that start a checkpassword program whose
 * session program notifies them on a pipe once the login is good: reads that pipe's byte or
 * its EOF within secs seconds. Returns 1 notified, 0 EOF, -1 timeout or error. */
int checkpw_wait_notify(int fd, unsigned int secs);

/* Once a session runs, the pre-login front and login-handoff only wait; instead of keeping
 * their whole program mapped for that, they exec login-wait (found on $PATH; its man page says
 * why). checkpw_waiter_child: for a front whose child pid holds the session; login-wait waits
 * for it, logs "PROG: info: logout USER from IP status CODE" as the front did, removes
 * slotpath (when slotfd is not -1: the slot's lock, kept open across the exec) and exits with
 * the child's code. checkpw_waiter_fd: login-wait exits with the octet read from fd (0 at its
 * end). Both return only when login-wait could not be run (logged): the caller then waits
 * itself. */
void checkpw_waiter_child(pid_t pid, int slotfd, char const *slotpath, char const *user,
                         char const *ip);
void checkpw_waiter_fd(int fd, char const *slotpath, char const *prefix);

/* A front that is a tcp-pool worker does not wait for a session: once the session runs it
 * goes back to accept(). Its login program (login-handoff) then waits in its place and logs
 * the logout: checkpw_start is given the slot's lock fd (it becomes the child's fd
 * CHECKPW_SLOTFD) and these variables in mods: LOGIN_LOGOUT="PROG: info: logout USER from IP
 * status " (the line login-wait completes with "0" when the session has ended) and
 * LOGIN_SLOT=slotpath (the file login-wait removes then). checkpw_detach_mods fills
 * mods[0..2) with them (static buffers; NAME alone, i.e. unset, when the front waits itself:
 * detach 0, or no slot). */
#define CHECKPW_SLOTFD 5
void checkpw_detach_mods(char const **mods, int detach, char const *user, char const *ip,
                         char const *slotpath);

/* For the pre-login fronts: starts the checkpassword program argv with the read end of the
 * credentials pipe on its fd 3 and the write end of the notification pipe on its fd 4, the
 * environment edited by mods (spawn_env). Returns its pid, with *credfd (checkpw_send) and
 * *notifyfd (checkpw_wait_notify), or -1 (warned about) with nothing left open. Dies 111 when
 * the pipes or the environment cannot be made. */
pid_t checkpw_start(char const *const *argv, char const *const *mods, size_t nmods,
                    int *credfd, int *notifyfd, int slotfd);

/* Writes the credentials (creds[0..len)) to fd, wipes them and closes fd. A program that does
 * not read its fd 3 answers by its exit code all the same, so a write error is not one. */
void checkpw_send(int fd, char *creds, size_t len);

/* The log name of a login attempt: printable ASCII only ('?' for the rest), at most 64 octets
 * (it comes from the client). In a static buffer. */
char const *checkpw_logname(char const *u, size_t len);

/* Waits for the checkpassword program pid (retrying on EINTR; dies 111 naming what on any
 * other error). Returns its exit code, or 256 when it was killed by a signal. */
int checkpw_reap(pid_t pid, char const *what);

#endif
