/* mail-lookup: show where mail for an address goes (doc/mail-lookup.8).
 * mail-lookup ADDRESS...
 * One line per final target: "local ACCOUNT MAILDIR" or "remote ADDRESS"; or
 * "unknown ADDRESS" / "loop ADDRESS" for addresses that cannot be resolved. */
#include <string.h>

#include <skalibs/buffer.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>

#include "addr.h"
#include "lookup.h"

char const *PROG = "mail-lookup";
#define USAGE "mail-lookup ADDRESS..."

static void put(char const *s)
{
  if (buffer_puts(buffer_1, s) < 0) strerr_diefu1sys(111, "write to stdout");
}

int main(int argc, char const *const *argv)
{
  stralloc t = STRALLOC_ZERO;
  account a = ACCOUNT_ZERO;
  int i, e = 0;
  if (argc < 2) strerr_dieusage(100, USAGE);
  for (i = 1; i < argc; i++) {
    size_t n = strlen(argv[i]), k = 0;
    int r;
    if (addr_check_mailbox(argv[i], n, ADDR_UTF8) != ADDR_OK)
      strerr_dief2x(100, "invalid address: ", argv[i]);
    t.len = 0;
    r = lookup_resolve(argv[i], n, &t);
    if (r == LOOKUP_ETEMP) strerr_diefu2sys(111, "look up ", argv[i]);
    if (r == LOOKUP_UNKNOWN || r == LOOKUP_ELOOP) {
      put(r == LOOKUP_UNKNOWN ? "unknown " : "loop ");
      put(argv[i]);
      put("\n");
      e = 100;
      continue;
    }
    while (k < t.len) {
      char const *x = t.s + k;
      size_t xn = strlen(x);
      if (x[0] == 'L') {
        put("local ");
        put(x + 1);
        r = lookup_account_nohash(x + 1, xn - 1, &a);
        if (r < 0) strerr_diefu2sys(111, "look up ", x + 1);
        if (r) {
          put(" ");
          put(a.maildir.s);
        } else
          put(" (no such account)");
      } else {
        put("remote ");
        put(x + 1);
      }
      put("\n");
      k += xn + 1;
    }
  }
  if (!buffer_flush(buffer_1)) strerr_diefu1sys(111, "write to stdout");
  return e;
}
