/* unit: lookup order, alias expansion and its bounds, cdb rebuilds (lib/lookup, lib/accounts,
 * lib/cdbmake).
 *
 * This is also the test that the tinycdb trap of doc/hacking.md stays closed: the databases
 * are written with tinycdb's cdb_make (lib/cdbmake.c) and read with tinycdb's cdb_init /
 * cdb_find (lib/lookup.c). If the link ever bound those names to skalibs' cdb_* functions
 * (other signatures), cdb_init would get an fd where skalibs expects a file name and every
 * lookup below would fail or crash. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include "accounts.h"
#include "cdbmake.h"
#include "lookup.h"
#include "authdb.h"
#include "check.h"
char const *PROG = "unit-lookup";

static void build(int kind, char const *text)
{
  unsigned long line = 0;
  char const *why = 0;
  char path[64];
  snprintf(path, sizeof path, "control/%s.cdb", accounts_name(kind));
  if (accounts_compile(kind, text, strlen(text), path, &line, &why) != 1) {
    fprintf(stderr, "compile %s failed at line %lu: %s\n", path, line, why ? why : "?");
    exit(2);
  }
}

static stralloc t = STRALLOC_ZERO;

/* true if s[0..n) holds x[0..xn) (memmem is not POSIX) */
static int contains(char const *s, size_t n, char const *x, size_t xn)
{
  size_t i;
  for (i = 0; i + xn <= n; i++)
    if (!memcmp(s + i, x, xn)) return 1;
  return 0;
}

static int R(char const *addr)
{
  t.len = 0;
  return lookup_resolve(addr, strlen(addr), &t);
}

/* true if the targets are exactly the NUL-separated list want (in order) */
static int targets(char const *want, size_t wn)
{
  return t.len == wn && !memcmp(t.s, want, wn);
}
#define T(lit) targets(lit, sizeof lit - 1)

/* true if target x is among the targets */
static int has(char const *x)
{
  size_t i = 0, n = strlen(x);
  while (i < t.len) {
    size_t m = strlen(t.s + i);
    if (m == n && !memcmp(t.s + i, x, n)) return 1;
    i += m + 1;
  }
  return 0;
}

static size_t count(void)
{
  size_t i, c = 0;
  for (i = 0; i < t.len; i++)
    if (!t.s[i]) c++;
  return c;
}

int main(void)
{
  char cwd[4096];
  account a = ACCOUNT_ZERO;
  stralloc big = STRALLOC_ZERO;
  int i;

  if (!getcwd(cwd, sizeof cwd)) return 2;
  setenv("MAILROOT", cwd, 1);
  mkdir("control", 0755);

  /* no databases at all: nothing is local, nothing breaks */
  CHECK(lookup_is_local_domain("example.test", 12) == 0);
  CHECK(R("demo@example.test") == LOOKUP_REMOTE && T("Rdemo@example.test\0"));

  build(ACCT_DOMAINS, "example.test\nOther.Test\n# comment\n\n");
  build(ACCT_USERS,
        "demo@example.test:$y$hash:mail/example.test/demo:0\n"
        "Bob@Example.Test:$6$x:/abs/bob:1000\n"
        "carol@example.test::mail/example.test/carol:0\n"
        "dave+special@example.test:!:mail/example.test/ds:0\n"
        "a@other.test:h:mail/other.test/a:0\n"
        "c@other.test:h:mail/other.test/c:0\n");
  build(ACCT_ALIASES,
        "postmaster@example.test: demo@example.test\n"
        "list@example.test: demo@example.test, Bob@example.test, ext@remote.test,"
        " demo+x@example.test\n"
        "fwd@example.test: Someone@Remote.Test\n"
        "copy@example.test: copy@example.test, ext@remote.test\n"
        "bob@example.test: bob@example.test, bob@remote.test\n"
        "tagged@example.test: demo@example.test\n"
        "tagged+x@example.test: ext@remote.test\n"
        "loop1@example.test: loop2@example.test\n"
        "loop2@example.test: loop1@example.test\n"
        "self@example.test: self@example.test\n"
        "gone@example.test: nobody@example.test, ext@remote.test\n"
        "@other.test: a@other.test\n"
        "c@other.test: c@other.test, nobody-here@other.test\n");

  /* domains: case-insensitive */
  CHECK(lookup_is_local_domain("EXAMPLE.test", 12) == 1);
  CHECK(lookup_is_local_domain("other.test", 10) == 1);
  CHECK(lookup_is_local_domain("remote.test", 11) == 0);
  CHECK(lookup_is_local_domain("example.tes", 11) == 0);

  /* the hashes are in passwd.cdb (0600), not in users.cdb (0644) */
  {
    struct stat st;
    stralloc f = STRALLOC_ZERO;
    CHECK(stat("control/passwd.cdb", &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat("control/users.cdb", &st) == 0 && (st.st_mode & 0777) == 0644);
    CHECK(openslurpclose(&f, "control/users.cdb") && f.len > 2048);
    CHECK(!contains(f.s, f.len, "$y$hash", 7) && !contains(f.s, f.len, "$6$x", 4));
    f.len = 0;
    CHECK(openslurpclose(&f, "control/passwd.cdb") && contains(f.s, f.len, "$y$hash", 7));
    stralloc_free(&f);
  }
  /* without the hash: same account, empty hash */
  CHECK(lookup_account_nohash("Demo@example.test", 17, &a) == 1 &&
        !strcmp(a.address.s, "demo@example.test") && a.hash.len == 1 && !a.hash.s[0] &&
        !strcmp(a.maildir.s + strlen(cwd), "/mail/example.test/demo"));

  /* accounts: exact, case-folded, +tag; hash, absolute maildir, quota */
  CHECK(lookup_account("demo@example.test", 17, &a) == 1);
  CHECK(!strcmp(a.address.s, "demo@example.test") && !strcmp(a.hash.s, "$y$hash"));
  CHECK(!strncmp(a.maildir.s, cwd, strlen(cwd)) &&
        !strcmp(a.maildir.s + strlen(cwd), "/mail/example.test/demo") && a.quota == 0);
  CHECK(lookup_account("DEMO+Tag@Example.TEST", 21, &a) == 1 &&
        !strcmp(a.address.s, "demo@example.test"));
  CHECK(lookup_account("bob@example.test", 16, &a) == 1 && !strcmp(a.maildir.s, "/abs/bob") &&
        a.quota == 1000 && !strcmp(a.hash.s, "$6$x"));
  CHECK(lookup_account("carol@example.test", 18, &a) == 1 && a.hash.len == 1);
  CHECK(lookup_account("nobody@example.test", 19, &a) == 0);
  CHECK(lookup_account("demo@other.test", 15, &a) == 0);
  CHECK(lookup_account("+x@example.test", 15, &a) == 0);
  /* an exact account whose name has a '+' wins over the tag rule */
  CHECK(lookup_account("dave+special@example.test", 25, &a) == 1 &&
        !strcmp(a.address.s, "dave+special@example.test"));

  /* 1. exact */
  CHECK(R("demo@example.test") == LOOKUP_FOUND && T("Ldemo@example.test\0"));
  CHECK(R("Demo@EXAMPLE.TEST") == LOOKUP_FOUND && T("Ldemo@example.test\0"));
  CHECK(R("postmaster@example.test") == LOOKUP_FOUND && T("Ldemo@example.test\0"));
  /* 2. +tag */
  CHECK(R("demo+news@example.test") == LOOKUP_FOUND && T("Ldemo@example.test\0"));
  CHECK(R("demo+a+b@example.test") == LOOKUP_FOUND && T("Ldemo@example.test\0"));
  CHECK(R("postmaster+x@example.test") == LOOKUP_FOUND && T("Ldemo@example.test\0"));
  /* exact beats +tag: tagged+x has its own alias */
  CHECK(R("tagged+x@example.test") == LOOKUP_FOUND && T("Rext@remote.test\0"));
  CHECK(R("tagged+y@example.test") == LOOKUP_FOUND && T("Ldemo@example.test\0"));
  /* 3. catch-all, after exact and +tag */
  CHECK(R("anything@other.test") == LOOKUP_FOUND && T("La@other.test\0"));
  CHECK(R("a+x@other.test") == LOOKUP_FOUND && T("La@other.test\0"));
  CHECK(R("A@Other.Test") == LOOKUP_FOUND && T("La@other.test\0"));
  /* unknown in a domain without catch-all */
  CHECK(R("nobody@example.test") == LOOKUP_UNKNOWN && t.len == 0);
  CHECK(R("nobody+x@example.test") == LOOKUP_UNKNOWN);
  CHECK(R("example.test") == LOOKUP_UNKNOWN);
  /* remote */
  CHECK(R("Someone@Remote.Test") == LOOKUP_REMOTE && T("RSomeone@Remote.Test\0"));

  /* lists, forwarders, dedupe (demo and demo+x are the same account) */
  CHECK(R("list@example.test") == LOOKUP_FOUND &&
        T("Ldemo@example.test\0Lbob@example.test\0Rbob@remote.test\0Rext@remote.test\0"));
  CHECK(R("fwd@example.test") == LOOKUP_FOUND && T("RSomeone@Remote.Test\0"));
  /* "keep a copy": an alias naming its own account delivers to the account */
  CHECK(R("bob@example.test") == LOOKUP_FOUND && T("Lbob@example.test\0Rbob@remote.test\0"));
  CHECK(R("c@other.test") == LOOKUP_FOUND && has("Lc@other.test") && has("La@other.test"));
  /* an alias naming itself without an account is a loop */
  CHECK(R("copy@example.test") == LOOKUP_ELOOP && t.len == 0);
  CHECK(R("self@example.test") == LOOKUP_ELOOP);
  CHECK(R("loop1@example.test") == LOOKUP_ELOOP);
  CHECK(R("loop2+x@example.test") == LOOKUP_ELOOP);
  /* an alias target that does not exist stays a local target (delivery will bounce it) */
  CHECK(R("gone@example.test") == LOOKUP_FOUND && has("Lnobody@example.test") &&
        has("Rext@remote.test"));

  /* appending: targets go after what the caller already has */
  t.len = 0;
  CHECK(stralloc_cats(&t, "Xkeep") && stralloc_0(&t));
  CHECK(lookup_resolve("fwd@example.test", 16, &t) == LOOKUP_FOUND &&
        T("Xkeep\0RSomeone@Remote.Test\0"));
  t.len = 0;
  CHECK(stralloc_cats(&t, "Xkeep") && stralloc_0(&t));
  CHECK(lookup_resolve("loop1@example.test", 18, &t) == LOOKUP_ELOOP && T("Xkeep\0"));

  /* depth: a chain of LOOKUP_DEPTH_MAX aliases resolves, one more does not */
  big.len = 0;
  for (i = 0; i < 12; i++) {
    char line[128];
    snprintf(line, sizeof line, "d%d@example.test: d%d@example.test\n", i, i + 1);
    CHECK(stralloc_cats(&big, line));
  }
  CHECK(stralloc_cats(&big, "d12@example.test: end@remote.test\n"));
  /* width: 2 x 600 distinct targets > LOOKUP_TARGETS_MAX */
  CHECK(stralloc_cats(&big, "wide@example.test: w1@example.test, w2@example.test\n"));
  for (i = 1; i <= 2; i++) {
    int k;
    char line[64];
    snprintf(line, sizeof line, "w%d@example.test: ", i);
    CHECK(stralloc_cats(&big, line));
    for (k = 0; k < 600; k++) {
      snprintf(line, sizeof line, "%su%d-%d@remote.test", k ? ", " : "", i, k);
      CHECK(stralloc_cats(&big, line));
    }
    CHECK(stralloc_cats(&big, "\n"));
  }
  CHECK(stralloc_0(&big));
  build(ACCT_ALIASES, big.s);
  CHECK(R("d12@example.test") == LOOKUP_FOUND && T("Rend@remote.test\0"));
  /* from d3: d3 .. d12 are 10 expansions; from d2, 11 */
  CHECK(R("d3@example.test") == LOOKUP_FOUND && T("Rend@remote.test\0"));
  CHECK(R("d2@example.test") == LOOKUP_ELOOP);
  CHECK(R("d1@example.test") == LOOKUP_ELOOP);
  CHECK(R("d0@example.test") == LOOKUP_ELOOP);
  CHECK(R("w1@example.test") == LOOKUP_FOUND && count() == 600);
  CHECK(R("wide@example.test") == LOOKUP_ELOOP && t.len == 0);

  /* a rebuilt database is seen without lookup_close (the file was replaced) */
  CHECK(R("new@example.test") == LOOKUP_UNKNOWN);
  build(ACCT_USERS, "new@example.test:h:mail/example.test/new:5\n");
  CHECK(R("new@example.test") == LOOKUP_FOUND && T("Lnew@example.test\0"));
  CHECK(R("demo@example.test") == LOOKUP_UNKNOWN);
  lookup_close();
  CHECK(lookup_account("new@example.test", 16, &a) == 1 && a.quota == 5);
  /* in batch mode a rebuild is seen from the next batch on, not within one */
  lookup_batch(1);
  lookup_batch_next();
  CHECK(R("new@example.test") == LOOKUP_FOUND);
  build(ACCT_USERS, "newer@example.test:h:mail/example.test/newer:0\n");
  CHECK(R("new@example.test") == LOOKUP_FOUND && R("newer@example.test") == LOOKUP_UNKNOWN);
  lookup_batch_next();
  CHECK(R("new@example.test") == LOOKUP_UNKNOWN && R("newer@example.test") == LOOKUP_FOUND);
  lookup_batch(0);
  build(ACCT_USERS, "new@example.test:h:mail/example.test/new:5\n");
  CHECK(R("new@example.test") == LOOKUP_FOUND && R("newer@example.test") == LOOKUP_UNKNOWN);

  /* passwd.cdb missing: accounts are still found, with no hash */
  CHECK(rename("control/passwd.cdb", "control/passwd.cdb.x") == 0);
  CHECK(lookup_account("new@example.test", 16, &a) == 1 && a.hash.len == 1 && a.quota == 5);
  CHECK(rename("control/passwd.cdb.x", "control/passwd.cdb") == 0);
  CHECK(lookup_account("new@example.test", 16, &a) == 1 && !strcmp(a.hash.s, "h"));
  /* passwd.cdb broken (a directory): an error for lookup_account only */
  CHECK(rename("control/passwd.cdb", "control/passwd.cdb.x") == 0 &&
        mkdir("control/passwd.cdb", 0700) == 0);
  CHECK(lookup_account("new@example.test", 16, &a) == -1);
  CHECK(lookup_account_nohash("new@example.test", 16, &a) == 1 && a.quota == 5);
  CHECK(rmdir("control/passwd.cdb") == 0 &&
        rename("control/passwd.cdb.x", "control/passwd.cdb") == 0);
  /* a users.cdb from before passwd.cdb (hash \0 maildir \0 quota \0) is still read; its
   * hash is used only while there is no passwd.cdb */
  {
    cdbw *w = cdbw_start("control/users.cdb");
    CHECK(w != 0);
    if (w) {
      CHECK(cdbw_add(w, "old@example.test", 16, "$6$old\0mail/example.test/old\0" "7\0", 31));
      CHECK(cdbw_finish(w) == 1);
    }
    CHECK(lookup_account("old@example.test", 16, &a) == 1 && a.hash.len == 1 && a.quota == 7 &&
          !strcmp(a.maildir.s + strlen(cwd), "/mail/example.test/old"));
    CHECK(rename("control/passwd.cdb", "control/passwd.cdb.x") == 0);
    CHECK(lookup_account("old@example.test", 16, &a) == 1 && !strcmp(a.hash.s, "$6$old"));
    CHECK(lookup_account_nohash("old@example.test", 16, &a) == 1 && a.hash.len == 1);
    CHECK(R("old@example.test") == LOOKUP_FOUND && T("Lold@example.test\0"));
    CHECK(rename("control/passwd.cdb.x", "control/passwd.cdb") == 0);
    build(ACCT_USERS, "new@example.test:h:mail/example.test/new:5\n");
  }

  /* junk: the compile fails naming the line, the old database stays */
  {
    unsigned long line = 0;
    char const *why = 0;
    char const *junk = "ok@example.test:h:mail/x:0\n\n# c\nthis is junk\n";
    struct stat st;
    CHECK(accounts_compile(ACCT_USERS, junk, strlen(junk), "control/users.cdb", &line, &why) == 0);
    CHECK(line == 4 && why != 0);
    CHECK(stat("control/users.cdb.tmp", &st) < 0 && errno == ENOENT);
    CHECK(stat("control/passwd.cdb.tmp", &st) < 0 && errno == ENOENT);
    CHECK(lookup_account("new@example.test", 16, &a) == 1);
    junk = "ok@example.test:h:mail/x:0\nOK@example.test:h:mail/y:0\n";
    CHECK(accounts_compile(ACCT_USERS, junk, strlen(junk), "control/users.cdb", &line, &why) == 0);
    CHECK(line == 2);
    junk = "ok@example.test:h:mail/x:12x\n";
    CHECK(accounts_compile(ACCT_USERS, junk, strlen(junk), "control/users.cdb", &line, &why) == 0);
    junk = "ok@example.test:h:mail/x\n";
    CHECK(accounts_compile(ACCT_USERS, junk, strlen(junk), "control/users.cdb", &line, &why) == 0);
    junk = "a@example.test: ;rm -rf /\n";
    CHECK(accounts_compile(ACCT_ALIASES, junk, strlen(junk), "control/aliases.cdb", &line, &why) ==
          0);
    junk = "a@example.test:\n";
    CHECK(accounts_compile(ACCT_ALIASES, junk, strlen(junk), "control/aliases.cdb", &line, &why) ==
          0);
    junk = "a@example.test: @example.test\n";
    CHECK(accounts_compile(ACCT_ALIASES, junk, strlen(junk), "control/aliases.cdb", &line, &why) ==
          0);
    junk = "example..test\n";
    CHECK(accounts_compile(ACCT_DOMAINS, junk, strlen(junk), "control/domains.cdb", &line, &why) ==
          0);
    CHECK(lookup_is_local_domain("other.test", 10) == 1);
    CHECK(R("d12@example.test") == LOOKUP_FOUND);
  }

  /* cdbw directly: abort leaves the old file */
  {
    cdbw *w = cdbw_start("control/domains.cdb");
    CHECK(w != 0);
    if (w) {
      CHECK(cdbw_add(w, "zzz.test", 8, "", 0) == 1);
      CHECK(cdbw_exists(w, "zzz.test", 8) == 1 && cdbw_exists(w, "yyy.test", 8) == 0);
      cdbw_abort(w);
    }
    CHECK(lookup_is_local_domain("zzz.test", 8) == 0 &&
          lookup_is_local_domain("other.test", 10) == 1);
    w = cdbw_start("control/domains.cdb");
    CHECK(w != 0);
    if (w) {
      CHECK(cdbw_add(w, "zzz.test", 8, "", 0) == 1);
      CHECK(cdbw_finish(w) == 1);
    }
    CHECK(lookup_is_local_domain("ZZZ.test", 8) == 1 &&
          lookup_is_local_domain("other.test", 10) == 0);
  }

  account_free(&a);
  lookup_close();
  return CHECK_DONE();
}
