/* authdb: the reader of the password hashes (MAILROOT/control/passwd.cdb).
 *
 * Linked by the auth service (auth-serve) alone: `nm` on every other program finds none of
 * these symbols (tests/test_authsvc.py checks it). Everything else looks accounts up with
 * lookup_account_nohash (lib/lookup) and asks the auth service about passwords.
 * passwd.cdb's record: key the folded account address, value the crypt(3) hash (no NUL). The
 * file is re-checked (one stat) on every call and reopened when it was rebuilt.
 */
#ifndef PILLARBOX_AUTHDB_H
#define PILLARBOX_AUTHDB_H

#include <stddef.h>
#include "lookup.h"

/* Finds the account for an address (as lookup_account_nohash) with its hash from passwd.cdb.
 * 1 found, 0 not, -1 error. When this process may not read passwd.cdb (EACCES) or it is
 * missing, a->hash is "" and the call still succeeds (authdb_denied() tells the first case);
 * another error reading it is -1. A users.cdb record from before passwd.cdb carries its own
 * hash, used only while there is no passwd.cdb. */
int lookup_account(char const *addr, size_t len, account *a);

/* Re-checks passwd.cdb: 1 readable (or missing: no account has a password), 0 this process
 * may not read it (EACCES: the answer must be "trouble", never "bad password"), -1 error. */
int authdb_ready(void);

/* 1 if the last lookup_account found passwd.cdb unreadable by this process (EACCES). */
int authdb_denied(void);

/* Drops the open passwd.cdb (and lookup's databases). */
void authdb_close(void);

#endif
