/* qconf: queue-run's settings, read from control/ at start and at SIGHUP (doc/queue-run.8,
 * "Control files"). Each number is clamped to its range; a file that is absent gives the
 * default. The names a bounce needs come from control/me and control/defaultdomain.
 */
#ifndef PILLARBOX_QCONF_H
#define PILLARBOX_QCONF_H

#include <skalibs/stralloc.h>

#include "retry.h"

typedef struct qconf_s qconf;
struct qconf_s {
  unsigned long conc_local;     /* concurrency-local (10, 1..1000) */
  unsigned long conc_remote;    /* concurrency-remote (20, 1..1000) */
  unsigned long conc_domain;    /* concurrency-domain (5): deliveries at once to one domain */
  unsigned long rescan;         /* queue-rescan (60 s): how often queue/mess is read again */
  unsigned long termwait;       /* queue-termwait (60 s): running deliveries at SIGTERM */
  unsigned long timeout_local;  /* timeout-local (600 s) */
  unsigned long timeout_remote; /* timeout-remote (3600 s) */
  unsigned int active_max;      /* messages loaded at once: twice the concurrency, plus 16 */
  retry_policy policy;
  stralloc me;         /* control/me, or "localhost"; NUL-terminated */
  stralloc defdom;     /* control/defaultdomain, or me; where bounces come from */
  stralloc postmaster; /* postmaster@defdom */
};
#define QCONF_ZERO {0, 0, 0, 0, 0, 0, 0, 0, {0, 0, 0}, STRALLOC_ZERO, STRALLOC_ZERO, STRALLOC_ZERO}

/* Reads every setting into c (again, at SIGHUP). Dies 100 naming a file with junk in it, 111
 * on a read error or when out of memory, as control_uint does. */
void qconf_read(qconf *c);

#endif
