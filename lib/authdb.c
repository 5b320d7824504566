/* authdb: see authdb.h. Uses tinycdb (<cdb.h>) through lib/cdbfile; never <skalibs/cdb.h>. */
#include <errno.h>
#include <string.h>

#include <skalibs/stralloc.h>

#include "authdb.h"
#include "cdbfile.h"
#include "lookup.h"

static cdbfile passwd = CDBFILE_INIT("control/passwd.cdb");

int authdb_denied(void)
{
  return passwd.open == CDBFILE_DENIED;
}

int authdb_ready(void)
{
  if (!cdbfile_fresh(&passwd)) return -1;
  return passwd.open != CDBFILE_DENIED;
}

void authdb_close(void)
{
  cdbfile_drop(&passwd);
  lookup_close();
}

/* Fills a->hash for the account a->address from passwd.cdb, if this process may read it.
 * legacy: the hash of an old users.cdb record, used only while there is no passwd.cdb. */
static int fill_hash(account *a, char const *legacy, size_t legacyn)
{
  char const *v;
  size_t vn;
  int r;
  if (!cdbfile_fresh(&passwd)) return -1;
  if (passwd.open == CDBFILE_MISSING && legacy) {
    v = legacy;
    vn = legacyn;
  } else {
    r = cdbfile_get(&passwd, a->address.s, a->address.len - 1, &v, &vn);
    if (r < 0) return -1;
    if (!r) return 1; /* no hash: login disabled */
    if (memchr(v, 0, vn)) {
      errno = EPROTO;
      return -1;
    }
  }
  a->hash.len = 0;
  if (!stralloc_catb(&a->hash, v, vn) || !stralloc_0(&a->hash)) return -1;
  return 1;
}

int lookup_account(char const *addr, size_t len, account *a)
{
  char const *legacy;
  size_t legacyn;
  int r = lookup_account_legacy(addr, len, a, &legacy, &legacyn);
  if (r <= 0) return r;
  /* legacy points into the users.cdb mapping, which fill_hash does not touch */
  return fill_hash(a, legacy, legacyn);
}
