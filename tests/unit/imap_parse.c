/* lib/imap_parse: commands, literals, lists, sequence sets, dates, modified UTF-7. */
#include <string.h>
#include "check.h"
#include "imap_parse.h"

static imap_cmd c;

static int parse(char const *s)
{
  static char buf[4096];
  size_t len = strlen(s);
  memcpy(buf, s, len);
  c.nspool = 0;
  return imap_parse(buf, len, &c);
}

int main(void)
{
  uint64_t n;
  int ns;
  size_t at;
  imap_range r[8];
  time_t t;
  char out[256];
  long l;

  CHECK(parse("a1 NOOP\r\n") == IMAP_OK);
  CHECK(c.taglen == 2 && !memcmp(c.tag, "a1", 2) && imap_ieq(c.name, c.namelen, "noop"));
  CHECK(c.nargs == 0);
  CHECK(parse("a LOGIN \"jo\\\"e\" {3}\r\npw!\r\n") == IMAP_OK);
  CHECK(c.nargs == 2 && c.arg[0].type == IMAP_QUOTED && c.arg[0].len == 4 &&
        !memcmp(c.arg[0].s, "jo\"e", 4));
  CHECK(c.arg[1].type == IMAP_LITERAL && c.arg[1].len == 3 && !memcmp(c.arg[1].s, "pw!", 3));
  CHECK(parse("a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.10>)\r\n") == IMAP_OK);
  CHECK(c.nargs == 4 && c.arg[1].type == IMAP_LIST && c.arg[1].end == 4);
  CHECK(c.arg[3].len == strlen("BODY.PEEK[HEADER.FIELDS (From To)]<0.10>"));
  CHECK(parse("a X ((a) (b (c)))\r\n") == IMAP_OK && c.nargs == 7 && c.arg[0].end == 7);
  CHECK(imap_next(&c, 1) == 3);
  CHECK(parse("a X ()\r\n") == IMAP_OK && c.nargs == 1 && c.arg[0].end == 1);
  CHECK(parse("a SELECT !#$&'+,-.0123:;<=>?@^_`|[}\r\n") == IMAP_OK && c.nargs == 1 &&
        c.arg[0].len == 26);
  CHECK(parse("a X (((((((((((((((((x)))))))))))))))))\r\n") == IMAP_EDEPTH);
  CHECK(parse("a X \"unterminated\r\n") == IMAP_ESYNTAX);
  CHECK(parse("a X  two-spaces\r\n") == IMAP_ESYNTAX);
  CHECK(parse("a X (a b\r\n") == IMAP_ESYNTAX);
  CHECK(parse("a X {10}\r\nshort\r\n") == IMAP_ESYNTAX);
  CHECK(parse("+ NOOP\r\n") == IMAP_ENOTAG);
  CHECK(parse("* NOOP\r\n") == IMAP_ENOTAG);
  CHECK(parse("\r\n") == IMAP_ENOTAG);
  CHECK(parse("a\r\n") == IMAP_ENOTAG);
  /* a spooled literal: the buffer holds only its announcement */
  {
    static char buf[] = "a APPEND INBOX {100}\r\n\r\n";
    c.nspool = 1;
    c.spool_at[0] = 15;
    CHECK(imap_parse(buf, sizeof buf - 1, &c) == IMAP_OK);
    CHECK(c.nargs == 2 && c.arg[1].type == IMAP_SPOOLED && c.arg[1].len == 100);
  }

  CHECK(imap_literal_tail("a APPEND x {12}", 15, &n, &ns, &at) == 1 && n == 12 && !ns && at == 11);
  CHECK(imap_literal_tail("a APPEND x {12+}", 16, &n, &ns, &at) == 1 && n == 12 && ns);
  CHECK(imap_literal_tail("a APPEND x ~{3}", 15, &n, &ns, &at) == 1 && at == 11);
  CHECK(imap_literal_tail("a APPEND x {12-}", 16, &n, &ns, &at) == -1);
  CHECK(imap_literal_tail("a APPEND x {}", 13, &n, &ns, &at) == -1);
  CHECK(imap_literal_tail("a APPEND x {99999999999999999999999}", 36, &n, &ns, &at) == -1);
  CHECK(imap_literal_tail("a NOOP", 6, &n, &ns, &at) == 0);

  CHECK(imap_seqset("1,3:5,7:*", 9, r, 8) == 3 && r[1].lo == 3 && r[1].hi == 5 &&
        r[2].hi == IMAP_STAR);
  CHECK(imap_seqset("5:3", 3, r, 8) == 1 && r[0].lo == 3 && r[0].hi == 5);
  CHECK(imap_seqset("0", 1, r, 8) == -1);
  CHECK(imap_seqset("1,", 2, r, 8) == -1);
  CHECK(imap_seqset("1::2", 4, r, 8) == -1);
  CHECK(imap_seqset("4294967296", 10, r, 8) == -1);
  CHECK(imap_seqset("1:4294967295", 12, r, 8) == 1 && r[0].hi == 4294967295u);
  CHECK(imap_seqset("1,2,3,4,5,6,7,8,9", 17, r, 8) == -1); /* more ranges than room */
  CHECK(imap_seqset_has(r, (size_t)imap_seqset("2:*", 3, r, 8), 5, 4) == 0);
  CHECK(imap_seqset_has(r, (size_t)imap_seqset("*:2", 3, r, 8), 3, 4) == 1);

  CHECK(imap_date("1-Feb-1994", 10, &t) && t == 760060800);
  CHECK(!imap_date("31-Foo-1994", 11, &t));
  CHECK(imap_datetime("17-Jul-1996 02:44:25 -0700", 26, &t) && t == 837596665);
  CHECK(imap_datetime(" 7-Jul-1996 02:44:25 +0000", 26, &t));
  CHECK(imap_datetime_fmt(out, 837596665) == 26 && !memcmp(out, "17-Jul-1996 09:44:25 +0000", 26));

  l = imap_mutf7_to_utf8("Entw&APw-rfe", 12, out, sizeof out);
  CHECK(l == 9 && !memcmp(out, "Entw\xc3\xbc" "rfe", 9));
  l = imap_utf8_to_mutf7("Entw\xc3\xbc" "rfe", 9, out, sizeof out);
  CHECK(l == 12 && !memcmp(out, "Entw&APw-rfe", 12));
  l = imap_utf8_to_mutf7("A&B", 3, out, sizeof out);
  CHECK(l == 4 && !memcmp(out, "A&-B", 4));
  CHECK(imap_mutf7_to_utf8("&Jjo-!", 6, out, sizeof out) == 4); /* U+263A */
  CHECK(!imap_mutf7_valid("&AGE-", 5));  /* 'a' must not be encoded */
  CHECK(!imap_mutf7_valid("&APw", 4));   /* unterminated */
  CHECK(!imap_mutf7_valid("a\x80", 2));  /* 8-bit */
  CHECK(imap_mutf7_valid("Sent", 4));
  return CHECK_DONE();
}
