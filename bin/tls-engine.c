/* tls-engine: the TLS engine service (lib/tlsengine). Loads every keypair (as root), listens
 * on a UNIX socket, and gives each connection a protocol program hands over (STARTTLS, or
 * implicit TLS: lib/ucspitls with TLS_ENGINE set) to one TLS engine under TLS_UID/TLS_GID: a
 * spare forked in advance (-p), or one forked for it. See doc/tls-engine.8.
 */
#include <stdlib.h>
#include <unistd.h>

#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"
#include "tlsengine.h"
#include "tlsserver.h"

#define USAGE \
  "tls-engine [ -c maxconn ] [ -p spares ] [ -K timeout_ms ] [ -a uid,uid... ] [ -d notif ] " \
  "[ socket ]"
char const *PROG = "tls-engine";

/* "U1,U2,..." into the allowed list; 0 on junk. */
static int scan_uids(char const *s, tlsengine_cfg *cfg)
{
  for (;;) {
    unsigned int u;
    size_t k = uint_scan(s, &u);
    if (!k || cfg->nallow >= TLSENGINE_ALLOW_MAX) return 0;
    cfg->allow[cfg->nallow++] = (uid_t)u;
    s += k;
    if (!*s) return 1;
    if (*s++ != ',') return 0;
  }
}

/* The engines' uid and gid: TLS_UID / TLS_GID (both or neither); required when root. */
static void engine_ids(tlsengine_cfg *cfg)
{
  char const *u = getenv("TLS_UID"), *g = getenv("TLS_GID");
  unsigned int uu = 0, gg = 0;
  int hu = u && *u, hg = g && *g;
  if ((hu && !uint0_scan(u, &uu)) || (hg && !uint0_scan(g, &gg)) || hu != hg)
    strerr_dief1x(100, "TLS_UID and TLS_GID must be numbers, and both set or both unset");
  if (!hu && !geteuid())
    strerr_dief1x(100, "started as root: TLS_UID and TLS_GID must name the engines' ids");
  cfg->drop = hu;
  cfg->uid = (uid_t)uu;
  cfg->gid = (gid_t)gg;
}

int main(int argc, char const *const *argv)
{
  tlsengine_cfg cfg = {.maxconn = 40, .hsms = 30000, .notif = -1};
  stralloc path = STRALLOC_ZERO;
  subgetopt l = SUBGETOPT_ZERO;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "c:p:K:a:d:", &l);
    unsigned int n;
    if (opt == -1) break;
    switch (opt) {
      case 'c':
        if (!uint0_scan(l.arg, &cfg.maxconn) || !cfg.maxconn) strerr_dieusage(100, USAGE);
        break;
      case 'p':
        if (!uint0_scan(l.arg, &cfg.spares) || cfg.spares > TLSENGINE_SPARES_MAX)
          strerr_dieusage(100, USAGE);
        break;
      case 'K':
        if (!uint0_scan(l.arg, &cfg.hsms) || cfg.hsms > 3600000) strerr_dieusage(100, USAGE);
        break;
      case 'a': if (!scan_uids(l.arg, &cfg)) strerr_dieusage(100, USAGE); break;
      case 'd':
        if (!uint0_scan(l.arg, &n) || n < 3) strerr_dieusage(100, USAGE);
        cfg.notif = (int)n;
        break;
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc > 1) strerr_dieusage(100, USAGE);
  if (argc) cfg.path = argv[0];
  else {
    if (!mailroot_path(&path, "run/tls/engine")) strerr_diefu1sys(111, "allocate");
    cfg.path = path.s;
  }
  engine_ids(&cfg);
  /* Every key and certificate, now, with the privileges we were started with (root). */
  if (!tlsserver_load()) strerr_dief2x(100, "no usable certificate: ", tlsserver_error());
  {
    char const *name, *err;
    unsigned int i;
    for (i = 1; tlsserver_pairs(&name, &err, i); i++)
      if (err)
        strerr_warnw4x("SNI keypair for ", name, " refused (its clients get the default): ", err);
  }
  return tlsengine_serve(&cfg);
}
