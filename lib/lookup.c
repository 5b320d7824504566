/* lookup: see lookup.h. Record formats (written by lib/accounts.c):
 *   domains.cdb  key: folded domain            value: empty
 *   users.cdb    key: folded address           value: maildir \0 quota \0
 *                (before passwd.cdb existed: hash \0 maildir \0 quota \0, still read)
 *   passwd.cdb   key: folded address           value: hash (no NUL; mode 0600): read by
 *                lib/authdb.c only
 *   aliases.cdb  key: folded address or "@dom" value: target \0 target \0 ...
 * Uses tinycdb (<cdb.h>) and never includes <skalibs/cdb.h>. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <skalibs/stralloc.h>
#include <skalibs/types.h>
#include <skalibs/uint64.h>

#include "addr.h"
#include "cdbfile.h"
#include "control.h"
#include "lookup.h"

static cdbfile dbs[3] = {CDBFILE_INIT("control/domains.cdb"), CDBFILE_INIT("control/users.cdb"),
                         CDBFILE_INIT("control/aliases.cdb")};
#define DB_DOMAINS (&dbs[0])
#define DB_USERS (&dbs[1])
#define DB_ALIASES (&dbs[2])

/* lookup_batch: each file is checked (a stat) once per batch, not once per lookup */
static int batch;
static unsigned char checked[3];

void lookup_close(void)
{
  unsigned int i;
  for (i = 0; i < 3; i++) cdbfile_drop(&dbs[i]);
  memset(checked, 0, sizeof checked);
}

void lookup_batch(int on)
{
  batch = on;
  memset(checked, 0, sizeof checked);
}

void lookup_batch_next(void)
{
  memset(checked, 0, sizeof checked);
}

static int fresh(cdbfile *d)
{
  size_t i = (size_t)(d - dbs);
  if (batch && checked[i]) return 1;
  if (!cdbfile_fresh(d)) return 0;
  checked[i] = 1;
  return 1;
}

static int fresh_all(void)
{
  return fresh(DB_DOMAINS) && fresh(DB_USERS) && fresh(DB_ALIASES);
}

static int fold_into(char const *s, size_t n, char *buf)
{
  size_t i;
  for (i = 0; i < n; i++) buf[i] = (s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i];
  return 1;
}

static int is_local(char const *dom, size_t n)
{
  char buf[ADDR_DOMAIN_MAX + 1];
  char const *v;
  size_t vn;
  if (!n || n > ADDR_DOMAIN_MAX) return 0;
  fold_into(dom, n, buf);
  return cdbfile_get(DB_DOMAINS, buf, n, &v, &vn);
}

int lookup_is_local_domain(char const *dom, size_t len)
{
  if (!fresh(DB_DOMAINS)) return -1;
  return is_local(dom, len);
}

void account_free(account *a)
{
  stralloc_free(&a->address);
  stralloc_free(&a->hash);
  stralloc_free(&a->maildir);
  a->quota = 0;
}

/* Exact account for the folded key. 1 found (a filled, if a; a->hash left empty), 0 not,
 * -1 error. *legacy, if given, points to the hash of an old-format users.cdb record (or 0). */
static int account_get(char const *key, size_t kn, account *a, char const **legacy,
                       size_t *legacyn)
{
  char const *v;
  size_t vn, m, i, nuls = 0;
  int r = cdbfile_get(DB_USERS, key, kn, &v, &vn);
  if (r <= 0) return r;
  if (!a) return 1;
  for (i = 0; i < vn; i++)
    if (!v[i]) nuls++;
  if (legacy) *legacy = 0;
  if (nuls == 3) { /* hash \0 maildir \0 quota \0: made before passwd.cdb */
    size_t h = strlen(v);
    if (legacy) {
      *legacy = v;
      *legacyn = h;
    }
    v += h + 1;
    vn -= h + 1;
  } else if (nuls != 2)
    goto bad;
  m = strlen(v);
  a->address.len = a->hash.len = a->maildir.len = 0;
  if (!stralloc_catb(&a->address, key, kn) || !stralloc_0(&a->address)) return -1;
  if (!stralloc_0(&a->hash)) return -1;
  if (v[0] != '/') {
    if (!stralloc_cats(&a->maildir, mailroot()) || !stralloc_catb(&a->maildir, "/", 1))
      return -1;
  }
  if (!stralloc_catb(&a->maildir, v, m) || !stralloc_0(&a->maildir)) return -1;
  {
    char const *q = v + m + 1;
    size_t qn = strlen(q);
    uint64_t u = 0;
    if (qn && uint64_scan(q, &u) != qn) goto bad;
    a->quota = u;
  }
  return 1;
bad:
  errno = EPROTO;
  return -1;
}

/* Splits a folded address at its '@' (outside quotes). 0 if it has none. */
static int split(char const *k, size_t kn, size_t *at)
{
  *at = addr_at(k, kn);
  return *at < kn && *at > 0;
}

/* Offset of the first '+' in the local part (not inside quotes), or at. */
static size_t plus(char const *k, size_t at)
{
  size_t i;
  if (at && k[0] == '"') return at;
  for (i = 0; i < at; i++)
    if (k[i] == '+') return i;
  return at;
}

/* Finds the account; *legacy (if given) points to the hash of an old-format users.cdb record,
 * or is 0. */
static int account_find(char const *addr, size_t len, account *a, char const **legacy,
                        size_t *legacyn)
{
  char key[ADDR_PATH_MAX + 1] = {0};
  size_t at, p;
  int r;
  if (len > ADDR_PATH_MAX) return 0;
  if (!fresh(DB_USERS)) return -1;
  fold_into(addr, len, key);
  r = account_get(key, len, a, legacy, legacyn);
  if (!r) {
    if (!split(key, len, &at)) return 0;
    p = plus(key, at);
    if (p == at || p == 0) return 0;
    memmove(key + p, key + at, len - at);
    r = account_get(key, p + len - at, a, legacy, legacyn);
  }
  return r;
}

int lookup_account_legacy(char const *addr, size_t len, account *a, char const **legacy,
                          size_t *legacyn)
{
  *legacy = 0;
  *legacyn = 0;
  return account_find(addr, len, a, legacy, legacyn);
}

int lookup_account_nohash(char const *addr, size_t len, account *a)
{
  return account_find(addr, len, a, 0, 0);
}

/* The expansion state of one lookup_resolve call. */
struct rs {
  stralloc *out;
  size_t out0;           /* where this call's targets begin in out */
  unsigned int ntargets; /* targets produced */
  unsigned int steps;    /* alias targets examined, bounded by LOOKUP_TARGETS_MAX */
  stralloc chain;        /* keys being expanded, NUL-separated */
};

static int in_chain(struct rs *st, char const *k, size_t kn)
{
  size_t i = 0;
  while (i < st->chain.len) {
    size_t n = strlen(st->chain.s + i);
    if (n == kn && !memcmp(st->chain.s + i, k, kn)) return 1;
    i += n + 1;
  }
  return 0;
}

/* Adds "Kaddr\0" unless already there. 1 ok, 0 too many, -1 error. */
static int emit(struct rs *st, char kind, char const *a, size_t n)
{
  size_t i = st->out0;
  while (i < st->out->len) {
    size_t m = strlen(st->out->s + i);
    if (m == n + 1 && st->out->s[i] == kind && !memcmp(st->out->s + i + 1, a, n)) return 1;
    i += m + 1;
  }
  if (++st->ntargets > LOOKUP_TARGETS_MAX) return 0;
  if (!stralloc_catb(st->out, &kind, 1) || !stralloc_catb(st->out, a, n) || !stralloc_0(st->out))
    return -1;
  return 1;
}

static int resolve(struct rs *st, char const *addr, size_t len, unsigned int depth, int top);

/* Expands the alias record whose value is v[0..vn), for key k (pushed on the chain). */
static int expand(struct rs *st, char const *k, size_t kn, char const *v, size_t vn,
                  unsigned int depth)
{
  size_t mark = st->chain.len, i = 0;
  int r = LOOKUP_FOUND;
  char buf[ADDR_PATH_MAX + 1];
  if (depth >= LOOKUP_DEPTH_MAX) return LOOKUP_ELOOP;
  if (!stralloc_catb(&st->chain, k, kn) || !stralloc_0(&st->chain)) return LOOKUP_ETEMP;
  /* v points into the mapping, which stays valid: nothing is reopened during a resolve */
  while (i < vn) {
    size_t n = strnlen(v + i, vn - i);
    if (!n || n > ADDR_PATH_MAX) {
      i += n + 1;
      continue;
    }
    if (++st->steps > LOOKUP_TARGETS_MAX) {
      r = LOOKUP_ELOOP;
      break;
    }
    memcpy(buf, v + i, n);
    r = resolve(st, buf, n, depth + 1, 0);
    if (r < 0) break;
    r = LOOKUP_FOUND;
    i += n + 1;
  }
  st->chain.len = mark;
  return r;
}

/* Adds the local target k: LOOKUP_FOUND, LOOKUP_ELOOP (too many targets) or LOOKUP_ETEMP. */
static int emit_local(struct rs *st, char const *k, size_t kn)
{
  int r = emit(st, 'L', k, kn);
  return r < 0 ? LOOKUP_ETEMP : r ? LOOKUP_FOUND : LOOKUP_ELOOP;
}

/* Resolves k (a folded address, or the same without its +tag) as written: an address already
 * being expanded is an account, which stops there ("a: a, b" keeps a copy in a), or else a
 * loop; otherwise an alias k is expanded, then an account k is a local target. Returns a
 * LOOKUP_* result, or LOOKUP_UNKNOWN when k is neither an alias nor an account. */
static int resolve_exact(struct rs *st, char const *k, size_t kn, unsigned int depth)
{
  char const *v;
  size_t vn;
  int r;
  if (in_chain(st, k, kn)) {
    r = account_get(k, kn, 0, 0, 0);
    if (r < 0) return LOOKUP_ETEMP;
    return r ? emit_local(st, k, kn) : LOOKUP_ELOOP;
  }
  r = cdbfile_get(DB_ALIASES, k, kn, &v, &vn);
  if (r < 0) return LOOKUP_ETEMP;
  if (r) return expand(st, k, kn, v, vn, depth);
  r = account_get(k, kn, 0, 0, 0);
  if (r < 0) return LOOKUP_ETEMP;
  return r ? emit_local(st, k, kn) : LOOKUP_UNKNOWN;
}

/* Resolves one address (top: the address asked about; otherwise an alias target). */
static int resolve(struct rs *st, char const *addr, size_t len, unsigned int depth, int top)
{
  char key[ADDR_PATH_MAX + 2] = {0};
  size_t at, p;
  char const *v;
  size_t vn;
  int r;
  if (!len || len > ADDR_PATH_MAX) return top ? LOOKUP_UNKNOWN : LOOKUP_FOUND;
  fold_into(addr, len, key);
  if (!split(key, len, &at)) {
    if (top) return LOOKUP_UNKNOWN;
    return emit(st, 'R', addr, len) > 0 ? LOOKUP_FOUND : LOOKUP_ELOOP;
  }
  if (!is_local(key + at + 1, len - at - 1)) {
    r = emit(st, 'R', addr, len);
    if (r < 0) return LOOKUP_ETEMP;
    if (!r) return LOOKUP_ELOOP;
    return top ? LOOKUP_REMOTE : LOOKUP_FOUND;
  }
  /* 1. exact alias, then exact account (an address being expanded stops or loops here) */
  r = resolve_exact(st, key, len, depth);
  if (r != LOOKUP_UNKNOWN) return r;
  /* 2. user+tag: the same for user */
  p = plus(key, at);
  if (p != at && p > 0) {
    char base[ADDR_PATH_MAX + 2];
    size_t bn = p + len - at;
    memcpy(base, key, p);
    memcpy(base + p, key + at, len - at);
    r = resolve_exact(st, base, bn, depth);
    if (r != LOOKUP_UNKNOWN) return r;
  }
  /* 3. catch-all "@domain" */
  r = cdbfile_get(DB_ALIASES, key + at, len - at, &v, &vn);
  if (r < 0) return LOOKUP_ETEMP;
  if (r) {
    if (in_chain(st, key + at, len - at)) return LOOKUP_ELOOP;
    return expand(st, key + at, len - at, v, vn, depth);
  }
  if (top) return LOOKUP_UNKNOWN;
  /* An alias names a local address that does not exist: keep it as a local target, so the
   * delivery fails and bounces visibly instead of the mail vanishing. */
  return emit_local(st, key, len);
}

int lookup_resolve(char const *addr, size_t len, stralloc *targets)
{
  struct rs st;
  int r;
  if (!fresh_all()) return LOOKUP_ETEMP;
  st.out = targets;
  st.out0 = targets->len;
  st.ntargets = 0;
  st.steps = 0;
  st.chain = stralloc_zero;
  r = resolve(&st, addr, len, 0, 1);
  stralloc_free(&st.chain);
  if (r != LOOKUP_FOUND && r != LOOKUP_REMOTE) targets->len = st.out0;
  if (r == LOOKUP_FOUND && targets->len == st.out0) r = LOOKUP_UNKNOWN;
  return r;
}
