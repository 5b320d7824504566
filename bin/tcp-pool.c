/* tcp-pool: a TCP service served by a pool of long-lived workers (no process per
 * connection), in tcpserver's place for programs that can serve one session after another.
 *
 * Binds ip:port (as root when the port needs it), drops to -u/-g, then keeps the workers
 * (lib/tcppool): each runs prog with the listening socket and accepts connections itself,
 * with the UCSPI environment and the tcprules database applied per connection, up to -m
 * connections each. See doc/tcp-pool.8.
 */
#include <unistd.h>

#include <skalibs/sgetopt.h>
#include <skalibs/setgroups.h>
#include <skalibs/sig.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "tcppool.h"

char const *PROG = "tcp-pool";
#define USAGE "tcp-pool [ -v ] [ -R ] [ -H ] [ -c max ] [ -n prefork ] [ -m maxuse ] [ -i idle ] " \
  "[ -b backlog ] [ -x rules.cdb ] [ -l localname ] [ -u uid ] [ -g gid ] ip port prog..."

static unsigned int num(char const *s, unsigned int min, unsigned int max)
{
  unsigned int u;
  if (!uint0_scan(s, &u) || u < min || u > max) strerr_dieusage(100, USAGE);
  return u;
}

int main(int argc, char const *const *argv)
{
  tcppool_conf c = {.max = 40, .prefork = 2, .maxuse = 100, .idle = 60};
  unsigned int backlog = 256, uid = 0, gid = 0, port;
  int hasuid = 0, hasgid = 0, lfd;
  subgetopt l = SUBGETOPT_ZERO;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "vRHc:n:m:i:b:x:l:u:g:", &l);
    if (opt == -1) break;
    switch (opt) {
      case 'v': c.verbose = 1; break;
      case 'R': case 'H': break; /* tcpserver's: no ident, no reverse DNS (never done) */
      case 'c': c.max = num(l.arg, 1, TCPPOOL_MAX); break;
      case 'n': c.prefork = num(l.arg, 0, TCPPOOL_MAX); break;
      case 'm': c.maxuse = num(l.arg, 1, 1000000); break;
      case 'i': c.idle = num(l.arg, 0, 86400); break;
      case 'b': backlog = num(l.arg, 1, 65535); break;
      case 'x': c.rules = l.arg; break;
      case 'l': c.localhost = l.arg; break;
      case 'u': uid = num(l.arg, 0, 4294967294U); hasuid = 1; break;
      case 'g': gid = num(l.arg, 0, 4294967294U); hasgid = 1; break;
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc < 3) strerr_dieusage(100, USAGE);
  port = num(argv[1], 0, 65535);
  if (c.prefork > c.max) c.prefork = c.max;
  c.argv = argv + 2;
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  lfd = tcppool_listen(argv[0], (uint16_t)port, backlog);
  if (lfd < 0) strerr_diefu4sys(111, "listen on ", argv[0], " port ", argv[1]);
  /* as tcpserver -g / -u: after the bind; -g alone leaves one group (s6-applyuidgid -G for
   * the supplementary groups, before) */
  if (hasgid && setgroups_and_gid((gid_t)gid, 1, (gid_t const *)&gid) < 0)
    strerr_diefu1sys(111, "set the gid");
  if (hasuid && setuid((uid_t)uid) < 0) strerr_diefu1sys(111, "set the uid");
  if (c.verbose) strerr_warni("listening on ", argv[0], " port ", argv[1]);
  tcppool_run(lfd, &c);
}
