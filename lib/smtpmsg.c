/* smtpmsg: see smtpmsg.h */
#include <string.h>
#include <time.h>

#include <skalibs/stralloc.h>

#include "smtpmsg.h"

#define OBUF 4096

static void put(smtpmsg *m, char const *s, size_t n, int client)
{
  m->size += n;
  if (m->size > m->max) m->toobig = 1;
  if (client) smtp_hops_scan(&m->hops, s, n);
  if (client && m->grabfrom) hdr_grab_scan(&m->from, s, n);
  if (!m->toobig) inject_write(&m->inj, s, n);
}

int smtpmsg_start(smtpmsg *m, inject_facts const *f, unsigned int timeout, smtp_trace *t,
                  uint64_t databytes, int bdat, int grabfrom)
{
  m->started = 0;
  m->headed = 0;
  m->size = 0;
  m->max = databytes;
  m->toobig = 0;
  m->grabfrom = grabfrom;
  m->trace = *t;
  smtp_data_init(&m->dm, bdat);
  smtp_hops_init(&m->hops);
  hdr_grab_init(&m->from, "From");
  if (!inject_start(&m->inj, f, timeout)) return 0;
  m->started = 1;
  return 1;
}

/* Our Received: field, once, before the client's first byte: "with ESMTP id ID" when the
 * queue told the id (by now it has, while the client was sending). */
static void head(smtpmsg *m)
{
  stralloc r = STRALLOC_ZERO, id = STRALLOC_ZERO;
  smtp_trace t = m->trace;
  char date[64];
  time_t now = time(0);
  struct tm tm;
  if (m->headed || !m->started) return;
  m->headed = 1;
  if (inject_early_id(&m->inj, &id) && stralloc_0(&id)) t.id = id.s;
  if (!gmtime_r(&now, &tm) || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm))
    date[0] = 0;
  t.date = date;
  if (smtp_received(&r, &t)) put(m, r.s, r.len, 0);
  else smtpmsg_abort(m); /* out of memory: the commit answers 451 */
  stralloc_free(&r);
  stralloc_free(&id);
}

size_t smtpmsg_data(smtpmsg *m, char const *in, size_t n, int *done)
{
  size_t used = 0;
  *done = 0;
  head(m);
  while (used < n && !*done) {
    char obuf[OBUF + 2];
    size_t k = n - used < OBUF ? n - used : OBUF, olen;
    k = smtp_data_scan(&m->dm, in + used, k, obuf, &olen, done);
    used += k;
    put(m, obuf, olen, 1);
  }
  return used;
}

void smtpmsg_bdat_end(smtpmsg *m)
{
  char o[2];
  size_t k;
  head(m);
  k = smtp_data_finish(&m->dm, o);
  put(m, o, k, 1);
}

int smtpmsg_verdict(smtpmsg const *m, unsigned long hoplimit)
{
  if (m->toobig) return SMTPMSG_TOOBIG;
  if (m->dm.flags & SMTP_DATA_NUL) return SMTPMSG_NUL;
  if (m->dm.flags) return SMTPMSG_BARE;
  if (m->hops.count >= hoplimit) return SMTPMSG_HOPS; /* with ours it would be over */
  return SMTPMSG_OK;
}

int smtpmsg_commit(smtpmsg *m, char const *sender, size_t senderlen, char const *rcpts,
                   size_t rcptslen, stralloc *id)
{
  stralloc env = STRALLOC_ZERO;
  int r;
  head(m);
  if (!stralloc_catb(&env, "F", 1) || !stralloc_catb(&env, sender, senderlen) ||
      !stralloc_0(&env) || !stralloc_catb(&env, rcpts, rcptslen) || !stralloc_0(&env)) {
    smtpmsg_abort(m);
    return 111;
  }
  r = inject_commit(&m->inj, env.s, env.len, id);
  m->started = 0;
  stralloc_free(&env);
  return r;
}

void smtpmsg_abort(smtpmsg *m)
{
  if (m->started) inject_abort(&m->inj);
  m->started = 0;
}
