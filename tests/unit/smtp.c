/* unit: SMTP command parsing, replies and the DATA / BDAT state machine */
#include <string.h>
#include <skalibs/stralloc.h>
#include "addr.h"
#include "smtp.h"
#include "check.h"
char const *PROG = "unit-smtp";

/* Runs the data machine over s, byte chunk by chunk of size step. Returns the number of bytes
 * consumed (the end of data position or strlen), fills out / flags / done. */
static size_t data(char const *s, size_t len, size_t step, int bdat, char *out, size_t *olen,
                   unsigned int *flags, int *done)
{
  smtp_data d;
  size_t i = 0;
  *olen = 0;
  *done = 0;
  smtp_data_init(&d, bdat);
  while (i < len) {
    size_t n = len - i < step ? len - i : step, o, used;
    used = smtp_data_scan(&d, s + i, n, out + *olen, &o, done);
    *olen += o;
    i += used;
    if (*done) break;
  }
  if (bdat) *olen += smtp_data_finish(&d, out + *olen);
  *flags = d.flags;
  return i;
}

static int data_is(char const *in, size_t end, char const *want, unsigned int wantflags,
                   int wantdone)
{
  size_t steps[] = {1, 2, 3, 7, 4096}, k;
  for (k = 0; k < sizeof steps / sizeof steps[0]; k++) {
    char out[512];
    size_t olen, used;
    unsigned int flags;
    int done;
    used = data(in, strlen(in), steps[k], 0, out, &olen, &flags, &done);
    if (done != wantdone || used != end || flags != wantflags || olen != strlen(want) ||
        memcmp(out, want, olen)) {
      fprintf(stderr, "data(%zu) mismatch on %s: used=%zu done=%d flags=%u out=%.*s\n",
              steps[k], in, used, done, flags, (int)olen, out);
      return 0;
    }
  }
  return 1;
}

/* Counts the Received: fields of s, fed in chunks of every size in steps. Returns the count,
 * or -1 if two chunk sizes disagree. */
static long hops(char const *s)
{
  size_t steps[] = {1, 2, 3, 5, 9, 4096}, k, len = strlen(s);
  long got = -2;
  for (k = 0; k < sizeof steps / sizeof steps[0]; k++) {
    smtp_hops h;
    size_t i;
    smtp_hops_init(&h);
    for (i = 0; i < len; i += steps[k])
      smtp_hops_scan(&h, s + i, len - i < steps[k] ? len - i : steps[k]);
    if (got != -2 && (long)h.count != got) return -1;
    got = (long)h.count;
  }
  return got;
}

int main(void)
{
  smtp_cmd c;
  stralloc sa = STRALLOC_ZERO, addr = STRALLOC_ZERO;
  smtp_mailparams p;
  unsigned long long n;
  int last;

  /* verbs */
  CHECK(smtp_parse_cmd("ehlo  client.example  ", 22, &c) && c.verb == SMTP_V_EHLO &&
        c.arglen == 14 && !memcmp(c.arg, "client.example", 14));
  CHECK(smtp_parse_cmd("QUIT", 4, &c) && c.verb == SMTP_V_QUIT && !c.arglen);
  CHECK(smtp_parse_cmd("StartTLS", 8, &c) && c.verb == SMTP_V_STARTTLS);
  CHECK(smtp_parse_cmd("MAILX FROM:<>", 13, &c) && c.verb == SMTP_V_UNKNOWN);
  CHECK(!smtp_parse_cmd("NOOP a\0b", 8, &c));
  CHECK(!smtp_parse_cmd("NOOP \r", 6, &c));
  CHECK(smtp_parse_cmd("", 0, &c) && c.verb == SMTP_V_UNKNOWN);

  /* MAIL */
  CHECK(smtp_parse_mail("FROM:<a@b.example>", 18, &addr, &p) == SMTP_OK && addr.len == 11 &&
        !memcmp(addr.s, "a@b.example", 11));
  CHECK(smtp_parse_mail("from: <a@b.example>", 19, &addr, &p) == SMTP_OK && addr.len == 11);
  CHECK(smtp_parse_mail("FROM:<>", 7, &addr, &p) == SMTP_OK && addr.len == 0);
  CHECK(smtp_parse_mail("FROM:<> size=1000 body=8bitmime", 31, &addr, &p) == SMTP_OK &&
        p.has_size && p.size == 1000 && p.body == SMTP_BODY_8BITMIME);
  CHECK(smtp_parse_mail("FROM:<a@b> AUTH=<>", 18, &addr, &p) == SMTP_OK);
  CHECK(smtp_parse_mail("FROM:<a@b> BODY=BINARYMIME", 26, &addr, &p) == SMTP_EPARAM);
  CHECK(smtp_parse_mail("FROM:<a@b> FOO=bar", 18, &addr, &p) == SMTP_EPARAM);
  CHECK(smtp_parse_mail("FROM:<a@b> SIZE=abc", 19, &addr, &p) == SMTP_EPARAMVAL);
  CHECK(smtp_parse_mail("FROM:<a@b> SIZE=99999999999999999999999", 39, &addr, &p) ==
        SMTP_EPARAMVAL);
  CHECK(smtp_parse_mail("FROM:<a@b> SIZE=", 16, &addr, &p) == SMTP_EPARAMVAL);
  CHECK(smtp_parse_mail("FROM:<a@b>SIZE=1", 16, &addr, &p) == SMTP_ESYNTAX);
  CHECK(smtp_parse_mail("FROM:a@b", 8, &addr, &p) == SMTP_ESYNTAX);
  CHECK(smtp_parse_mail("TO:<a@b>", 8, &addr, &p) == SMTP_ESYNTAX);
  CHECK(smtp_parse_mail("FROM:", 5, &addr, &p) == SMTP_ESYNTAX);
  CHECK(smtp_parse_mail("FROM:<a@>", 9, &addr, &p) == SMTP_EADDR);
  CHECK(smtp_parse_mail("FROM:<\xc3\xa9@b.example>", 19, &addr, &p) == SMTP_EADDR &&
        p.addrerr == ADDR_E8BIT);
  CHECK(smtp_parse_mail("FROM:<\xc3\xa9@b.example> SMTPUTF8", 28, &addr, &p) == SMTP_OK &&
        p.smtputf8);
  CHECK(smtp_parse_mail("FROM:<a@b> SMTPUTF8=x", 21, &addr, &p) == SMTP_EPARAMVAL);

  /* RCPT */
  CHECK(smtp_parse_rcpt("TO:<u@example.test>", 19, 0, &addr, &p) == SMTP_OK && addr.len == 14);
  CHECK(smtp_parse_rcpt("to:<PostMaster>", 15, 0, &addr, &p) == SMTP_OK && p.postmaster &&
        addr.len == 10);
  CHECK(smtp_parse_rcpt("TO:<>", 5, 0, &addr, &p) == SMTP_EADDR);
  CHECK(smtp_parse_rcpt("TO:<u@example.test> NOTIFY=NEVER", 32, 0, &addr, &p) == SMTP_EPARAM);
  CHECK(smtp_parse_rcpt("TO:<;sleep 5;@x>", 16, 0, &addr, &p) != SMTP_OK ||
        (addr.len == 11 && addr.s[0] == ';'));

  /* BDAT */
  CHECK(smtp_parse_bdat("100", 3, 1000, &n, &last) && n == 100 && !last);
  CHECK(smtp_parse_bdat("0 LAST", 6, 1000, &n, &last) && n == 0 && last);
  CHECK(smtp_parse_bdat("5 last", 6, 1000, &n, &last) && last);
  CHECK(!smtp_parse_bdat("1001", 4, 1000, &n, &last));
  CHECK(!smtp_parse_bdat("", 0, 1000, &n, &last));
  CHECK(!smtp_parse_bdat("1 LASTX", 7, 1000, &n, &last));
  CHECK(!smtp_parse_bdat("-1", 2, 1000, &n, &last));

  /* replies */
  sa.len = 0;
  CHECK(smtp_reply(&sa, 250, "2.1.0", "Ok", 0) && sa.len == 14 &&
        !memcmp(sa.s, "250 2.1.0 Ok\r\n", 14));
  sa.len = 0;
  CHECK(smtp_reply(&sa, 250, 0, "PIPELINING", 1) && !memcmp(sa.s, "250-PIPELINING\r\n", 16));
  sa.len = 0;
  CHECK(smtp_reply(&sa, 550, "5.1.1", "a\r\nb", 0) && !memcmp(sa.s, "550 5.1.1 a??b\r\n", 16));

  /* DATA: the end is CRLF . CRLF only; the opening CRLF is the DATA command's */
  CHECK(data_is(".\r\n", 3, "", 0, 1));
  CHECK(data_is("a\r\n.\r\nMAIL", 6, "a\n", 0, 1));
  CHECK(data_is("..x\r\n.\r\n", 8, ".x\n", 0, 1));
  CHECK(data_is(".x\r\n.\r\n", 7, "x\n", 0, 1));
  CHECK(data_is("a\r\n..\r\n.\r\n", 10, "a\n.\n", 0, 1));
  /* the smuggling set: none of these ends the data */
  CHECK(data_is("a\n.\nb", 5, "a\n.\nb", SMTP_DATA_BARELF, 0));
  CHECK(data_is("a\n.\r\nb", 6, "a\n.\nb", SMTP_DATA_BARELF, 0));
  CHECK(data_is("a\r\n.\nb", 6, "a\n\nb", SMTP_DATA_BARELF, 0));
  CHECK(data_is("a\r.\r\nb", 6, "a\r.\nb", SMTP_DATA_BARECR, 0));
  CHECK(data_is("a\r\n.\rb", 6, "a\n\rb", SMTP_DATA_BARECR, 0));
  CHECK(data_is("a\r.\nb", 5, "a\r.\nb", SMTP_DATA_BARECR | SMTP_DATA_BARELF, 0));
  /* ... and the real end after them is still found */
  CHECK(data_is("a\n.\nb\r\n.\r\nX", 10, "a\n.\nb\n", SMTP_DATA_BARELF, 1));
  CHECK(data_is("a\r\r\n.\r\n", 7, "a\r\n", SMTP_DATA_BARECR, 1));

  /* BDAT mode: no dot handling, CRLF -> LF, a CR split over chunks */
  {
    char out[64];
    size_t olen;
    unsigned int flags;
    int done;
    data("a\r\n.\r\nb\r", 8, 1, 1, out, &olen, &flags, &done);
    CHECK(!done && olen == 6 && !memcmp(out, "a\n.\nb\r", 6) && flags == SMTP_DATA_BARECR);
    data("a\r\nb\r\n", 6, 2, 1, out, &olen, &flags, &done);
    CHECK(olen == 4 && !memcmp(out, "a\nb\n", 4) && !flags);
  }

  /* Received: counting: header section only, any case, obsolete white space before ':' */
  CHECK(hops("") == 0);
  CHECK(hops("Received: a\n") == 1);
  CHECK(hops("Received: a\nreceived: b\nRECEIVED:c\nReceived :d\nReceived\t: e\n\nbody") == 5);
  CHECK(hops("Received: a\n\tfolded Received: x\n received: y\nSubject: Received: z\n") == 1);
  CHECK(hops("Received-SPF: pass\nX-Received: a\nReceivedx: b\nReceived\n: c\n") == 0);
  CHECK(hops("Subject: x\n\nReceived: in the body\nReceived: again\n") == 0);
  CHECK(hops("\nReceived: no header section at all\n") == 0);
  CHECK(hops("Received: a\nReceived: b\nReceived: c") == 3);
  CHECK(hops("Recei") == 0);

  /* the same recipient: domain in any case; local part folded only for a local domain */
  CHECK(smtp_rcpt_same("joe@remote.test", 15, "joe@remote.test", 15, 0));
  CHECK(smtp_rcpt_same("joe@remote.test", 15, "joe@REMOTE.test", 15, 0));
  CHECK(!smtp_rcpt_same("Joe@remote.test", 15, "joe@remote.test", 15, 0));
  CHECK(smtp_rcpt_same("Joe@remote.test", 15, "joe@Remote.TEST", 15, 1));
  CHECK(!smtp_rcpt_same("joe@remote.test", 15, "joe@remote.tesu", 15, 1));
  CHECK(!smtp_rcpt_same("joe@remote.test", 15, "joe@remote.tes", 14, 1));
  CHECK(!smtp_rcpt_same("\"a@b\"@c.test", 12, "\"a@\"b@c.test", 12, 0));
  CHECK(smtp_rcpt_same("\"A@b\"@c.test", 12, "\"a@b\"@C.test", 12, 1));

  stralloc_free(&sa);
  stralloc_free(&addr);
  /* the local service's bare names */
  {
    stralloc q = STRALLOC_ZERO;
    CHECK(smtp_qualify("FROM:<root> SIZE=10", 19, "ex.test", 7, &q) == 1);
    CHECK(q.len == 27 && !memcmp(q.s, "FROM:<root@ex.test> SIZE=10", 27));
    CHECK(smtp_qualify("TO:<root>", 9, "", 0, &q) == 0);
    CHECK(smtp_qualify("TO:<a@b>", 8, "ex.test", 7, &q) == 0);
    CHECK(smtp_qualify("TO:<Postmaster>", 15, "ex.test", 7, &q) == 0);
    CHECK(smtp_qualify("FROM:<>", 7, "ex.test", 7, &q) == 0);
    CHECK(smtp_qualify("TO:root", 7, "ex.test", 7, &q) == 0);
    CHECK(smtp_qualify("TO:<root", 8, "ex.test", 7, &q) == 0);
    stralloc_free(&q);
  }
  return CHECK_DONE();
}
