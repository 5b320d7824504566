/* unit: dsn (bounce building).
 *
 * Run with no arguments: the checks below. Run as
 *   dsn.bin build ME TO QUEUEID ARRIVAL NOW RCPT|STATUS|DIAG|REMOTE|DELAYED... < message
 * it prints the bounce dsn_build makes (tests/test_bounce_format.py parses it with Python's
 * email package). An empty DIAG or REMOTE field means NULL.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <skalibs/stralloc.h>
#include "dsn.h"
#include "check.h"
char const *PROG = "unit-dsn";

static int has(stralloc const *sa, char const *s)
{
  size_t n = strlen(s), i;
  for (i = 0; i + n <= sa->len; i++)
    if (!memcmp(sa->s + i, s, n)) return 1;
  return 0;
}

static char *field(char **p)
{
  char *s = *p, *bar;
  if (!s) return 0;
  bar = strchr(s, '|');
  if (bar) {
    *bar = 0;
    *p = bar + 1;
  } else
    *p = 0;
  return s;
}

static int build(int argc, char **argv)
{
  static char msg[1 << 20];
  size_t len = 0;
  dsn_msg m;
  dsn_rcpt r[16];
  stralloc out = STRALLOC_ZERO;
  int i, n = 0;
  for (;;) {
    ssize_t k = read(0, msg + len, sizeof msg - len);
    if (k <= 0) break;
    len += (size_t)k;
  }
  m.me = argv[2];
  m.to = argv[3];
  m.queueid = argv[4];
  m.arrival = (time_t)strtoll(argv[5], 0, 10);
  m.now = (time_t)strtoll(argv[6], 0, 10);
  m.message = msg;
  m.messagelen = len;
  for (i = 7; i < argc && n < 16; i++, n++) {
    char *p = argv[i], *s;
    r[n].rcpt = field(&p);
    r[n].status = field(&p);
    s = field(&p);
    r[n].diagnostic = s && *s ? s : 0;
    s = field(&p);
    r[n].remote_mta = s && *s ? s : 0;
    s = field(&p);
    r[n].action_delayed = s && *s == '1';
  }
  if (!dsn_build(&out, &m, r, (size_t)n)) return 111;
  if (write(1, out.s, out.len) != (ssize_t)out.len) return 111;
  return 0;
}

int main(int argc, char **argv)
{
  stralloc a = STRALLOC_ZERO, b = STRALLOC_ZERO;
  dsn_msg m;
  dsn_rcpt r[2];
  size_t i;
  char const *msg = "From: a@b.test\nSubject: hello\nTo: x@y.test\n\nthe body, secret\n";
  if (argc > 1 && !strcmp(argv[1], "build")) return argc < 7 ? 100 : build(argc, argv);

  m.me = "mx.example.test";
  m.to = "a@b.test";
  m.queueid = "Q123";
  m.arrival = 1700000000;
  m.now = 1700003600;
  m.message = msg;
  m.messagelen = strlen(msg);
  r[0].rcpt = "nouser@example.test";
  r[0].status = "5.1.1";
  r[0].diagnostic = "smtp; 550 5.1.1 no such user";
  r[0].remote_mta = "mx.remote.test";
  r[0].action_delayed = 0;
  r[1].rcpt = "late@example.test";
  r[1].status = "bogus";
  r[1].diagnostic = "connection\r\ntimed out";
  r[1].remote_mta = 0;
  r[1].action_delayed = 1;
  CHECK(stralloc_cats(&a, "PREFIX"));
  CHECK(dsn_build(&a, &m, r, 2) == 1);
  CHECK(a.len > 6 && !memcmp(a.s, "PREFIX", 6)); /* appends */
  {
    char const *from = "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n";
    CHECK(!memcmp(a.s + 6, from, strlen(from)));
  }
  CHECK(has(&a, "\r\nTo: <a@b.test>\r\n"));
  CHECK(has(&a, "\r\nAuto-Submitted: auto-replied\r\n"));
  CHECK(has(&a, "\r\nMIME-Version: 1.0\r\n"));
  CHECK(has(&a, "\r\nDate: Tue, 14 Nov 2023 23:13:20 +0000\r\n"));
  CHECK(has(&a, "\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
  CHECK(has(&a, "\r\nReporting-MTA: dns; mx.example.test\r\n"));
  CHECK(has(&a, "\r\nX-Pillarbox-Queue-ID: Q123\r\n"));
  CHECK(has(&a, "\r\nFinal-Recipient: rfc822; nouser@example.test\r\nAction: failed\r\n"
                "Status: 5.1.1\r\nRemote-MTA: dns; mx.remote.test\r\n"
                "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
  /* a bad status is replaced by the generic one of its action; CR LF never pass through */
  CHECK(has(&a, "\r\nFinal-Recipient: rfc822; late@example.test\r\nAction: delayed\r\n"
                "Status: 4.0.0\r\nDiagnostic-Code: x-pillarbox; connection  timed out\r\n"));
  CHECK(has(&a, "\r\nSubject: hello\r\n"));
  CHECK(!has(&a, "the body, secret"));
  CHECK(has(&a, "Subject: Undelivered Mail Returned to Sender\r\n"));
  /* no bare LF anywhere */
  for (i = 6; i < a.len; i++)
    if (a.s[i] == '\n' && a.s[i - 1] != '\r') break;
  CHECK(i == a.len);

  /* two bounces have different boundaries and Message-IDs */
  CHECK(dsn_build(&b, &m, r, 2) == 1);
  CHECK(b.len == a.len - 6 && memcmp(a.s + 6, b.s, b.len));

  /* only delayed: the subject says so; a failed status in a delayed record is replaced */
  b.len = 0;
  r[1].status = "5.1.1";
  CHECK(dsn_build(&b, &m, r + 1, 1) == 1);
  CHECK(has(&b, "Subject: Delayed Mail"));
  CHECK(has(&b, "Status: 4.0.0\r\n"));

  /* failed: 4.4.7 (expired in the queue) is kept, any other 4.x.x becomes 5.0.0 */
  r[1].action_delayed = 0;
  r[1].status = "4.4.7";
  b.len = 0;
  CHECK(dsn_build(&b, &m, r + 1, 1) == 1);
  CHECK(has(&b, "Action: failed\r\nStatus: 4.4.7\r\n"));
  r[1].status = "4.2.1";
  b.len = 0;
  CHECK(dsn_build(&b, &m, r + 1, 1) == 1);
  CHECK(has(&b, "Action: failed\r\nStatus: 5.0.0\r\n"));
  r[1].action_delayed = 1;

  /* a message that is all header, with CRLF, and a message with none */
  b.len = 0;
  m.message = "Subject: x\r\nX-A: 1";
  m.messagelen = strlen(m.message);
  CHECK(dsn_build(&b, &m, r, 1) == 1);
  CHECK(has(&b, "\r\n\r\nSubject: x\r\nX-A: 1\r\n\r\n--"));
  b.len = 0;
  m.message = "\nbody only\n";
  m.messagelen = strlen(m.message);
  CHECK(dsn_build(&b, &m, r, 1) == 1);
  CHECK(!has(&b, "body only"));
  /* 8-bit and control bytes in a recipient are neutralised */
  b.len = 0;
  r[0].rcpt = "x\nBcc: victim@evil.test\xff";
  CHECK(dsn_build(&b, &m, r, 1) == 1);
  CHECK(has(&b, "Final-Recipient: rfc822; x Bcc: victim@evil.test?\r\n"));
  CHECK(!has(&b, "\nBcc:"));
  stralloc_free(&a);
  stralloc_free(&b);
  return CHECK_DONE();
}
