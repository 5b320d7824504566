/* mail-user: administer accounts (doc/mail-user.8).
 * mail-user add ADDRESS [--quota BYTES] | del ADDRESS | passwd ADDRESS | quota ADDRESS BYTES |
 *           list [DOMAIN] | rebuild
 * Passwords are read from stdin (one line), never from the command line. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/buffer.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include <skalibs/uint64.h>

#include "accounts.h"
#include "instance.h"
#include "addr.h"
#include "control.h"
#include "passwd.h"

char const *PROG = "mail-user";
#define USAGE \
  "mail-user add ADDRESS [--quota BYTES] | del ADDRESS | passwd ADDRESS | " \
  "quota ADDRESS BYTES | list [DOMAIN] | rebuild   (passwords on stdin)"
#define dieusage() strerr_dieusage(100, USAGE)

static stralloc key = STRALLOC_ZERO; /* the folded address */
static size_t at;                    /* offset of '@' in key */

static void check_address(char const *a)
{
  size_t n = strlen(a), i;
  int r = addr_check_mailbox(a, n, ADDR_UTF8);
  if (r != ADDR_OK) strerr_dief4x(100, "invalid address ", a, ": ", addr_strerror(r));
  if (!addr_fold(a, n, &key) || !stralloc_0(&key)) strerr_diefu1sys(111, "allocate");
  key.len--;
  at = addr_at(key.s, key.len);
  if (addr_is_literal(key.s + at + 1, key.len - at - 1))
    strerr_dief2x(100, "an account needs a domain name, not an address literal: ", a);
  /* the local part names the Maildir: keep it a plain file name */
  if (key.s[0] == '"') strerr_dief2x(100, "quoted local parts are not supported for accounts: ", a);
  for (i = 0; i < at; i++)
    if (key.s[i] == '/') strerr_dief2x(100, "'/' is not allowed in an account name: ", a);
}

static uint64_t parse_quota(char const *s)
{
  uint64_t q;
  size_t n = strlen(s);
  if (!n || n > 20 || uint64_scan(s, &q) != n) strerr_dief2x(100, "invalid quota (bytes): ", s);
  return q;
}

static void require_local_domain(void)
{
  stralloc text = STRALLOC_ZERO;
  accounts_load(ACCT_DOMAINS, &text);
  if (!accounts_find(ACCT_DOMAINS, text.s, text.len, key.s + at + 1, key.len - at - 1, 0))
    strerr_dief3x(100, "not a local domain: ", key.s + at + 1, " (add it with mail-domain add)");
  stralloc_free(&text);
}

static void mkdir_0700(char const *p)
{
  if (mkdir(p, 0700) < 0 && errno != EEXIST) strerr_diefu2sys(111, "mkdir ", p);
}

/* Makes MAILROOT/rel (mail/DOMAIN/LOCAL) a Maildir. */
static void make_maildir(char const *rel)
{
  stralloc p = STRALLOC_ZERO;
  size_t base;
  if (!mailroot_path(&p, "mail")) strerr_diefu1sys(111, "allocate");
  mkdir_0700(p.s);
  p.len--;
  if (!stralloc_catb(&p, "/", 1) || !stralloc_catb(&p, key.s + at + 1, key.len - at - 1) ||
      !stralloc_0(&p))
    strerr_diefu1sys(111, "allocate");
  mkdir_0700(p.s);
  if (!mailroot_path(&p, rel)) strerr_diefu1sys(111, "allocate");
  mkdir_0700(p.s);
  base = p.len - 1;
  p.len = base;
  if (!stralloc_cats(&p, "/tmp") || !stralloc_0(&p)) strerr_diefu1sys(111, "allocate");
  mkdir_0700(p.s);
  p.len = base;
  if (!stralloc_cats(&p, "/new") || !stralloc_0(&p)) strerr_diefu1sys(111, "allocate");
  mkdir_0700(p.s);
  p.len = base;
  if (!stralloc_cats(&p, "/cur") || !stralloc_0(&p)) strerr_diefu1sys(111, "allocate");
  mkdir_0700(p.s);
  /* run by root: the Maildir and its domain directory belong to the delivery uid */
  p.len = base;
  if (!stralloc_0(&p) || instance_own_tree(p.s, INSTANCE_MAIL) < 0)
    strerr_diefu2sys(111, "give to the owner of mail/: ", p.s);
  while (p.len && p.s[p.len - 1] != '/') p.len--;
  if (p.len) p.s[--p.len] = 0;
  if (instance_own(p.s, INSTANCE_MAIL) < 0) strerr_diefu2sys(111, "give to the owner of mail/: ", p.s);
  stralloc_free(&p);
}

static void make_line(stralloc *line, char const *hash, char const *maildir, size_t mlen,
                      uint64_t quota)
{
  char fmt[UINT64_FMT];
  line->len = 0;
  if (!stralloc_catb(line, key.s, key.len) || !stralloc_catb(line, ":", 1) ||
      !stralloc_cats(line, hash) || !stralloc_catb(line, ":", 1) ||
      !stralloc_catb(line, maildir, mlen) || !stralloc_catb(line, ":", 1) ||
      !stralloc_catb(line, fmt, uint64_fmt(fmt, quota)))
    strerr_diefu1sys(111, "allocate");
}

/* RFC 5321 4.5.1: every domain must accept postmaster. After key was added to control/users
 * (users is the text before the add):
 * - the first account of a domain with neither an alias nor an account postmaster@DOMAIN
 *   makes the alias postmaster@DOMAIN -> this account;
 * - an account postmaster@DOMAIN replaces an alias postmaster@DOMAIN that has one target
 *   (the one made above, or one like it), since aliases come before accounts;
 * - any other alias of the new address hides the account: a warning says so. */
static void postmaster_rule(stralloc const *users)
{
  stralloc aliases = STRALLOC_ZERO, pm = STRALLOC_ZERO, out = STRALLOC_ZERO, line = STRALLOC_ZERO;
  char const *dom = key.s + at + 1;
  size_t dlen = key.len - at - 1;
  acct_rec r;
  accounts_load(ACCT_ALIASES, &aliases);
  if (accounts_find(ACCT_ALIASES, aliases.s, aliases.len, key.s, key.len, &r)) {
    size_t pos = 0, count = 0, tn = 0, xn;
    char const *t = "", *x;
    while (accounts_next_target(r.targets, r.targetslen, &pos, &x, &xn)) {
      if (!count) t = x, tn = xn;
      count++;
    }
    if (at == 10 && !memcmp(key.s, "postmaster", 10) && count == 1) {
      if (!stralloc_catb(&line, t, tn) || !stralloc_0(&line)) strerr_diefu1sys(111, "allocate");
      if (!accounts_replace(ACCT_ALIASES, aliases.s, aliases.len, key.s, key.len, 0, 0, &out))
        strerr_diefu1sys(111, "allocate");
      if (accounts_save_try(ACCT_ALIASES, out.s, out.len))
        strerr_warni5x("alias ", key.s, " -> ", line.s,
                       " removed: the new account receives the postmaster's mail");
      else
        strerr_warnw3x("the alias ", key.s, " still takes this account's mail (aliases come first)");
    } else
      strerr_warnw4x("the alias ", key.s, " takes this account's mail (aliases come first);"
                     " remove it with: mail-alias del ", key.s);
    goto done;
  }
  if (at == 10 && !memcmp(key.s, "postmaster", 10)) goto done;
  if (accounts_count_domain(ACCT_USERS, users->s, users->len, dom, dlen))
    goto done; /* not the first account of the domain */
  if (!stralloc_cats(&pm, "postmaster@") || !stralloc_catb(&pm, dom, dlen))
    strerr_diefu1sys(111, "allocate");
  if (accounts_find(ACCT_ALIASES, aliases.s, aliases.len, pm.s, pm.len, 0) ||
      accounts_find(ACCT_USERS, users->s, users->len, pm.s, pm.len, 0))
    goto done;
  if (!stralloc_catb(&line, pm.s, pm.len) || !stralloc_cats(&line, ": ") ||
      !stralloc_catb(&line, key.s, key.len))
    strerr_diefu1sys(111, "allocate");
  if (!accounts_replace(ACCT_ALIASES, aliases.s, aliases.len, pm.s, pm.len, line.s, line.len,
                        &out) ||
      !stralloc_0(&pm))
    strerr_diefu1sys(111, "allocate");
  if (accounts_save_try(ACCT_ALIASES, out.s, out.len))
    strerr_warni5x("made the alias ", pm.s, " -> ", key.s,
                   " (RFC 5321: every domain has a postmaster; change it with mail-alias)");
  else
    strerr_warnw5x("account added, but no alias ", pm.s, " -> ", key.s,
                   " made: fix control/aliases, then mail-alias add it");
done:
  stralloc_free(&aliases);
  stralloc_free(&pm);
  stralloc_free(&out);
  stralloc_free(&line);
}

static void do_add(char const *addr, uint64_t quota)
{
  stralloc pw = STRALLOC_ZERO, hash = STRALLOC_ZERO, text = STRALLOC_ZERO,
           line = STRALLOC_ZERO, rel = STRALLOC_ZERO;
  int lock;
  check_address(addr);
  accounts_read_password(&pw);
  if (!passwd_hash(pw.s, &hash)) strerr_diefu1sys(111, "hash the password");
  memset(pw.s, 0, pw.len);
  lock = accounts_lock();
  require_local_domain();
  accounts_load(ACCT_USERS, &text);
  if (accounts_find(ACCT_USERS, text.s, text.len, key.s, key.len, 0))
    strerr_dief2x(100, "account exists already: ", key.s);
  if (!stralloc_cats(&rel, "mail/") || !stralloc_catb(&rel, key.s + at + 1, key.len - at - 1) ||
      !stralloc_catb(&rel, "/", 1) || !stralloc_catb(&rel, key.s, at) || !stralloc_0(&rel))
    strerr_diefu1sys(111, "allocate");
  make_maildir(rel.s);
  make_line(&line, hash.s, rel.s, rel.len - 1, quota);
  accounts_replace_save(ACCT_USERS, text.s, text.len, key.s, key.len, line.s, line.len);
  postmaster_rule(&text);
  close(lock);
}

static void do_passwd_or_quota(char const *addr, char const *quota)
{
  stralloc pw = STRALLOC_ZERO, hash = STRALLOC_ZERO, text = STRALLOC_ZERO,
           line = STRALLOC_ZERO, maildir = STRALLOC_ZERO;
  acct_rec r;
  int lock;
  uint64_t q = 0;
  check_address(addr);
  if (quota) q = parse_quota(quota);
  else {
    accounts_read_password(&pw);
    if (!passwd_hash(pw.s, &hash)) strerr_diefu1sys(111, "hash the password");
    memset(pw.s, 0, pw.len);
  }
  lock = accounts_lock();
  accounts_load(ACCT_USERS, &text);
  if (!accounts_find(ACCT_USERS, text.s, text.len, key.s, key.len, &r))
    strerr_dief2x(100, "no such account: ", key.s);
  if (!stralloc_catb(&maildir, r.maildir, r.maildirlen)) strerr_diefu1sys(111, "allocate");
  if (quota) {
    if (!stralloc_catb(&hash, r.hash, r.hashlen) || !stralloc_0(&hash))
      strerr_diefu1sys(111, "allocate");
  } else
    q = r.quota;
  make_line(&line, hash.s, maildir.s, maildir.len, q);
  accounts_replace_save(ACCT_USERS, text.s, text.len, key.s, key.len, line.s, line.len);
  close(lock);
}

static void do_del(char const *addr)
{
  stralloc text = STRALLOC_ZERO;
  int lock;
  check_address(addr);
  lock = accounts_lock();
  accounts_load(ACCT_USERS, &text);
  if (!accounts_find(ACCT_USERS, text.s, text.len, key.s, key.len, 0))
    strerr_dief2x(100, "no such account: ", key.s);
  accounts_replace_save(ACCT_USERS, text.s, text.len, key.s, key.len, 0, 0);
  close(lock);
}

static int print_line(char const *s, size_t n, unsigned long line, void *data)
{
  acct_rec r;
  char const *why;
  char const *dom = data;
  stralloc k = STRALLOC_ZERO;
  (void)line;
  if (!accounts_parse(ACCT_USERS, s, n, &r, &why)) return 1;
  if (!addr_fold(r.key, r.keylen, &k)) return -1;
  if (dom) {
    size_t a = addr_at(k.s, k.len), dl = strlen(dom);
    if (k.len - a - 1 != dl || memcmp(k.s + a + 1, dom, dl)) {
      stralloc_free(&k);
      return 1;
    }
  }
  if (buffer_put(buffer_1, k.s, k.len) < 0 || buffer_put(buffer_1, "\n", 1) < 0) return -1;
  stralloc_free(&k);
  return 1;
}

int main(int argc, char const *const *argv)
{
  char const *cmd;
  if (argc < 2) dieusage();
  cmd = argv[1];
  if (!strcmp(cmd, "add")) {
    char const *addr = 0, *quota = 0;
    int i;
    for (i = 2; i < argc; i++) {
      if (!strcmp(argv[i], "--quota") || !strcmp(argv[i], "-q")) {
        if (++i >= argc) dieusage();
        quota = argv[i];
      } else if (!strncmp(argv[i], "--quota=", 8))
        quota = argv[i] + 8;
      else if (argv[i][0] == '-' || addr)
        dieusage();
      else
        addr = argv[i];
    }
    if (!addr) dieusage();
    do_add(addr, quota ? parse_quota(quota) : 0);
    return 0;
  }
  if (!strcmp(cmd, "del")) {
    if (argc != 3) dieusage();
    do_del(argv[2]);
    return 0;
  }
  if (!strcmp(cmd, "passwd")) {
    if (argc != 3) dieusage();
    do_passwd_or_quota(argv[2], 0);
    return 0;
  }
  if (!strcmp(cmd, "quota")) {
    if (argc != 4) dieusage();
    do_passwd_or_quota(argv[2], argv[3]);
    return 0;
  }
  if (!strcmp(cmd, "list")) {
    stralloc dom = STRALLOC_ZERO;
    if (argc > 3) dieusage();
    if (argc == 3) {
      if (!addr_fold(argv[2], strlen(argv[2]), &dom) || !stralloc_0(&dom))
        strerr_diefu1sys(111, "allocate");
    }
    accounts_list(ACCT_USERS, print_line, argc == 3 ? dom.s : 0);
    return 0;
  }
  if (!strcmp(cmd, "rebuild")) {
    if (argc != 2) dieusage();
    accounts_rebuild(ACCT_USERS);
    return 0;
  }
  dieusage();
}
