/* retry: the retry schedule and the queue lifetime. See retry.h. */
#include <string.h>

#include <skalibs/random.h>

#include "control.h"
#include "retry.h"

uint64_t retry_delay(retry_policy const *p, unsigned int attempts)
{
  uint64_t d = p->base ? p->base : 1, max = p->max > d ? p->max : d;
  unsigned int i;
  for (i = 1; i < attempts && d < max; i++) d *= 2;
  if (d > max) d = max;
  return d + random_uint32((uint32_t)(d / 4 + 1));
}

int retry_expired(retry_policy const *p, uint64_t arrival, uint64_t now)
{
  return now >= arrival + p->lifetime;
}

int retry_expired_diag(stralloc *sa, char const *diag, size_t len)
{
  static char const what[] = "x-pillarbox; " RETRY_EXPIRED_STATUS
                             " message expired in the queue; last error: ";
  size_t l = 0;
  if (len > 2 && !memcmp(diag, "R=", 2)) { /* keep the remote MTA in front */
    char const *sp = memchr(diag, ' ', len);
    l = sp ? (size_t)(sp - diag) + 1 : len;
  }
  sa->len = 0;
  return stralloc_catb(sa, diag, l) && stralloc_catb(sa, what, sizeof what - 1) &&
         stralloc_catb(sa, diag + l, len - l);
}

void retry_policy_read(retry_policy *p)
{
  p->base = control_uint("retry-base", 240);
  p->max = control_uint("retry-max", 14400);
  p->lifetime = control_uint("queue-lifetime", 432000);
  if (!p->base) p->base = 1;
  if (p->max < p->base) p->max = p->base;
}
