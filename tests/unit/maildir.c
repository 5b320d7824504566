/* unit: maildir (names, tmp -> new, quota, listing, flags) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <skalibs/stralloc.h>
#include "maildir.h"
#include "check.h"
char const *PROG = "unit-maildir";

static void put(char const *path, char const *text)
{
  FILE *f = fopen(path, "w");
  CHECK(f != 0);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

static size_t slurp(char const *path, char *buf, size_t max)
{
  FILE *f = fopen(path, "r");
  size_t n;
  if (!f) return (size_t)-1;
  n = fread(buf, 1, max - 1, f);
  buf[n] = 0;
  fclose(f);
  return n;
}

static int count(char const *dir, char const *sub)
{
  stralloc sa = STRALLOC_ZERO;
  int n = maildir_list(dir, sub, &sa);
  stralloc_free(&sa);
  return n;
}

static int cmp(void const *a, void const *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* all NUL-terminated names in sa are distinct and well formed */
static int distinct(stralloc *sa, size_t n)
{
  char **v = malloc(n * sizeof *v);
  size_t i, k = 0, ok = 1;
  if (!v) return 0;
  for (i = 0; i < sa->len && k < n; i += strlen(sa->s + i) + 1) v[k++] = sa->s + i;
  if (k != n) ok = 0;
  qsort(v, k, sizeof *v, &cmp);
  for (i = 1; i < k; i++)
    if (!strcmp(v[i - 1], v[i])) ok = 0;
  for (i = 0; i < k; i++)
    if (strchr(v[i], '/') || strchr(v[i], ':') || !strstr(v[i], ".M") || !strchr(v[i], 'P') ||
        !strchr(v[i], 'Q'))
      ok = 0;
  free(v);
  return (int)ok;
}

static void names(void)
{
  char s[MAILDIR_HOST_MAX];
  char longhost[600];
  stralloc sa = STRALLOC_ZERO;
  size_t n, i;
  int p[2], k;
  n = maildir_hostfmt(s, "a/b:c.example", 13);
  CHECK(n == 19 && !memcmp(s, "a\\057b\\072c.example", 19));
  memset(longhost, '/', sizeof longhost);
  n = maildir_hostfmt(s, longhost, sizeof longhost);
  CHECK(n <= MAILDIR_HOST_MAX && n % 4 == 0); /* never cut inside an escape */

  /* one process, fast successive calls */
  for (i = 0; i < 20000; i++) CHECK(maildir_uniqname(&sa) == 1);
  CHECK(distinct(&sa, 20000));

  /* several processes at once */
  sa.len = 0;
  CHECK(pipe(p) == 0);
  for (k = 0; k < 4; k++) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (!pid) {
      stralloc mine = STRALLOC_ZERO;
      close(p[0]);
      for (i = 0; i < 2000; i++) { /* one small write per name: atomic in a pipe */
        mine.len = 0;
        if (maildir_uniqname(&mine) != 1) _exit(1);
        if (write(p[1], mine.s, mine.len) != (ssize_t)mine.len) _exit(1);
      }
      _exit(0);
    }
  }
  close(p[1]);
  for (;;) {
    char buf[65536];
    ssize_t r = read(p[0], buf, sizeof buf);
    if (r <= 0) break;
    CHECK(stralloc_catb(&sa, buf, (size_t)r));
  }
  close(p[0]);
  for (k = 0; k < 4; k++) {
    int st;
    CHECK(wait(&st) > 0 && WIFEXITED(st) && !WEXITSTATUS(st));
  }
  CHECK(distinct(&sa, 8000));
  stralloc_free(&sa);
}

static void delivery(void)
{
  maildir_tmp t = MAILDIR_TMP_ZERO;
  stralloc nn = STRALLOC_ZERO;
  char buf[256];
  CHECK(maildir_make("md", 0700) == 1);
  CHECK(maildir_make("md", 0700) == 1); /* again: fine */

  /* a normal delivery */
  CHECK(maildir_tmp_open(&t, "md") == 1);
  CHECK(write(t.fd, "hello\n", 6) == 6);
  CHECK(maildir_tmp_commit(&t, 6, 1, &nn) == 1);
  CHECK(t.fd == -1 && t.dirfd == -1);
  CHECK(count("md", "tmp") == 0 && count("md", "new") == 1);
  CHECK(nn.len > 5 && !strcmp(nn.s + nn.len - 5, ",S=6"));
  {
    char p[512];
    uint64_t sz = 0;
    snprintf(p, sizeof p, "md/new/%s", nn.s);
    CHECK(slurp(p, buf, sizeof buf) == 6 && !strcmp(buf, "hello\n"));
    CHECK(maildir_namesize(nn.s, nn.len - 1, &sz) == 1 && sz == 6);
  }

  /* abort leaves nothing */
  CHECK(maildir_tmp_open(&t, "md") == 1);
  CHECK(write(t.fd, "partial", 7) == 7);
  maildir_tmp_abort(&t);
  CHECK(count("md", "tmp") == 0 && count("md", "new") == 1);

  /* a symlink planted at the name in tmp/ is never written through */
  put("victim", "original\n");
  CHECK(symlink("../../victim", "md/tmp/planted") == 0);
  errno = 0;
  CHECK(maildir_tmp_open_name(&t, "md", "planted") == -1 && errno == EEXIST);
  CHECK(slurp("victim", buf, sizeof buf) == 9 && !strcmp(buf, "original\n"));
  /* a dangling one does not create its target */
  CHECK(symlink("../../created", "md/tmp/dangling") == 0);
  CHECK(maildir_tmp_open_name(&t, "md", "dangling") == -1 && errno == EEXIST);
  CHECK(access("created", F_OK) == -1);
  /* nor an existing file */
  put("md/tmp/exists", "x");
  CHECK(maildir_tmp_open_name(&t, "md", "exists") == -1 && errno == EEXIST);
  CHECK(maildir_tmp_open_name(&t, "md", "a/b") == -1 && errno == EINVAL);
  unlink("md/tmp/planted");
  unlink("md/tmp/dangling");
  unlink("md/tmp/exists");
  CHECK(t.fd == -1 && t.dirfd == -1 && t.tmpfd == -1 && t.newfd == -1);

  /* tmp/ itself a symlink: refused */
  CHECK(maildir_make("md2", 0700) == 1);
  CHECK(mkdir("elsewhere", 0700) == 0);
  CHECK(rmdir("md2/tmp") == 0 && symlink("../elsewhere", "md2/tmp") == 0);
  errno = 0;
  CHECK(maildir_tmp_open(&t, "md2") == -1 && errno == ELOOP);
  CHECK(count(".", "elsewhere") == 0);
  /* a missing Maildir */
  CHECK(maildir_tmp_open(&t, "nonexistent") == -1 && errno == ENOENT);
  /* a name already in new/ is never replaced: commit picks a fresh one */
  CHECK(maildir_tmp_open_name(&t, "md", "fixed") == 1);
  put("md/new/fixed", "older\n");
  CHECK(write(t.fd, "newer\n", 6) == 6);
  CHECK(maildir_tmp_commit(&t, 6, 0, &nn) == 1);
  CHECK(strcmp(nn.s, "fixed") != 0);
  CHECK(slurp("md/new/fixed", buf, sizeof buf) == 6 && !strcmp(buf, "older\n"));
  CHECK(count("md", "new") == 3 && count("md", "tmp") == 0);
  /* stale tmp files (and links) go, fresh ones and directories stay */
  put("md/tmp/stale", "x");
  put("md/tmp/fresh", "x");
  CHECK(symlink("../../victim", "md/tmp/stalelink") == 0);
  CHECK(mkdir("md/tmp/subdir", 0700) == 0);
  {
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = time(0) - MAILDIR_TMP_MAXAGE - 60;
    ts[0].tv_nsec = ts[1].tv_nsec = 0;
    CHECK(utimensat(AT_FDCWD, "md/tmp/stale", ts, 0) == 0);
    CHECK(utimensat(AT_FDCWD, "md/tmp/stalelink", ts, AT_SYMLINK_NOFOLLOW) == 0);
    CHECK(utimensat(AT_FDCWD, "md/tmp/subdir", ts, 0) == 0);
  }
  CHECK(maildir_tmp_clean("md", MAILDIR_TMP_MAXAGE) == 2);
  CHECK(access("md/tmp/fresh", F_OK) == 0 && access("md/tmp/subdir", F_OK) == 0);
  CHECK(access("md/tmp/stale", F_OK) == -1);
  CHECK(slurp("victim", buf, sizeof buf) == 9);
  CHECK(maildir_tmp_clean("md2", 0) == -1 && errno == ELOOP);
  unlink("md/tmp/fresh");
  rmdir("md/tmp/subdir");
  stralloc_free(&nn);
  stralloc_free(&t.name);
}

static void quota(void)
{
  uint64_t s, c;
  maildir_quota q;
  char buf[512];
  CHECK(maildir_quota_parse("1000S", 5, &s, &c) == 1 && s == 1000 && c == 0);
  CHECK(maildir_quota_parse("10C", 3, &s, &c) == 1 && s == 0 && c == 10);
  CHECK(maildir_quota_parse("1000S,10C", 9, &s, &c) == 1 && s == 1000 && c == 10);
  CHECK(maildir_quota_parse("10C,1000S", 9, &s, &c) == 1 && s == 1000 && c == 10);
  CHECK(maildir_quota_parse("5000", 4, &s, &c) == 1 && s == 5000 && c == 0);
  CHECK(maildir_quota_parse("", 0, &s, &c) == 0);
  CHECK(maildir_quota_parse("S", 1, &s, &c) == 0);
  CHECK(maildir_quota_parse("10X", 3, &s, &c) == 0);
  CHECK(maildir_quota_parse("10S,", 4, &s, &c) == 0);
  CHECK(maildir_quota_parse("10S,20S", 7, &s, &c) == 0);
  CHECK(maildir_quota_parse("10S 20C", 7, &s, &c) == 0);
  CHECK(maildir_quota_parse("99999999999999999999S", 21, &s, &c) == 0);
  {
    stralloc sa = STRALLOC_ZERO;
    CHECK(maildir_quota_fmt(&sa, 1000, 10) && sa.len == 9 && !memcmp(sa.s, "1000S,10C", 9));
    sa.len = 0;
    CHECK(maildir_quota_fmt(&sa, 0, 7) && sa.len == 2 && !memcmp(sa.s, "7C", 2));
    stralloc_free(&sa);
  }
  {
    char const *f = "1000S,10C\n100 1\n  250 2\n-50 -1\n";
    CHECK(maildir_quota_parsefile(f, strlen(f), &q) == 1 && !q.stale);
    CHECK(q.maxsize == 1000 && q.maxcount == 10 && q.cursize == 300 && q.curcount == 2);
    f = "1000S\n100 1\njunk\n5 1\n";
    CHECK(maildir_quota_parsefile(f, strlen(f), &q) == 1 && q.stale && q.cursize == 105);
    f = "1000S\n100 1\n5 1"; /* unterminated */
    CHECK(maildir_quota_parsefile(f, strlen(f), &q) == 1 && q.stale && q.cursize == 100);
    f = "1000S";
    CHECK(maildir_quota_parsefile(f, strlen(f), &q) == 0);
    f = "lots\n1 1\n";
    CHECK(maildir_quota_parsefile(f, strlen(f), &q) == 0);
  }
  q.maxsize = 1000;
  q.maxcount = 3;
  q.cursize = 900;
  q.curcount = 2;
  CHECK(maildir_quota_fits(&q, 100, 1) == 1);
  CHECK(maildir_quota_fits(&q, 101, 1) == 0);
  CHECK(maildir_quota_fits(&q, 10, 2) == 0);
  q.maxsize = 0;
  CHECK(maildir_quota_fits(&q, 1000000, 1) == 1);

  /* recompute: new/ and cur/ of the Maildir and of its folders, S= or stat */
  CHECK(maildir_make("mq", 0700) == 1);
  CHECK(maildir_make("mq/.Sent", 0700) == 1);
  put("mq/new/1.M1P1Q1.h,S=100", "ignored: the name says 100");
  put("mq/cur/2.M1P1Q1.h:2,S", "12345");
  put("mq/.Sent/cur/3.M1P1Q1.h,S=40:2,S", "x");
  put("mq/tmp/4.M1P1Q1.h,S=999", "not counted");
  put("mq/new/.hidden", "not counted");
  CHECK(maildir_quota_read("mq", &q) == 0);
  CHECK(maildir_quota_recalc("mq", 1000, 0, &q) == 1);
  CHECK(q.cursize == 145 && q.curcount == 3 && q.maxsize == 1000);
  CHECK(slurp("mq/maildirsize", buf, sizeof buf) == 12 && !strcmp(buf, "1000S\n145 3\n"));
  CHECK(count("mq", "tmp") == 1);
  CHECK(maildir_quota_add("mq", 55, 1) == 1);
  CHECK(maildir_quota_add("mq", -100, -1) == 1);
  CHECK(maildir_quota_read("mq", &q) == 1);
  CHECK(q.maxsize == 1000 && q.cursize == 100 && q.curcount == 3 && !q.stale);
  CHECK(q.filesize == strlen("1000S\n145 3\n55 1\n-100 -1\n"));
  CHECK(maildir_quota_add("md2", 1, 1) == 0); /* no maildirsize: not created */
  CHECK(access("md2/maildirsize", F_OK) == -1);
  /* never read through a symlink */
  CHECK(rename("mq/maildirsize", "mq/real") == 0 && symlink("real", "mq/maildirsize") == 0);
  CHECK(maildir_quota_read("mq", &q) == -1 && errno == ELOOP);
  CHECK(maildir_quota_add("mq", 1, 1) == -1);
}

static void listing(void)
{
  stralloc sa = STRALLOC_ZERO, out = STRALLOC_ZERO;
  char const *f;
  size_t fl;
  uint64_t sz;
  char const *n1 = "1.M2P3Q4.host,S=42:2,RS";
  CHECK(maildir_make("ml", 0700) == 1);
  put("ml/cur/a:2,S", "");
  put("ml/cur/b", "");
  put("ml/cur/.dot", "");
  CHECK(maildir_list("ml", "cur", &sa) == 2 && sa.len == 8);
  CHECK((!memcmp(sa.s, "a:2,S\0b\0", 8)) || (!memcmp(sa.s, "b\0a:2,S\0", 8)));
  CHECK(maildir_list("ml", "nope", &sa) == -1 && sa.len == 8);
  CHECK(maildir_uniqlen(n1, strlen(n1)) == 18);
  CHECK(maildir_flags(n1, strlen(n1), &f, &fl) == 1 && fl == 2 && !memcmp(f, "RS", 2));
  CHECK(maildir_flags("x", 1, &f, &fl) == 0);
  CHECK(maildir_flags("x:1,abc", 7, &f, &fl) == 0);
  CHECK(maildir_flags("x:2,", 4, &f, &fl) == 1 && fl == 0);
  CHECK(maildir_hasflag(n1, strlen(n1), 'S') == 1);
  CHECK(maildir_hasflag(n1, strlen(n1), 'T') == 0);
  CHECK(maildir_hasflag("1.h", 3, 'S') == 0);
  CHECK(maildir_setflags(&out, n1, strlen(n1), "TSaS!F", 6) == 1);
  CHECK(!strcmp(out.s, "1.M2P3Q4.host,S=42:2,FSTa"));
  out.len = 0;
  CHECK(maildir_setflags(&out, "new.name", 8, "", 0) == 1 && !strcmp(out.s, "new.name:2,"));
  CHECK(maildir_namesize(n1, strlen(n1), &sz) == 1 && sz == 42);
  CHECK(maildir_namesize("1.h,S=7,W=9", 11, &sz) == 1 && sz == 7);
  CHECK(maildir_namesize("1.h,S=", 6, &sz) == 0);
  CHECK(maildir_namesize("1.h,S=1x", 8, &sz) == 0);
  CHECK(maildir_namesize("1.h:2,S=5", 9, &sz) == 0); /* in the info, not the name */
  stralloc_free(&sa);
  stralloc_free(&out);
}

static int scan(char const *msg, int bytewise, size_t *hlen)
{
  static maildir_loop l;
  size_t n = strlen(msg), i, h = 0;
  maildir_loop_init(&l, "bob@example.test", 16);
  if (bytewise) {
    for (i = 0; i < n && !l.done && !l.verdict; i++) h += maildir_loop_feed(&l, msg + i, 1);
  } else
    h = maildir_loop_feed(&l, msg, n);
  if (!l.done && !l.verdict) maildir_loop_end(&l);
  if (hlen) *hlen = h;
  return l.verdict;
}

static void loops(void)
{
  static char big[200 * 40];
  size_t h, i;
  int k;
  for (k = 0; k < 2; k++) {
    CHECK(scan("Subject: x\nTo: y\n\nDelivered-To: bob@example.test\n", k, &h) == 0 && h == 18);
    CHECK(scan("Delivered-To: bob@example.test\n\nbody\n", k, 0) == MAILDIR_LOOP_DELIVERED);
    CHECK(scan("X: 1\nDELIVERED-TO : <Bob@Example.Test>  \n\n", k, 0) == MAILDIR_LOOP_DELIVERED);
    CHECK(scan("Delivered-To:\n\tbob@example.test\nX: y\n\n", k, 0) == MAILDIR_LOOP_DELIVERED);
    CHECK(scan("Delivered-To: bob@example.test", k, 0) == MAILDIR_LOOP_DELIVERED); /* no EOL */
    CHECK(scan("Delivered-To: bob@example.test.org\n\n", k, 0) == 0);
    CHECK(scan("Delivered-To: alice@example.test\n\n", k, 0) == 0);
    CHECK(scan("X-Delivered-To: bob@example.test\n\n", k, 0) == 0);
    CHECK(scan("\nDelivered-To: bob@example.test\n", k, &h) == 0 && h == 1);
  }
  big[0] = 0;
  for (i = 0; i < 100; i++) strcat(big, "Received: from a by b\n");
  CHECK(scan(big, 0, &h) == 0 && h == strlen(big));
  strcat(big, "Received: (101)\n\n");
  CHECK(scan(big, 0, 0) == MAILDIR_LOOP_HOPS);
  CHECK(scan(big, 1, 0) == MAILDIR_LOOP_HOPS);
  /* a field too long to be an address is never a match, and never overruns */
  memcpy(big, "Delivered-To: ", 14);
  memset(big + 14, ' ', 3000);
  strcpy(big + 3014, "bob@example.test\n\n");
  CHECK(scan(big, 0, 0) == 0);
}

static int open_fds(void)
{
  return count("/proc/self", "fd");
}

static void commit_one(char const *dir)
{
  maildir_tmp t = MAILDIR_TMP_ZERO;
  stralloc nn = STRALLOC_ZERO;
  CHECK(maildir_tmp_open(&t, dir) == 1);
  CHECK(write(t.fd, "held\n", 5) == 5);
  CHECK(maildir_tmp_commit(&t, 5, 1, &nn) == 1);
  stralloc_free(&nn);
}

/* maildir_hold_dirs (last, it stays on): the kept descriptors are used again only while the
 * Maildir is unchanged, and never once new/ was made anew */
static void held(void)
{
  struct timespec ts = {2, 500000000};
  int before;
  CHECK(maildir_make("mh", 0700) == 1);
  CHECK(maildir_make("mh2", 0700) == 1);
  maildir_hold_dirs();
  before = open_fds();
  commit_one("mh"); /* a Maildir changed a moment ago is not held */
  CHECK(open_fds() == before);
  nanosleep(&ts, 0); /* time passing, not a wait for an event: older than the 2 s rule */
  commit_one("mh");
  CHECK(open_fds() == before + 3); /* held now */
  commit_one("mh");
  CHECK(open_fds() == before + 3 && count("mh", "new") == 3);
  /* new/ made anew (the Maildir's own times change): the next delivery goes to the new one */
  CHECK(rename("mh/new", "mh/new.old") == 0 && mkdir("mh/new", 0700) == 0);
  commit_one("mh");
  CHECK(count("mh", "new") == 1 && count("mh", "new.old") == 3);
  CHECK(open_fds() == before); /* recent: not held */
  /* another Maildir takes the place of the last one */
  commit_one("mh2");
  CHECK(count("mh2", "new") == 1 && open_fds() == before + 3);
  nanosleep(&ts, 0);
  commit_one("mh");
  commit_one("mh");
  CHECK(count("mh", "new") == 3 && open_fds() == before + 3);
}

int main(void)
{
  names();
  delivery();
  quota();
  listing();
  loops();
  held();
  return CHECK_DONE();
}
