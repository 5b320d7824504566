/* checkpw: asking auth-check (the checkpassword interface) whether a login is good.
 *
 * Protocol programs never see password hashes: they run `auth-check true` with
 * "user\0password\0\0" on fd 3 and look at the exit code. auth-check is found by PATH, or
 * named by $AUTH_CHECK (a program path). The wait is bounded (CHECKPW_TIMEOUT seconds; the
 * child is then killed and the result is temporary).
 */
#ifndef PILLARBOX_CHECKPW_H
#define PILLARBOX_CHECKPW_H

#include <stddef.h>

#define CHECKPW_OK 0      /* good credentials: 235 */
#define CHECKPW_BAD 1     /* bad credentials (or misuse): 535 5.7.8 */
#define CHECKPW_TEMP 111  /* trouble: 454 4.7.0 */

#define CHECKPW_TIMEOUT 30

/* Runs auth-check for user[0..userlen) and pass[0..passlen). Returns CHECKPW_*. */
int checkpw(char const *user, size_t userlen, char const *pass, size_t passlen);

#endif
