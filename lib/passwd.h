/* passwd: password hashes with crypt_r (libcrypt / libxcrypt).
 *
 * New hashes are yescrypt ("$y$") when libcrypt offers it, else sha512-crypt ("$6$"), with a
 * fresh random salt. Verification accepts every method crypt_r knows (so hashes made by
 * other tools keep working), compares in constant time, and refuses "" and "!..." hashes
 * (login disabled) as well as "*" and the other invalid-hash markers crypt returns.
 */
#ifndef PILLARBOX_PASSWD_H
#define PILLARBOX_PASSWD_H

#include <stddef.h>
#include <skalibs/stralloc.h>

#define PASSWD_MAX 1024 /* longest password line read, in bytes */
#define PASSWD_HASH_MAX 511 /* longest password libcrypt hashes (CRYPT_MAX_PASSPHRASE_SIZE - 1) */

/* Hashes the NUL-terminated pw into out (replaced, NUL-terminated). 1 ok, 0 error (errno;
 * ERANGE: longer than PASSWD_HASH_MAX). */
int passwd_hash(char const *pw, stralloc *out);

/* 1 if pw (NUL-terminated) matches hash (NUL-terminated), 0 if not or if the hash is disabled
 * or unknown. Takes about the same time whatever the mismatch. */
int passwd_verify(char const *pw, char const *hash);

/* A hash of the kind passwd_hash makes, with a fixed salt: a setting crypt_r accepts, which
 * never matches anything a user can type, in the same time as a real check. For unknown
 * users, so that they answer like a wrong password. */
char const *passwd_dummy(void);

#endif
