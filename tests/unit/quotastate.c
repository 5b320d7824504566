/* unit: quota-state records (format, atomic replace, the RCPT verdicts) */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "quotastate.h"
#include "check.h"
char const *PROG = "unit-quotastate";

int main(void)
{
  quotastate q = {1000, 3, 5000, 0, 1700000000}, r;
  char buf[QUOTASTATE_LINE_MAX];
  size_t n = quotastate_fmt(buf, &q);
  struct stat st;

  CHECK(n == sizeof "PBQS1 1000 3 5000 0 1700000000\n" - 1);
  CHECK(!memcmp(buf, "PBQS1 1000 3 5000 0 1700000000\n", n));
  CHECK(quotastate_parse(buf, n, &r) == 1 && r.used == 1000 && r.count == 3 && r.limit == 5000 &&
        r.limitcount == 0 && r.updated == 1700000000);
  CHECK(quotastate_parse(buf, n - 1, &r) == 0);                       /* no newline */
  CHECK(quotastate_parse("PBQS1 1 2 3 4\n", 14, &r) == 0);            /* a field short */
  CHECK(quotastate_parse("PBQS1 1 2 3 4 5 6\n", 18, &r) == 0);        /* one too many */
  CHECK(quotastate_parse("PBQS2 1 2 3 4 5\n", 16, &r) == 0);
  CHECK(quotastate_parse("PBQS1 1 2 x 4 5\n", 16, &r) == 0);
  CHECK(quotastate_parse("PBQS1 1  2 3 4 5\n", 17, &r) == 0);
  CHECK(quotastate_parse("PBQS1 99999999999999999999999 2 3 4 5\n", 38, &r) == 0);

  /* files under ./run/quota, made on the first write */
  CHECK(quotastate_read(".", "Joe@Example.TEST", 16, &r) == 0);
  CHECK(quotastate_write(".", "Joe@Example.TEST", 16, &q) == 1);
  CHECK(stat("run/quota/joe@example.test", &st) == 0 && (st.st_mode & 07777) == 0640);
  CHECK(stat("run/quota", &st) == 0 && S_ISDIR(st.st_mode));
  CHECK(quotastate_read(".", "joe@example.test", 16, &r) == 1 && r.used == 1000 && r.limit == 5000);
  q.used = 4999;
  q.updated = 0; /* now */
  CHECK(quotastate_write(".", "joe@example.test", 16, &q) == 1);
  CHECK(quotastate_read(".", "JOE@example.test", 16, &r) == 1 && r.used == 4999 &&
        r.updated > 1700000000);
  CHECK(access("run/quota/.joe@example.test.tmp", F_OK) < 0); /* no temp file left */
  /* names that have no record */
  CHECK(quotastate_write(".", "../x", 4, &q) == 0 && errno == EINVAL);
  CHECK(quotastate_write(".", ".hidden", 7, &q) == 0 && errno == EINVAL);
  CHECK(quotastate_write(".", "a/b@c", 5, &q) == 0 && errno == EINVAL);
  CHECK(quotastate_write(".", "", 0, &q) == 0 && errno == EINVAL);
  CHECK(quotastate_read(".", "a\nb", 3, &r) == 0);
  /* a junk record reads as none */
  {
    FILE *f = fopen("run/quota/junk@example.test", "w");
    CHECK(f && fputs("hello\n", f) >= 0 && fclose(f) == 0);
    CHECK(quotastate_read(".", "junk@example.test", 17, &r) == 0);
  }
  CHECK(quotastate_remove(".", "joe@example.test", 16) == 1);
  CHECK(quotastate_read(".", "joe@example.test", 16, &r) == 0);
  CHECK(quotastate_remove(".", "joe@example.test", 16) == 1); /* absent is fine */

  /* sync from a Maildir's maildirsize */
  CHECK(mkdir("md", 0700) == 0 && mkdir("md/new", 0700) == 0 && mkdir("md/cur", 0700) == 0 &&
        mkdir("md/tmp", 0700) == 0);
  CHECK(quotastate_sync(".", "ann@example.test", 16, "md") == 1); /* no maildirsize: none */
  CHECK(quotastate_read(".", "ann@example.test", 16, &r) == 0);
  {
    FILE *f = fopen("md/maildirsize", "w");
    CHECK(f && fputs("10000S,5C\n300 2\n-100 -1\n", f) >= 0 && fclose(f) == 0);
  }
  CHECK(quotastate_sync(".", "ann@example.test", 16, "md") == 1);
  CHECK(quotastate_read(".", "ann@example.test", 16, &r) == 1 && r.used == 200 && r.count == 1 &&
        r.limit == 10000 && r.limitcount == 5);

  /* verdicts: 4999 of 5000 used */
  q.used = 4999, q.count = 3, q.limit = 5000, q.limitcount = 0;
  CHECK(quotastate_check(&q, (uint64_t)-1, 0) == QUOTASTATE_OK);      /* RCPT without SIZE */
  CHECK(quotastate_check(&q, (uint64_t)-1, 1) == QUOTASTATE_OK);
  CHECK(quotastate_check(&q, (uint64_t)-1, 2) == QUOTASTATE_FULL);     /* 452 4.2.2 */
  CHECK(quotastate_check(&q, (uint64_t)-1, 5001) == QUOTASTATE_TOOBIG); /* 552 5.2.2 */
  CHECK(quotastate_check(&q, (uint64_t)-1, 5000) == QUOTASTATE_FULL);
  q.used = 5000;
  CHECK(quotastate_check(&q, (uint64_t)-1, 0) == QUOTASTATE_FULL);
  q.used = 7000; /* over (a quota lowered since) */
  CHECK(quotastate_check(&q, (uint64_t)-1, 0) == QUOTASTATE_FULL);
  CHECK(quotastate_check(&q, 0, 100) == QUOTASTATE_OK);                /* the account has none */
  CHECK(quotastate_check(&q, 10000, 100) == QUOTASTATE_OK);            /* raised since */
  q.used = 0, q.limit = 0, q.limitcount = 3;
  CHECK(quotastate_check(&q, (uint64_t)-1, 10) == QUOTASTATE_FULL);    /* 3 of 3 messages */
  q.count = 2;
  CHECK(quotastate_check(&q, (uint64_t)-1, 10) == QUOTASTATE_OK);
  return CHECK_DONE();
}
