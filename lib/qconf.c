/* qconf: queue-run's settings. See qconf.h. */
#include <limits.h>

#include <skalibs/strerr.h>

#include "control.h"
#include "qconf.h"

#define dienomem() strerr_diefu1sys(111, "allocate")

void qconf_read(qconf *c)
{
  struct { char const *name; unsigned long def, min, max, *v; } const conf[] = {
    {"concurrency-local", 10, 1, 1000, &c->conc_local},
    {"concurrency-remote", 20, 1, 1000, &c->conc_remote},
    {"concurrency-domain", 5, 1, ULONG_MAX, &c->conc_domain},
    {"queue-rescan", 60, 1, ULONG_MAX, &c->rescan},
    {"queue-termwait", 60, 0, ULONG_MAX, &c->termwait},
    {"timeout-local", 600, 1, ULONG_MAX, &c->timeout_local},
    {"timeout-remote", 3600, 1, ULONG_MAX, &c->timeout_remote}};
  unsigned int i;
  int r;
  for (i = 0; i < sizeof conf / sizeof *conf; i++) {
    unsigned long u = control_uint(conf[i].name, conf[i].def);
    *conf[i].v = u < conf[i].min ? conf[i].min : u > conf[i].max ? conf[i].max : u;
  }
  retry_policy_read(&c->policy);
  c->active_max = (unsigned int)(c->conc_local + c->conc_remote) * 2 + 16;
  c->me.len = c->postmaster.len = c->defdom.len = 0;
  r = control_readline(&c->me, "me");
  if (r < 0) strerr_diefu1sys(111, "read control/me");
  if ((!r && !stralloc_cats(&c->me, "localhost")) || !stralloc_0(&c->me)) dienomem();
  r = control_defaultdomain(&c->defdom); /* bounces stay here: control/defaultdomain */
  if (r < 0) strerr_diefu1sys(111, "read control/defaultdomain");
  if ((!r && !stralloc_catb(&c->defdom, c->me.s, c->me.len - 1)) || !stralloc_0(&c->defdom) ||
      !stralloc_cats(&c->postmaster, "postmaster@") ||
      !stralloc_cats(&c->postmaster, c->defdom.s) || !stralloc_0(&c->postmaster))
    dienomem();
}
