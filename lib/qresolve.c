/* qresolve: envelope recipients to delivery targets. See qresolve.h. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <skalibs/stralloc.h>

#include "lookup.h"
#include "qresolve.h"

/* 1 if a target already resolved delivers to addr the same way */
static int duplicate(queue_target const *t, size_t n, char st, char const *addr, size_t len)
{
  size_t i;
  for (i = 0; i < n; i++) {
    if (t[i].state == QUEUE_T_NEW || t[i].state == QUEUE_T_FAILED ||
        t[i].state == QUEUE_T_BOUNCED)
      continue;
    if ((t[i].state == QUEUE_T_REMOTE) != (st == QUEUE_T_REMOTE)) continue;
    if (strlen(t[i].addr) == len && !strncasecmp(t[i].addr, addr, len)) return 1;
  }
  return 0;
}

static char *dup0(char const *s, size_t len)
{
  char *d = malloc(len + 1);
  if (d) memcpy(d, s, len), d[len] = 0;
  return d;
}

/* the targets lookup gave (tg: "L"/"R" ADDR "\0"...): the first replaces i */
static int expand(queue_target **tp, size_t *np, size_t i, stralloc const *tg)
{
  size_t p = 0;
  int first = 1;
  while (p < tg->len) {
    char const *s = tg->s + p;
    size_t l = strlen(s);
    char st = s[0] == 'L' ? QUEUE_T_LOCAL : QUEUE_T_REMOTE;
    char *a;
    p += l + 1;
    if (l < 2 || duplicate(*tp, *np, st, s + 1, l - 1)) continue;
    a = dup0(s + 1, l - 1);
    if (!a) return QRESOLVE_NOMEM;
    if (first) {
      free((*tp)[i].addr);
      (*tp)[i].addr = a;
      (*tp)[i].state = st;
      first = 0;
    } else {
      queue_target *n = realloc(*tp, (*np + 1) * sizeof *n);
      if (!n) {
        free(a);
        return QRESOLVE_NOMEM;
      }
      *tp = n;
      memset(&n[*np], 0, sizeof n[*np]);
      n[*np].state = st;
      n[*np].rcpt = n[i].rcpt;
      n[*np].addr = a;
      if (!queue_target_setdiag(&n[*np], "", 0)) {
        free(a);
        return QRESOLVE_NOMEM;
      }
      (*np)++;
    }
  }
  if (!first) return QRESOLVE_OK;
  if (tg->len) { /* every target was a duplicate */
    (*tp)[i].state = QUEUE_T_DONE;
    return queue_target_setdiag(&(*tp)[i], "duplicate", 9) ? QRESOLVE_DUP : QRESOLVE_NOMEM;
  }
  (*tp)[i].state = QUEUE_T_FAILED; /* an alias without targets */
  return queue_target_setdiag(&(*tp)[i], "x-pillarbox; 5.1.1 alias without targets", 40)
           ? QRESOLVE_FAILED : QRESOLVE_NOMEM;
}

int qresolve(queue_target **t, size_t *n, size_t i)
{
  stralloc tg = STRALLOC_ZERO;
  char const *why = 0;
  int k = lookup_resolve((*t)[i].addr, strlen((*t)[i].addr), &tg), r;
  if (k == LOOKUP_ETEMP) r = QRESOLVE_TEMP;
  else if (k == LOOKUP_UNKNOWN) why = "x-pillarbox; 5.1.1 no such user";
  else if (k == LOOKUP_ELOOP) why = "x-pillarbox; 5.4.6 alias loop or expansion too large";
  if (why) {
    (*t)[i].state = QUEUE_T_FAILED;
    r = queue_target_setdiag(&(*t)[i], why, strlen(why)) ? QRESOLVE_FAILED : QRESOLVE_NOMEM;
  } else if (k != LOOKUP_ETEMP)
    r = expand(t, n, i, &tg);
  stralloc_free(&tg);
  return r;
}
