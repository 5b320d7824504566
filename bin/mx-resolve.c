/* mx-resolve: print where mail for a domain goes, best first. */
#include <string.h>

#include <skalibs/buffer.h>
#include <skalibs/sgetopt.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "dns.h"

#define USAGE "mx-resolve DOMAIN"
char const *PROG = "mx-resolve";

static dns_result res;

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  size_t i;
  int r;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "", &l);
    if (opt == -1) break;
    strerr_dieusage(100, USAGE);
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc != 1 || !argv[0][0]) strerr_dieusage(100, USAGE);
  r = dns_mx(argv[0], &res);
  if (r == DNS_PERM) strerr_dief(100, res.why);
  if (r == DNS_TEMP) strerr_dief(111, res.why);
  for (i = 0; i < res.n; i++) {
    char fmt[UINT_FMT];
    char ip[64];
    fmt[uint_fmt(fmt, res.t[i].pref)] = 0;
    dns_fmt_ip(&res.t[i], ip);
    if (buffer_puts(buffer_1, fmt) < 0 || buffer_put(buffer_1, " ", 1) < 0 ||
        buffer_puts(buffer_1, res.t[i].host) < 0 || buffer_put(buffer_1, " ", 1) < 0 ||
        buffer_puts(buffer_1, ip) < 0 || buffer_put(buffer_1, "\n", 1) < 0)
      strerr_diefusys(111, "write to stdout");
  }
  if (!buffer_flush(buffer_1)) strerr_diefusys(111, "write to stdout");
  return 0;
}
