/* mail-domain: administer the local domains (doc/mail-domain.8).
 * mail-domain add DOMAIN | del DOMAIN | list | rebuild */
#include <string.h>
#include <unistd.h>

#include <skalibs/buffer.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "accounts.h"
#include "addr.h"

char const *PROG = "mail-domain";
#define USAGE "mail-domain add DOMAIN | del DOMAIN | list | rebuild"
#define dieusage() strerr_dieusage(100, USAGE)

static void fold_domain(char const *d, stralloc *key)
{
  stralloc t = STRALLOC_ZERO;
  size_t n = strlen(d);
  if (!n || n > ADDR_DOMAIN_MAX || d[0] == '[') strerr_dief2x(100, "not a valid domain: ", d);
  if (!stralloc_cats(&t, "x@") || !stralloc_catb(&t, d, n)) strerr_diefu1sys(111, "allocate");
  if (addr_check_mailbox(t.s, t.len, ADDR_UTF8) != ADDR_OK)
    strerr_dief2x(100, "not a valid domain: ", d);
  if (!addr_fold(d, n, key)) strerr_diefu1sys(111, "allocate");
  stralloc_free(&t);
}

static int print_line(char const *s, size_t n, unsigned long line, void *data)
{
  acct_rec r;
  char const *why;
  stralloc *key = data;
  (void)line;
  if (!accounts_parse(ACCT_DOMAINS, s, n, &r, &why)) return 1;
  if (!addr_fold(r.key, r.keylen, key)) return -1;
  if (buffer_put(buffer_1, key->s, key->len) < 0 || buffer_put(buffer_1, "\n", 1) < 0) return -1;
  return 1;
}

/* Warns when accounts or aliases of a removed domain stay behind. */
static void warn_leftovers(stralloc const *key)
{
  stralloc text = STRALLOC_ZERO;
  int kind;
  for (kind = ACCT_USERS; kind <= ACCT_ALIASES; kind++) {
    unsigned long n;
    accounts_load(kind, &text);
    n = accounts_count_domain(kind, text.s, text.len, key->s, key->len);
    if (n) {
      char fmt[ULONG_FMT];
      fmt[ulong_fmt(fmt, n)] = 0;
      strerr_warnw6x(fmt, kind == ACCT_USERS ? " account(s)" : " alias(es)",
                     " of the removed domain stay in control/", accounts_name(kind),
                     " (they receive no mail until it is added again)", "");
    }
  }
  stralloc_free(&text);
}

int main(int argc, char const *const *argv)
{
  stralloc text = STRALLOC_ZERO, key = STRALLOC_ZERO;
  char const *cmd;
  if (argc < 2) dieusage();
  cmd = argv[1];
  if (!strcmp(cmd, "list")) {
    if (argc != 2) dieusage();
    accounts_list(ACCT_DOMAINS, print_line, &key);
    return 0;
  }
  if (!strcmp(cmd, "rebuild")) {
    if (argc != 2) dieusage();
    accounts_rebuild(ACCT_DOMAINS);
    return 0;
  }
  if (argc != 3) dieusage();
  fold_domain(argv[2], &key);
  if (!strcmp(cmd, "add")) {
    int lock = accounts_lock();
    accounts_load(ACCT_DOMAINS, &text);
    if (accounts_find(ACCT_DOMAINS, text.s, text.len, key.s, key.len, 0)) {
      strerr_warnw2x("already a local domain: ", argv[2]);
      close(lock);
      return 0;
    }
    accounts_replace_save(ACCT_DOMAINS, text.s, text.len, key.s, key.len, key.s, key.len);
    close(lock);
    return 0;
  }
  if (!strcmp(cmd, "del")) {
    int lock = accounts_lock();
    accounts_load(ACCT_DOMAINS, &text);
    if (!accounts_find(ACCT_DOMAINS, text.s, text.len, key.s, key.len, 0))
      strerr_dief2x(100, "not a local domain: ", argv[2]);
    accounts_replace_save(ACCT_DOMAINS, text.s, text.len, key.s, key.len, 0, 0);
    close(lock);
    warn_leftovers(&key);
    return 0;
  }
  dieusage();
}
