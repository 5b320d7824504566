/* mail-alias: administer aliases, forwarders, lists and catch-alls (doc/mail-alias.8).
 * mail-alias add ADDRESS TARGET... | del ADDRESS [TARGET...] | list | rebuild
 * ADDRESS is local (its domain in control/domains); "@domain" is the domain's catch-all.
 * Run as "newaliases" (a link of that name), it is "mail-alias rebuild". */
#include <string.h>
#include <unistd.h>

#include <skalibs/buffer.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>

#include "accounts.h"
#include "addr.h"
#include "lookup.h"

char const *PROG = "mail-alias";
#define USAGE "mail-alias add ADDRESS TARGET... | del ADDRESS [TARGET...] | list | rebuild"
#define dieusage() strerr_dieusage(100, USAGE)

static stralloc key = STRALLOC_ZERO; /* folded ADDRESS, NUL-terminated (len excludes it) */

static void check_key(char const *a)
{
  size_t n = strlen(a), at;
  stralloc text = STRALLOC_ZERO;
  if (a[0] == '@') {
    stralloc t = STRALLOC_ZERO;
    if (!stralloc_catb(&t, "x", 1) || !stralloc_catb(&t, a, n)) strerr_diefu1sys(111, "allocate");
    if (n < 2 || addr_check_mailbox(t.s, t.len, ADDR_UTF8) != ADDR_OK)
      strerr_dief2x(100, "invalid catch-all (want @domain): ", a);
    stralloc_free(&t);
  } else {
    int r = addr_check_mailbox(a, n, ADDR_UTF8);
    if (r != ADDR_OK) strerr_dief4x(100, "invalid address ", a, ": ", addr_strerror(r));
  }
  if (!addr_fold(a, n, &key) || !stralloc_0(&key)) strerr_diefu1sys(111, "allocate");
  key.len--;
  at = a[0] == '@' ? 0 : addr_at(key.s, key.len);
  accounts_load(ACCT_DOMAINS, &text);
  if (!accounts_find(ACCT_DOMAINS, text.s, text.len, key.s + at + 1, key.len - at - 1, 0))
    strerr_dief3x(100, "not a local domain: ", key.s + at + 1, " (add it with mail-domain add)");
  stralloc_free(&text);
}

static void check_target(char const *t)
{
  int r;
  if (t[0] == '@') strerr_dief2x(100, "a target must be an address, not a catch-all: ", t);
  r = addr_check_mailbox(t, strlen(t), ADDR_UTF8);
  if (r != ADDR_OK) strerr_dief4x(100, "invalid target ", t, ": ", addr_strerror(r));
}

/* 1 if target t (tn) is in the list (case-insensitively). */
static int has_target(char const *list, size_t len, char const *t, size_t tn)
{
  size_t pos = 0;
  char const *x;
  size_t xn;
  while (accounts_next_target(list, len, &pos, &x, &xn)) {
    size_t i;
    if (xn != tn) continue;
    for (i = 0; i < tn; i++) {
      char a = x[i], b = t[i];
      if (a >= 'A' && a <= 'Z') a += 32;
      if (b >= 'A' && b <= 'Z') b += 32;
      if (a != b) break;
    }
    if (i == tn) return 1;
  }
  return 0;
}

static void add_target(stralloc *line, size_t start, char const *t, size_t tn)
{
  if (line->len > start && !stralloc_cats(line, ", ")) strerr_diefu1sys(111, "allocate");
  if (!stralloc_catb(line, t, tn)) strerr_diefu1sys(111, "allocate");
}

/* Dies 100, printing the way, if the aliases text al would make key loop (or expand too deep
 * or too wide) when it is looked up: mail to it would be refused "550 5.4.6 alias loop". */
static void refuse_loops(stralloc const *al)
{
  stralloc users = STRALLOC_ZERO, domains = STRALLOC_ZERO, path = STRALLOC_ZERO;
  acct_texts t;
  int r;
  accounts_load(ACCT_USERS, &users);
  accounts_load(ACCT_DOMAINS, &domains);
  t.aliases = al->s;
  t.alen = al->len;
  t.users = users.s;
  t.ulen = users.len;
  t.domains = domains.s;
  t.dlen = domains.len;
  r = accounts_alias_check(&t, key.s, key.len, &path);
  if (r < 0) strerr_diefu1sys(111, "allocate");
  if (r == ACCT_GRAPH_LOOP) strerr_dief2x(100, "refused, this makes an alias loop: ", path.s);
  if (r == ACCT_GRAPH_DEEP)
    strerr_dief2x(100, "refused, aliases would nest more than 10 deep: ", path.s);
  if (r == ACCT_GRAPH_WIDE)
    strerr_dief2x(100, "refused, the expansion would pass 1000 targets at: ", path.s);
  stralloc_free(&users);
  stralloc_free(&domains);
  stralloc_free(&path);
}

static int print_line(char const *s, size_t n, unsigned long line, void *data)
{
  acct_rec r;
  char const *why;
  stralloc *k = data;
  size_t pos = 0, count = 0;
  char const *t;
  size_t tn;
  (void)line;
  if (!accounts_parse(ACCT_ALIASES, s, n, &r, &why)) return 1;
  if (!addr_fold(r.key, r.keylen, k)) return -1;
  if (buffer_put(buffer_1, k->s, k->len) < 0 || buffer_put(buffer_1, ":", 1) < 0) return -1;
  while (accounts_next_target(r.targets, r.targetslen, &pos, &t, &tn)) {
    if (buffer_put(buffer_1, count ? ", " : " ", count ? 2 : 1) < 0) return -1;
    count++;
    if (buffer_put(buffer_1, t, tn) < 0) return -1;
  }
  if (buffer_put(buffer_1, "\n", 1) < 0) return -1;
  return 1;
}

int main(int argc, char const *const *argv)
{
  stralloc text = STRALLOC_ZERO, line = STRALLOC_ZERO;
  char const *cmd;
  acct_rec r;
  int lock, i, found;
  {
    /* called as newaliases (the name other software runs): rebuild aliases.cdb */
    char const *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (!strcmp(base, "newaliases")) {
      if (argc != 1) strerr_dieusage(100, "newaliases");
      accounts_rebuild(ACCT_ALIASES);
      return 0;
    }
  }
  if (argc < 2) dieusage();
  cmd = argv[1];
  if (!strcmp(cmd, "list")) {
    if (argc != 2) dieusage();
    accounts_list(ACCT_ALIASES, print_line, &line);
    return 0;
  }
  if (!strcmp(cmd, "rebuild")) {
    if (argc != 2) dieusage();
    accounts_rebuild(ACCT_ALIASES);
    return 0;
  }
  if (!strcmp(cmd, "add")) {
    size_t start, count = 0;
    if (argc < 4) dieusage();
    for (i = 3; i < argc; i++) check_target(argv[i]);
    lock = accounts_lock();
    check_key(argv[2]);
    accounts_load(ACCT_ALIASES, &text);
    found = accounts_find(ACCT_ALIASES, text.s, text.len, key.s, key.len, &r);
    if (!stralloc_catb(&line, key.s, key.len) || !stralloc_cats(&line, ": "))
      strerr_diefu1sys(111, "allocate");
    start = line.len;
    if (found) {
      size_t pos = 0;
      char const *t;
      size_t tn;
      while (accounts_next_target(r.targets, r.targetslen, &pos, &t, &tn)) {
        if (has_target(line.s + start, line.len - start, t, tn)) continue;
        add_target(&line, start, t, tn);
        count++;
      }
    }
    for (i = 3; i < argc; i++) {
      size_t tn = strlen(argv[i]);
      if (has_target(line.s + start, line.len - start, argv[i], tn)) continue;
      add_target(&line, start, argv[i], tn);
      count++;
    }
    if (count > LOOKUP_TARGETS_MAX) strerr_dief1x(100, "too many targets for one alias");
    {
      stralloc out = STRALLOC_ZERO;
      if (!accounts_replace(ACCT_ALIASES, text.s, text.len, key.s, key.len, line.s, line.len,
                            &out))
        strerr_diefu1sys(111, "allocate");
      refuse_loops(&out);
      accounts_save(ACCT_ALIASES, out.s, out.len);
      stralloc_free(&out);
    }
    close(lock);
    return 0;
  }
  if (!strcmp(cmd, "del")) {
    if (argc < 3) dieusage();
    lock = accounts_lock();
    check_key(argv[2]);
    accounts_load(ACCT_ALIASES, &text);
    if (!accounts_find(ACCT_ALIASES, text.s, text.len, key.s, key.len, &r))
      strerr_dief2x(100, "no such alias: ", key.s);
    if (argc == 3) {
      accounts_replace_save(ACCT_ALIASES, text.s, text.len, key.s, key.len, 0, 0);
    } else {
      size_t start, pos = 0, count = 0;
      char const *t;
      size_t tn;
      for (i = 3; i < argc; i++)
        if (!has_target(r.targets, r.targetslen, argv[i], strlen(argv[i])))
          strerr_dief4x(100, "no target ", argv[i], " in alias ", key.s);
      if (!stralloc_catb(&line, key.s, key.len) || !stralloc_cats(&line, ": "))
        strerr_diefu1sys(111, "allocate");
      start = line.len;
      while (accounts_next_target(r.targets, r.targetslen, &pos, &t, &tn)) {
        int drop = 0;
        for (i = 3; i < argc; i++)
          if (has_target(argv[i], strlen(argv[i]), t, tn)) drop = 1;
        if (drop) continue;
        add_target(&line, start, t, tn);
        count++;
      }
      accounts_replace_save(ACCT_ALIASES, text.s, text.len, key.s, key.len, count ? line.s : 0,
                            count ? line.len : 0);
    }
    close(lock);
    return 0;
  }
  dieusage();
}
