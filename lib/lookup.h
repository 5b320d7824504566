/* lookup: who a recipient is. The one place where addresses meet accounts, aliases and domains.
 *
 * Reads MAILROOT/control/{domains,users,aliases}.cdb (tinycdb, through lib/cdbfile); never
 * control/passwd.cdb (the password hashes: lib/authdb, linked by auth-serve alone). Keys are
 * lower-cased addresses
 * (domains and local parts are case-insensitive here). Order for an address a@d:
 *   1. exact alias or account for a@d,
 *   2. for "u+tag@d", alias or account for u@d,
 *   3. catch-all alias "@d".
 * Alias expansion is recursive, bounded in depth (LOOKUP_DEPTH_MAX) and in the number of
 * targets (LOOKUP_TARGETS_MAX); a loop is reported, never followed.
 * tinycdb (<cdb.h>) is read through lib/cdbfile and written by lib/cdbmake only (the list:
 * NEVERS in tests/test_nevers.py, checked with nm); no file includes <skalibs/cdb.h>.
 */
#ifndef PILLARBOX_LOOKUP_H
#define PILLARBOX_LOOKUP_H

#include <stddef.h>
#include <skalibs/stralloc.h>

#define LOOKUP_DEPTH_MAX 10
#define LOOKUP_TARGETS_MAX 1000

typedef struct account_s account;
struct account_s {
  stralloc address;  /* canonical account address, NUL-terminated */
  stralloc hash;     /* crypt(3) hash, NUL-terminated, filled by lib/authdb only ("" or "!" =
                      * login disabled; "" also when passwd.cdb is missing or unreadable) */
  stralloc maildir;  /* absolute Maildir path, NUL-terminated */
  unsigned long long quota; /* bytes, 0 = none */
};
#define ACCOUNT_ZERO {STRALLOC_ZERO, STRALLOC_ZERO, STRALLOC_ZERO, 0}
void account_free(account *);

/* Results of lookup_resolve. */
#define LOOKUP_UNKNOWN 0    /* local domain, no such user: 550 5.1.1 */
#define LOOKUP_FOUND 1      /* targets filled */
#define LOOKUP_REMOTE 2     /* not a local domain: targets = "R<addr>\0" */
#define LOOKUP_ELOOP (-2)   /* alias loop, too deep or too wide: permanent */
#define LOOKUP_ETEMP (-1)   /* database unreadable: temporary (errno set) */

/* Returns 1 if the domain (any case) is local, 0 if not, -1 on error. */
int lookup_is_local_domain(char const *dom, size_t len);

/* Resolves an address to its final targets, appended to targets as NUL-terminated strings:
 * "L<account address>" for a local account, "R<address>" for an outside address. */
int lookup_resolve(char const *addr, size_t len, stralloc *targets);

/* Finds the account for an address (exact or via +tag, no aliases) without its hash (a->hash
 * is ""): passwd.cdb is never opened. 1 found, 0 not, -1 error. For every caller that does not
 * check a password (delivery, recipient checks, the canonical address). */
int lookup_account_nohash(char const *addr, size_t len, account *a);

/* The same, and *legacy / *legacyn point to the hash of an old users.cdb record (from before
 * passwd.cdb; into the mapping, valid until the next lookup call), or *legacy is 0. For
 * lib/authdb only. */
int lookup_account_legacy(char const *addr, size_t len, account *a, char const **legacy,
                          size_t *legacyn);

/* Drops cached database handles, so the next call reopens the (maybe rebuilt) files. */
void lookup_close(void);

/* Every lookup first checks (a stat) whether each database it reads was rebuilt. A process
 * doing many lookups in a burst (queue-run, in one turn of its event loop) calls
 * lookup_batch(1) once, then lookup_batch_next() at the start of each burst: a file is then
 * checked once per burst, and a rebuild is seen by the next one. */
void lookup_batch(int on);
void lookup_batch_next(void);

#endif
