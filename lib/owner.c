/* owner: see owner.h */
#include <string.h>
#include <strings.h>

#include <skalibs/bytestr.h>
#include <skalibs/stralloc.h>

#include "addr.h"
#include "control.h"
#include "hdr.h"
#include "lookup.h"
#include "owner.h"

static int eq_fold(char const *a, size_t alen, char const *b, size_t blen)
{
  return alen == blen && !strncasecmp(a, b, alen);
}

/* control/sender-allow: "ACCOUNT ADDRESS" or "ACCOUNT @DOMAIN" per line. 1, 0, -1. */
static int allowed_by_list(char const *acc, size_t alen, char const *f, size_t n)
{
  stralloc l = STRALLOC_ZERO;
  size_t i;
  int ok = 0;
  char const *at = memchr(f, '@', n);
  if (control_readlines(&l, "sender-allow") < 0) return -1;
  for (i = 0; i < l.len && !ok; i += strlen(l.s + i) + 1) {
    char const *s = l.s + i;
    size_t sl = strlen(s), a = byte_chr(s, sl, ' '), b;
    if (a >= sl) a = byte_chr(s, sl, '\t');
    if (a >= sl || !eq_fold(s, a, acc, alen)) continue;
    for (b = a; b < sl && (s[b] == ' ' || s[b] == '\t'); b++)
      ;
    if (s[b] == '@') ok = at && eq_fold(s + b, sl - b, at, n - (size_t)(at - f));
    else ok = eq_fold(s + b, sl - b, f, n);
  }
  stralloc_free(&l);
  return ok;
}

int owner_owns(char const *acc, size_t alen, char const *addr, size_t n)
{
  stralloc f = STRALLOC_ZERO, t = STRALLOC_ZERO;
  size_t i;
  int r, ok = 0;
  if (!addr_fold(addr, n, &f)) return -1;
  if (eq_fold(f.s, f.len, acc, alen)) ok = 1;
  else {
    r = lookup_resolve(f.s, f.len, &t);
    if (r == LOOKUP_ETEMP) ok = -1;
    for (i = 0; r == LOOKUP_FOUND && i < t.len && !ok; i += strlen(t.s + i) + 1)
      if (t.s[i] == 'L' && eq_fold(t.s + i + 1, strlen(t.s + i + 1), acc, alen)) ok = 1;
    if (!ok) ok = allowed_by_list(acc, alen, f.s, f.len);
  }
  stralloc_free(&f);
  stralloc_free(&t);
  return ok;
}

typedef struct ctx_s {
  char const *acc;
  size_t alen;
  unsigned int n;
  int err;
} ctx;

static int each(void *p, char const *s, size_t n)
{
  ctx *c = p;
  int r = owner_owns(c->acc, c->alen, s, n);
  c->n++;
  if (r < 0) c->err = 1;
  return r > 0;
}

int owner_owns_list(char const *acc, size_t alen, char const *value, size_t n)
{
  ctx c = {acc, alen, 0, 0};
  int r = hdr_addrlist(value, n, &each, &c);
  if (c.err) return -1;
  return r && c.n > 0;
}
