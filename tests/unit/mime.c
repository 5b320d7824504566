/* unit: lib/mime beyond what test_mime_dovecot compares: header decoding, SEARCH helpers,
 * dates, partial wire copies, section syntax, and the limits (nesting, part table). */
#include <stdlib.h>
#include <string.h>
#include "mime.h"
#include "check.h"
char const *PROG = "unit-mime";

static mime_part parts[256];

static void parse(mime_msg *m, char const *s)
{
  mime_parse(m, s, strlen(s), parts, 256);
}

static int decoded_is(char const *in, char const *want)
{
  stralloc sa = STRALLOC_ZERO;
  int ok = mime_header_decode(&sa, in, strlen(in)) && sa.len == strlen(want)
           && !memcmp(sa.s, want, sa.len);
  if (!ok) fprintf(stderr, "decode [%s] gave [%.*s]\n", in, (int)sa.len, sa.s);
  stralloc_free(&sa);
  return ok;
}

static int date_is(char const *s, int64_t t, int zone)
{
  int64_t got;
  int z;
  if (!mime_date_parse(s, strlen(s), &got, &z)) {
    fprintf(stderr, "date [%s] refused\n", s);
    return 0;
  }
  if (got != t || z != zone) fprintf(stderr, "date [%s]: %lld %d\n", s, (long long)got, z);
  return got == t && z == zone;
}

static int section_ok(char const *s)
{
  mime_section sec;
  return mime_section_parse(s, strlen(s), &sec);
}

static int cat_is(mime_msg const *m, char const *sec, size_t origin, size_t count, char const *want)
{
  mime_section x;
  stralloc sa = STRALLOC_ZERO;
  int ok = mime_section_parse(sec, strlen(sec), &x) && mime_section_cat(&sa, m, &x, origin, count)
           && sa.len == strlen(want) && !memcmp(sa.s, want, sa.len);
  if (!ok)
    fprintf(stderr, "section [%s]<%zu.%zu> gave [%.*s]\n", sec, origin, count, (int)sa.len, sa.s);
  stralloc_free(&sa);
  return ok;
}

int main(void)
{
  mime_msg m;
  stralloc tmp = STRALLOC_ZERO, sa = STRALLOC_ZERO;
  char const *msg =
    "From: =?ISO-8859-1?Q?J=F6rg?= <j@example.de>\n"
    "To: Bob <bob@example.net>\n"
    "Subject: =?utf-8?B?R3LDvMOfZQ==?= =?utf-8?q?_aus_K=C3=B6ln?=\n"
    "X-Folded: first\n  second\n"
    "Date: Mon, 7 Dec 2026 23:30:00 -0500\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=b\n\n"
    "--b\nContent-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n\n"
    "Der B=E4r ist M=FCde=\n und schl=E4ft.\n"
    "--b\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
    "PHA+U2Now7ZuZXMgV2V0dGVyPC9wPg==\n"
    "--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    "c2VjcmV0IHdvcmQ=\n"
    "--b--\n";
  int64_t t;
  int z;

  /* RFC 2047 */
  CHECK(decoded_is("=?utf-8?q?caf=C3=A9?=", "caf\xc3\xa9"));
  CHECK(decoded_is("=?ISO-8859-1?Q?J=F6rg?= M\xc3\xbcller", "J\xc3\xb6rg M\xc3\xbcller"));
  CHECK(decoded_is("=?utf-8?b?w6k=?=  =?utf-8?b?w6k=?=", "\xc3\xa9\xc3\xa9"));
  CHECK(decoded_is("a =?utf-8?q?b?= c", "a b c"));
  CHECK(decoded_is("  folded\n  value  ", "folded  value"));
  CHECK(decoded_is("=?windows-1252?q?=80?=", "\xe2\x82\xac"));
  CHECK(decoded_is("=?iso-8859-15?q?=A4?=", "\xe2\x82\xac"));
  CHECK(decoded_is("=?utf-8?q?broken", "=?utf-8?q?broken"));
  CHECK(decoded_is("raw \xe9t\xe9", "raw \xc3\xa9t\xc3\xa9")); /* invalid UTF-8 read as Latin-1 */
  CHECK(decoded_is("=?utf-8*en?q?x_y?=", "x y"));
  /* other charsets through iconv; an unknown one is read as UTF-8 / Latin-1 */
  CHECK(decoded_is("=?koi8-r?q?=F0=D2=C9=D7=C5=D4?=",
                   "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"));
  CHECK(decoded_is("=?x-unknown?q?caf=E9?=", "caf\xc3\xa9"));

  /* case-insensitive search */
  CHECK(mime_find_ci("Hello World", 11, "WORLD", 5) == 6);
  CHECK(mime_find_ci("Hello World", 11, "worlds", 6) == -1);
  CHECK(mime_find_ci("aaaB", 4, "ab", 2) == 2);
  CHECK(mime_find_ci("x", 1, "", 0) == 0);

  parse(&m, msg);
  CHECK(m.n == 4);
  CHECK(mime_search_header(&m, 0, "From", 4, "j\xc3\xb6RG", 5, &tmp) == 1); /* ASCII case folds */
  CHECK(mime_search_header(&m, 0, "From", 4, "J\xc3\x96rg", 5, &tmp) == 0); /* not beyond ASCII */
  CHECK(mime_search_header(&m, 0, "subject", 7, "gR\xc3\xbc\xc3\x9f", 6, &tmp) == 1);
  CHECK(mime_search_header(&m, 0, "Subject", 7, "e aus k\xc3\xb6ln", 11, &tmp) == 1);
  /* white space is not collapsed */
  CHECK(mime_search_header(&m, 0, "X-Folded", 8, "first second", 12, &tmp) == 0);
  CHECK(mime_search_header(&m, 0, "X-Folded", 8, "first  second", 13, &tmp) == 1);
  CHECK(mime_search_header(&m, 0, "To", 2, "", 0, &tmp) == 1);
  CHECK(mime_search_header(&m, 0, "Cc", 2, "", 0, &tmp) == 0);
  CHECK(mime_search_text(&m, 0, "M\xc3\xbc" "de und", 8, &tmp) == 1);  /* QP soft break, Latin-1 */
  CHECK(mime_search_text(&m, 0, "sch\xc3\xb6nes wetter", 15, &tmp) == 1); /* base64 html */
  CHECK(mime_search_text(&m, 0, "secret", 6, &tmp) == 0);    /* not a text part */
  CHECK(mime_search_text(&m, 0, "example.net", 11, &tmp) == 0); /* BODY: not the header */
  CHECK(mime_search_text(&m, 1, "example.net", 11, &tmp) == 1); /* TEXT: the header too */

  /* address fields are searched in their normalized form, comments dropped */
  parse(&m, "From: <user-from (comment)@ (comment) domain.org>\n"
            "To: =?utf-8?q?J=C3=B6rg?= <j@example.de>, list: a@b.c, d@e.f;\n"
            "Subject: (not a comment) x\n\nbody\n");
  CHECK(mime_search_header(&m, 0, "From", 4, "user-from@domain.org", 20, &tmp) == 1);
  CHECK(mime_search_header(&m, 0, "From", 4, "comment", 7, &tmp) == 0);
  CHECK(mime_search_header(&m, 0, "To", 2, "J\xc3\xb6rg <j@example.de>", 20, &tmp) == 1);
  CHECK(mime_search_header(&m, 0, "To", 2, "list: a@b.c, d@e.f;", 19, &tmp) == 1);
  CHECK(mime_search_header(&m, 0, "Subject", 7, "(not a comment)", 15, &tmp) == 1);
  parse(&m, msg);

  /* a body in KOI8-R is searched in UTF-8 */
  parse(&m, "Content-Type: text/plain; charset=KOI8-R\n\n\xf0\xd2\xc9\xd7\xc5\xd4 world\n");
  CHECK(mime_search_text(&m, 0, "\xd0\xb2\xd0\xb5\xd1\x82 wor", 10, &tmp) == 1);
  parse(&m, msg);

  /* dates */
  CHECK(mime_date(&m, 0, &t, &z) == 1);
  CHECK(t == 1796704200 && z == -300);
  CHECK((t + z * 60) / 86400 == 20794); /* 2026-12-07 in its own zone (the UTC day is the 8th) */
  CHECK(date_is("Thu, 1 Jan 1970 00:00:00 +0000", 0, 0));
  CHECK(date_is("1 Jan 1970 01:00 +0100", 0, 60));
  CHECK(date_is("5 Jan 99 23:59 EST", 915598740, -300));
  CHECK(date_is("Sat, 29 Feb 2020 12:00:00 GMT (comment)", 1582977600, 0));
  CHECK(date_is("  Tue ,  8  Dec  2026  17 : 00 : 00  -0500", 1796767200, -300));
  CHECK(date_is("8 December 2026 17:00:00 +0000", 1796749200, 0));
  CHECK(!mime_date_parse("32 Jan 2026 00:00:00 +0000", 26, &t, &z));
  CHECK(!mime_date_parse("31 Feb 2026 00:00", 17, &t, &z));
  CHECK(!mime_date_parse("yesterday", 9, &t, &z));
  CHECK(!mime_date_parse("", 0, &t, &z));

  /* section syntax */
  CHECK(section_ok(""));
  CHECK(section_ok("1.2.3"));
  CHECK(section_ok("HEADER"));
  CHECK(section_ok("2.text"));
  CHECK(section_ok("1.MIME"));
  CHECK(section_ok("HEADER.FIELDS (From \"To\" X-A)"));
  CHECK(section_ok("3.HEADER.FIELDS.NOT (Subject)"));
  CHECK(!section_ok("MIME"));
  CHECK(!section_ok("0"));
  CHECK(!section_ok("1."));
  CHECK(!section_ok("1..2"));
  CHECK(!section_ok("HEADER.FIELDS"));
  CHECK(!section_ok("HEADER.FIELDS ()"));
  CHECK(!section_ok("HEADER.FIELDS (a"));
  CHECK(!section_ok("TEXTX"));
  CHECK(!section_ok("99999999999"));

  /* partial fetches count wire octets */
  parse(&m, "Subject: x\n\nab\ncd\n");
  CHECK(mime_wire_size(m.s, m.len, 0) == 22);
  CHECK(cat_is(&m, "TEXT", 0, (size_t)-1, "ab\r\ncd\r\n"));
  CHECK(cat_is(&m, "TEXT", 2, 2, "\r\n"));
  CHECK(cat_is(&m, "TEXT", 3, 100, "\ncd\r\n"));
  CHECK(cat_is(&m, "TEXT", 8, 5, ""));
  CHECK(cat_is(&m, "", 0, 4, "Subj"));
  CHECK(cat_is(&m, "HEADER.FIELDS (SUBJECT)", 0, (size_t)-1, "Subject: x\r\n\r\n"));

  /* BINARY */
  parse(&m, msg);
  sa.len = 0;
  CHECK(mime_binary_cat(&sa, &m, 3) == 2 && sa.len == 11 && !memcmp(sa.s, "secret word", 11));
  sa.len = 0;
  {
    static char const want[] = "Der B\xe4r ist M\xfc" "de und schl\xe4" "ft.";
    CHECK(mime_binary_cat(&sa, &m, 1) == 2 && sa.len == sizeof want - 1
          && !memcmp(sa.s, want, sa.len));
  }
  {
    size_t size;
    CHECK(mime_binary_size(&m, 2, &size) == 2 && size == 22); /* <p>Sch\xc3\xb6nes Wetter</p> */
    CHECK(mime_binary_size(&m, 77, &size) == 1 && size == 0);
  }
  parse(&m, "Content-Transfer-Encoding: x-foo\n\nx\n");
  sa.len = 0;
  CHECK(mime_binary_cat(&sa, &m, 0) == -1);
  parse(&m, "Content-Transfer-Encoding: base64\n\n!!\n");
  CHECK(mime_binary_cat(&sa, &m, 0) == -3);

  /* limits: nesting deeper than MIME_DEPTH_MAX is not split further; the table bounds parts */
  {
    stralloc big = STRALLOC_ZERO;
    unsigned int i, maxdepth = 0;
    char b[80];
    for (i = 0; i < 200; i++) {
      snprintf(b, sizeof b, "Content-Type: multipart/mixed; boundary=n%u\n\n--n%u\n", i, i);
      stralloc_cats(&big, b);
    }
    stralloc_cats(&big, "\ndeep\n");
    mime_parse(&m, big.s, big.len, parts, 256);
    for (i = 0; i < m.n; i++)
      if (parts[i].depth > maxdepth) maxdepth = parts[i].depth;
    CHECK(maxdepth < MIME_DEPTH_MAX);
    sa.len = 0;
    CHECK(mime_bodystructure(&sa, &m, 0, 1) == 1);
    big.len = 0;
    stralloc_cats(&big, "Content-Type: multipart/mixed; boundary=p\n\n");
    for (i = 0; i < 5000; i++) stralloc_cats(&big, "--p\n\nx\n");
    stralloc_cats(&big, "--p--\n");
    CHECK(mime_parse(&m, big.s, big.len, parts, 256) == 256);
    CHECK(parts[0].nchild == 255);
    CHECK(parts[0].body_off + parts[0].body_len == big.len);
    sa.len = 0;
    CHECK(mime_bodystructure(&sa, &m, 0, 1) == 1);
    stralloc_free(&big);
  }
  /* an empty message */
  CHECK(mime_parse(&m, "", 0, parts, 256) == 1);
  sa.len = 0;
  CHECK(mime_bodystructure(&sa, &m, 0, 1) && sa.len && !memcmp(sa.s, "(\"text\" \"plain\"", 15));
  sa.len = 0;
  CHECK(mime_envelope(&sa, &m, 0) && sa.len == 41);
  stralloc_free(&sa);
  stralloc_free(&tmp);
  return CHECK_DONE();
}
