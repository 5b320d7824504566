/* mail-user: administer accounts (doc/mail-user.8).
 * mail-user add ADDRESS [--quota BYTES] | del [--force] [--purge] ADDRESS | passwd ADDRESS |
 *           quota ADDRESS BYTES | list [DOMAIN] | rebuild
 * Passwords are read from stdin (one line), never from the command line. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/buffer.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include <skalibs/uint64.h>

#include "accounts.h"
#include "instance.h"
#include "mailstore.h"
#include "quotastate.h"
#include "addr.h"
#include "control.h"
#include "passwd.h"

char const *PROG = "mail-user";
#define USAGE \
  "mail-user add ADDRESS [--quota BYTES] | del [--force] [--purge] ADDRESS | passwd ADDRESS | " \
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

/* The Maildir++ folders every account starts with (.Sent .Drafts .Trash .Junk .Archive,
 * subscribed), made in md at account creation so that every client finds them (issue 12). */
static void default_folders(char const *md)
{
  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (here < 0) strerr_diefu1sys(111, "open the current directory");
  if (chdir(md) < 0) strerr_diefu2sys(111, "chdir to ", md);
  if (mailstore_default_folders() < 0) strerr_diefu2sys(111, "make the folders of ", md);
  if (fchdir(here) < 0) strerr_diefu1sys(111, "go back to the current directory");
  close(here);
}

/* Makes MAILROOT/rel (mail/DOMAIN/LOCAL) a Maildir with its default folders. */
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
  p.len = base;
  if (!stralloc_0(&p)) strerr_diefu1sys(111, "allocate");
  default_folders(p.s);
  /* run by root: the Maildir, its folders and its domain directory belong to the delivery uid */
  if (instance_own_tree(p.s, INSTANCE_MAIL) < 0)
    strerr_diefu2sys(111, "give to the owner of mail/: ", p.s);
  while (p.len && p.s[p.len - 1] != '/') p.len--;
  if (p.len) p.s[--p.len] = 0;
  if (instance_own(p.s, INSTANCE_MAIL) < 0)
    strerr_diefu2sys(111, "give to the owner of mail/: ", p.s);
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

/* 1 if key is root, abuse or mailer-daemon of its domain and t (tn) is postmaster@ the same
 * domain: one of the aliases mail-instance makes, which an account of that name replaces. */
static int role_alias(char const *t, size_t tn)
{
  static char const *const roles[3] = {"root", "abuse", "mailer-daemon"};
  size_t dlen = key.len - at - 1, i;
  int role = 0;
  for (i = 0; i < 3; i++)
    if (at == strlen(roles[i]) && !memcmp(key.s, roles[i], at)) role = 1;
  if (!role || tn != 11 + dlen || strncasecmp(t, "postmaster@", 11)) return 0;
  return !strncasecmp(t + 11, key.s + at + 1, dlen);
}

/* RFC 5321 4.5.1: every domain must accept postmaster. After key was added to control/users
 * (users is the text before the add):
 * - the first account of a domain with neither an alias nor an account postmaster@DOMAIN
 *   makes the alias postmaster@DOMAIN -> this account;
 * - an account postmaster@DOMAIN replaces an alias postmaster@DOMAIN that has one target
 *   (the one made above, or one like it), since aliases come before accounts; the same for
 *   root, abuse and mailer-daemon@DOMAIN and their aliases to postmaster@DOMAIN (mail-instance's);
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
    if (count == 1 && ((at == 10 && !memcmp(key.s, "postmaster", 10)) || role_alias(t, tn))) {
      if (!stralloc_catb(&line, t, tn) || !stralloc_0(&line)) strerr_diefu1sys(111, "allocate");
      if (!accounts_replace(ACCT_ALIASES, aliases.s, aliases.len, key.s, key.len, 0, 0, &out))
        strerr_diefu1sys(111, "allocate");
      if (accounts_save_try(ACCT_ALIASES, out.s, out.len))
        strerr_warni5x("alias ", key.s, " -> ", line.s,
                       " removed: the new account receives the postmaster's mail");
      else
        strerr_warnw3x("the alias ", key.s,
                       " still takes this account's mail (aliases come first)");
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

/* The aliases whose targets name the account key (exactly, or as key's user+tag): their keys
 * in names ("a, b"), and, in out, the aliases text with key taken out of them (an alias left
 * without a target goes; its key is added to gone, NUL-separated). Returns how many. */
struct refs_s {
  char const *k; /* the address looked for (folded) */
  size_t kn;
  stralloc *names, *out, *gone;
  stralloc f, b, line;
  unsigned long n;
};

static int ref_line(char const *s, size_t n, unsigned long lineno, void *data)
{
  struct refs_s *x = data;
  acct_rec r;
  char const *why, *t;
  size_t pos = 0, tn, kept = 0;
  int hit = 0;
  (void)lineno;
  if (!accounts_parse(ACCT_ALIASES, s, n, &r, &why)) return 1;
  x->line.len = 0;
  if (!addr_fold(r.key, r.keylen, &x->f) || !stralloc_catb(&x->line, x->f.s, x->f.len) ||
      !stralloc_cats(&x->line, ": "))
    return -1;
  while (accounts_next_target(r.targets, r.targetslen, &pos, &t, &tn)) {
    if (!accounts_fold_target(t, tn, &x->f, &x->b)) return -1;
    if ((x->f.len == x->kn && !memcmp(x->f.s, x->k, x->kn)) ||
        (x->b.len == x->kn && !memcmp(x->b.s, x->k, x->kn))) {
      hit = 1;
      continue;
    }
    if ((kept++ && !stralloc_cats(&x->line, ", ")) || !stralloc_catb(&x->line, t, tn)) return -1;
  }
  if (!hit) return 1;
  x->n++;
  if (!addr_fold(r.key, r.keylen, &x->f)) return -1;
  if ((x->names->len && !stralloc_cats(x->names, ", ")) ||
      !stralloc_catb(x->names, x->f.s, x->f.len))
    return -1;
  {
    stralloc tmp = STRALLOC_ZERO;
    if (!accounts_replace(ACCT_ALIASES, x->out->s, x->out->len, x->f.s, x->f.len,
                          kept ? x->line.s : 0, kept ? x->line.len : 0, &tmp))
      return -1;
    stralloc_free(x->out);
    *x->out = tmp;
  }
  if (!kept && (!stralloc_catb(x->gone, x->f.s, x->f.len) || !stralloc_0(x->gone))) return -1;
  return 1;
}

/* The Maildir of a deleted account (path, absolute) is moved to DIR/.deleted/USER-DATE beside
 * it, or removed with --purge. */
static void retire_maildir(char const *path, int purge)
{
  stralloc to = STRALLOC_ZERO;
  struct stat st;
  char const *slash = strrchr(path, '/');
  char date[32];
  time_t now = time(0);
  struct tm tm;
  unsigned int n;
  if (lstat(path, &st) < 0) {
    if (errno != ENOENT) strerr_diefu2sys(111, "stat ", path);
    strerr_warnw2x("no Maildir to keep at ", path);
    return;
  }
  if (purge) {
    if (rm_rf(path) < 0) strerr_diefu2sys(111, "remove ", path);
    strerr_warni2x("removed the Maildir ", path);
    return;
  }
  if (!slash || !gmtime_r(&now, &tm) || !strftime(date, sizeof date, "%Y%m%dT%H%M%SZ", &tm))
    strerr_diefu2sys(111, "name the kept Maildir of ", path);
  if (!stralloc_catb(&to, path, (size_t)(slash - path)) || !stralloc_cats(&to, "/.deleted") ||
      !stralloc_0(&to))
    strerr_diefu1sys(111, "allocate");
  if (mkdir(to.s, 0700) < 0) {
    if (errno != EEXIST) strerr_diefu2sys(111, "mkdir ", to.s);
  } else if (instance_own(to.s, INSTANCE_MAIL) < 0) /* the delivery uid keeps owning it */
    strerr_diefu2sys(111, "give to the owner of mail/: ", to.s);
  to.len--;
  if (!stralloc_cats(&to, slash) || !stralloc_catb(&to, "-", 1) || !stralloc_cats(&to, date))
    strerr_diefu1sys(111, "allocate");
  for (n = 0;; n++) {
    size_t base = to.len;
    char fmt[UINT_FMT + 1];
    if (n) {
      fmt[0] = '.';
      fmt[1 + uint_fmt(fmt + 1, n)] = 0;
      if (!stralloc_cats(&to, fmt)) strerr_diefu1sys(111, "allocate");
    }
    if (!stralloc_0(&to)) strerr_diefu1sys(111, "allocate");
    if (access(to.s, F_OK) < 0 && errno == ENOENT) break;
    to.len = base;
    if (n > 1000) strerr_dief2x(111, "no free name to keep the Maildir under ", to.s);
  }
  if (rename(path, to.s) < 0) strerr_diefu4sys(111, "move ", path, " to ", to.s);
  strerr_warni4x("kept the Maildir as ", to.s, " (remove it when no longer needed; ",
                 "mail-user del --purge removes at once)");
  stralloc_free(&to);
}

static void do_del(char const *addr, int force, int purge)
{
  stralloc text = STRALLOC_ZERO, aliases = STRALLOC_ZERO, out = STRALLOC_ZERO,
           names = STRALLOC_ZERO, gone = STRALLOC_ZERO, md = STRALLOC_ZERO;
  struct refs_s x = {0, 0, &names, &out, &gone, STRALLOC_ZERO, STRALLOC_ZERO, STRALLOC_ZERO, 0};
  acct_rec r;
  int lock;
  size_t i;
  check_address(addr);
  lock = accounts_lock();
  accounts_load(ACCT_USERS, &text);
  if (!accounts_find(ACCT_USERS, text.s, text.len, key.s, key.len, &r))
    strerr_dief2x(100, "no such account: ", key.s);
  if (r.maildir[0] != '/' && !stralloc_cats(&md, mailroot())) strerr_diefu1sys(111, "allocate");
  if ((r.maildir[0] != '/' && !stralloc_catb(&md, "/", 1)) ||
      !stralloc_catb(&md, r.maildir, r.maildirlen) || !stralloc_0(&md))
    strerr_diefu1sys(111, "allocate");
  accounts_load(ACCT_ALIASES, &aliases);
  if (!stralloc_copy(&out, &aliases)) strerr_diefu1sys(111, "allocate");
  x.k = key.s;
  x.kn = key.len;
  if (accounts_each(aliases.s, aliases.len, ref_line, &x) < 0) strerr_diefu1sys(111, "allocate");
  if (x.n) {
    if (!stralloc_0(&names)) strerr_diefu1sys(111, "allocate");
    if (!force)
      strerr_dief6x(100, key.s, " is a target of the alias(es) ", names.s,
                    ": point them elsewhere with mail-alias, or give --force to take ", key.s,
                    " out of them (an alias left empty is removed)");
    accounts_save(ACCT_ALIASES, out.s, out.len);
    strerr_warnw4x(key.s, " taken out of the alias(es) ", names.s, "");
    for (i = 0; i < gone.len; i += strlen(gone.s + i) + 1)
      strerr_warnw3x("alias ", gone.s + i, " removed: it had no other target");
    /* aliases that named a removed one now lead nowhere: say which */
    for (i = 0; i < gone.len; i += strlen(gone.s + i) + 1) {
      stralloc n2 = STRALLOC_ZERO, o2 = STRALLOC_ZERO, g2 = STRALLOC_ZERO;
      struct refs_s y = {gone.s + i, strlen(gone.s + i), &n2, &o2, &g2,
                         STRALLOC_ZERO, STRALLOC_ZERO, STRALLOC_ZERO, 0};
      if (!stralloc_copy(&o2, &out) || accounts_each(out.s, out.len, ref_line, &y) < 0)
        strerr_diefu1sys(111, "allocate");
      if (y.n && stralloc_0(&n2))
        strerr_warnw5x("the alias(es) ", n2.s, " still point to ", gone.s + i,
                       ", which no longer exists: mail to them bounces; fix with mail-alias");
      stralloc_free(&n2);
      stralloc_free(&o2);
      stralloc_free(&g2);
    }
  }
  accounts_replace_save(ACCT_USERS, text.s, text.len, key.s, key.len, 0, 0);
  if (!quotastate_remove(0, key.s, key.len))
    strerr_warnwu2sys("remove the quota record of ", key.s);
  retire_maildir(md.s, purge);
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
    char const *addr = 0;
    int i, force = 0, purge = 0;
    for (i = 2; i < argc; i++) {
      if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f")) force = 1;
      else if (!strcmp(argv[i], "--purge")) purge = 1;
      else if (argv[i][0] == '-' || addr) dieusage();
      else addr = argv[i];
    }
    if (!addr) dieusage();
    do_del(addr, force, purge);
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
