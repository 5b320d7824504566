/* unit: address syntax (lib/addr), RFC 5321 4.1.2 and the limits of 4.5.3.1 */
#include <stdlib.h>
#include <string.h>
#include <skalibs/stralloc.h>
#include "addr.h"
#include "check.h"
char const *PROG = "unit-addr";

static stralloc out = STRALLOC_ZERO;
static size_t end;

/* Parses the C string s as a path with flags; returns the result code. */
static int P(char const *s, unsigned int flags)
{
  return addr_parse_path(s, strlen(s), flags, &out, &end);
}

static int is(char const *want)
{
  return out.len == strlen(want) && !memcmp(out.s, want, out.len);
}

static int M(char const *s, unsigned int flags)
{
  return addr_check_mailbox(s, strlen(s), flags);
}

/* "<" + local part of ln 'a's + "@" + domain of dn octets (labels of 'b's) + ">" */
static char *make(size_t ln, size_t dn, int brackets)
{
  char *s = malloc(ln + dn + 4), *p = s;
  size_t i;
  if (brackets) *p++ = '<';
  for (i = 0; i < ln; i++) *p++ = 'a';
  *p++ = '@';
  for (i = 0; i < dn; i++) *p++ = (i % 50 == 49 && i + 1 < dn) ? '.' : 'b';
  if (brackets) *p++ = '>';
  *p = 0;
  return s;
}

int main(void)
{
  char *s;

  /* the null path */
  CHECK(P("<>", ADDR_ALLOW_NULL) == ADDR_OK && out.len == 0 && end == 2);
  CHECK(P("<>", 0) == ADDR_ESYNTAX);

  /* plain */
  CHECK(P("<a@b>", 0) == ADDR_OK && is("a@b") && end == 5);
  CHECK(P("<user@example.test> SIZE=10", 0) == ADDR_OK && is("user@example.test") && end == 19);
  CHECK(P("  <a@b>", 0) == ADDR_OK && is("a@b") && end == 7); /* spaces before '<' */
  CHECK(P("<First.Last@Sub.Example.TEST>", 0) == ADDR_OK && is("First.Last@Sub.Example.TEST"));
  CHECK(P("<a%b@local>", 0) == ADDR_OK && is("a%b@local")); /* no percent hack */
  CHECK(P("<a!b@local>", 0) == ADDR_OK && is("a!b@local")); /* no bang path */
  CHECK(P("<a-b@x-y.test>", 0) == ADDR_OK);

  /* missing parts */
  CHECK(P("<a>", 0) == ADDR_ESYNTAX);
  CHECK(P("<postmaster>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@>", 0) == ADDR_ESYNTAX);
  CHECK(P("<@a>", 0) == ADDR_ESYNTAX);
  CHECK(P("<@>", 0) == ADDR_ESYNTAX);
  CHECK(P("<", 0) == ADDR_ESYNTAX);
  CHECK(P("", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@b", 0) == ADDR_ESYNTAX);
  CHECK(P("a@b", 0) == ADDR_ESYNTAX); /* brackets required ... */
  CHECK(P("a@b", ADDR_LOOSE) == ADDR_OK && is("a@b") && end == 3); /* ... unless loose */
  CHECK(P("<a@b>", ADDR_LOOSE) == ADDR_OK && is("a@b"));

  /* spaces inside the brackets */
  CHECK(P("< a@b>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@b >", 0) == ADDR_ESYNTAX);
  CHECK(P("<a @b>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@ b>", 0) == ADDR_ESYNTAX);

  /* dots */
  CHECK(P("<a@b.>", 0) == ADDR_ESYNTAX);    /* trailing dot in the domain */
  CHECK(P("<a@.b>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@b..c>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a.@b>", 0) == ADDR_ESYNTAX);
  CHECK(P("<.a@b>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a..b@c>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@-b.c>", 0) == ADDR_ESYNTAX);  /* label starts with a hyphen */
  CHECK(P("<a@b-.c>", 0) == ADDR_ESYNTAX);  /* label ends with a hyphen */
  CHECK(P("<a@b_c.d>", 0) == ADDR_ESYNTAX);

  /* shell and other junk */
  CHECK(P("<;sleep 5;@x>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a;b@x>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a(b)@x>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a,b@x>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a<b@x>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@b@c>", 0) == ADDR_ESYNTAX);

  /* NUL, CR, LF */
  CHECK(addr_parse_path("<a\0b@c>", 7, 0, &out, &end) == ADDR_ESYNTAX);
  CHECK(addr_parse_path("<ab@c\0>", 7, 0, &out, &end) == ADDR_ESYNTAX);
  CHECK(addr_parse_path("<\"a\0b\"@c>", 9, 0, &out, &end) == ADDR_ESYNTAX);
  CHECK(P("<a\rb@c>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a\nb@c>", 0) == ADDR_ESYNTAX);
  CHECK(P("<\"a\r\nb\"@c>", 0) == ADDR_ESYNTAX);
  CHECK(addr_check_mailbox("a@b\0", 4, 0) == ADDR_ESYNTAX);
  /* the parser reads only what it was given: a length cutting the address short */
  CHECK(addr_parse_path("<a@b>", 4, 0, &out, &end) == ADDR_ESYNTAX);

  /* source routes: accepted and dropped */
  CHECK(P("<@x,@y:u@d>", 0) == ADDR_OK && is("u@d") && end == 11);
  CHECK(P("<@relay.test:u@d>", 0) == ADDR_OK && is("u@d"));
  CHECK(P("<@x,y:u@d>", 0) == ADDR_ESYNTAX);
  CHECK(P("<@x:>", 0) == ADDR_ESYNTAX);
  CHECK(P("<@x,@y u@d>", 0) == ADDR_ESYNTAX);
  CHECK(P("<@:u@d>", 0) == ADDR_ESYNTAX);

  /* quoted local parts: kept with their quotes */
  CHECK(P("<\"a@b\"@c>", 0) == ADDR_OK && is("\"a@b\"@c"));
  CHECK(addr_at(out.s, out.len) == 5);
  CHECK(P("<\"john doe\"@example.test>", 0) == ADDR_OK && is("\"john doe\"@example.test"));
  CHECK(P("<\"a\\\"b\"@c>", 0) == ADDR_OK && is("\"a\\\"b\"@c"));   /* "a\"b"@c */
  CHECK(P("<\"a\\\\\"@c>", 0) == ADDR_OK);                         /* "a\\"@c */
  CHECK(P("<\"\"@c>", 0) == ADDR_OK);                              /* empty quoted string */
  CHECK(P("<\"a\"b@c>", 0) == ADDR_ESYNTAX);                       /* quote then atom */
  CHECK(P("<\"a@c>", 0) == ADDR_ESYNTAX);                          /* unterminated */
  CHECK(P("<\"a\\\"@c>", 0) == ADDR_ESYNTAX);                      /* escaped closing quote */
  CHECK(P("<\"a\tb\"@c>", 0) == ADDR_ESYNTAX);                     /* HT is not qtextSMTP */

  /* addr_at finds the last '@' outside quotes */
  CHECK(addr_at("a@b", 3) == 1);
  CHECK(addr_at("\"x@y\"@z", 7) == 5);
  CHECK(addr_at("\"x\\\"@y\"@z", 9) == 7);
  CHECK(addr_at("abc", 3) == 3);

  /* address literals */
  CHECK(P("<a@[1.2.3.4]>", 0) == ADDR_OK && is("a@[1.2.3.4]"));
  CHECK(P("<a@[255.255.255.255]>", 0) == ADDR_OK);
  CHECK(P("<a@[256.1.1.1]>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@[1.2.3]>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@[1.2.3.4.5]>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@[0001.2.3.4]>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@[IPv6:2001:db8::1]>", 0) == ADDR_OK && is("a@[IPv6:2001:db8::1]"));
  CHECK(P("<a@[IPv6:::1]>", 0) == ADDR_OK);
  CHECK(P("<a@[IPv6:::ffff:1.2.3.4]>", 0) == ADDR_OK);
  CHECK(P("<a@[IPv6:2001:db8::g]>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@[IPv6:]>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@[2001:db8::1]>", 0) == ADDR_ESYNTAX);  /* IPv6 needs its tag */
  CHECK(P("<a@[x-tag:stuff]>", 0) == ADDR_ESYNTAX);  /* general literals refused */
  CHECK(P("<a@[1.2.3.4>", 0) == ADDR_ESYNTAX);
  CHECK(P("<a@[1.2.3.4]x>", 0) == ADDR_ESYNTAX);
  CHECK(addr_is_literal("[1.2.3.4]", 9) && !addr_is_literal("example.test", 12));
  CHECK(!addr_is_literal("[", 1));

  /* 8-bit: refused without SMTPUTF8, valid UTF-8 accepted with it */
  CHECK(P("<j\xc3\xb6rg@example.test>", 0) == ADDR_E8BIT);
  CHECK(P("<j\xc3\xb6rg@example.test>", ADDR_UTF8) == ADDR_OK);
  CHECK(P("<a@b\xc3\xbc" "cher.test>", 0) == ADDR_E8BIT);
  CHECK(P("<a@b\xc3\xbc" "cher.test>", ADDR_UTF8) == ADDR_OK);
  CHECK(P("<\"\xe2\x82\xac\"@x>", ADDR_UTF8) == ADDR_OK);  /* euro sign, quoted */
  CHECK(P("<\xff@x>", ADDR_UTF8) == ADDR_ESYNTAX);           /* not UTF-8 */
  CHECK(P("<\xc3@x>", ADDR_UTF8) == ADDR_ESYNTAX);           /* truncated sequence */
  CHECK(P("<\xc0\xaf@x>", ADDR_UTF8) == ADDR_ESYNTAX);       /* overlong '/' */
  CHECK(P("<\xed\xa0\x80@x>", ADDR_UTF8) == ADDR_ESYNTAX);   /* surrogate */
  CHECK(P("<\xf4\x90\x80\x80@x>", ADDR_UTF8) == ADDR_ESYNTAX); /* above U+10FFFF */
  CHECK(P("<\xff@x>", 0) == ADDR_E8BIT);

  /* limits: local part 64, domain 255, path 256 (and one past each) */
  s = make(64, 10, 1);
  CHECK(P(s, 0) == ADDR_OK);
  free(s);
  s = make(65, 10, 1);
  CHECK(P(s, 0) == ADDR_ELOCAL);
  free(s);
  s = make(64, 10, 0);
  CHECK(M(s, 0) == ADDR_OK);
  free(s);
  s = make(65, 10, 0);
  CHECK(M(s, 0) == ADDR_ELOCAL);
  free(s);
  s = make(1, 252, 0); /* 1 + 1 + 252 = 254: the longest mailbox that fits a 256-octet path */
  CHECK(M(s, 0) == ADDR_OK);
  free(s);
  s = make(1, 253, 0);
  CHECK(M(s, 0) == ADDR_EPATH);
  free(s);
  s = make(1, 255, 0);
  CHECK(M(s, 0) == ADDR_EPATH);  /* domain itself within 255 */
  free(s);
  s = make(1, 256, 0);
  CHECK(M(s, 0) == ADDR_EDOMAIN);
  free(s);
  s = make(1, 252, 1); /* path of exactly 256 octets */
  CHECK(strlen(s) == 256 && P(s, 0) == ADDR_OK);
  free(s);
  s = make(1, 253, 1); /* 257 */
  CHECK(P(s, 0) == ADDR_EPATH);
  free(s);
  s = make(64, 189, 1); /* 256 with a full local part */
  CHECK(strlen(s) == 256 && P(s, 0) == ADDR_OK);
  free(s);
  s = make(64, 190, 1);
  CHECK(P(s, 0) == ADDR_EPATH);
  free(s);
  s = make(1, 256, 1);
  CHECK(P(s, 0) == ADDR_EDOMAIN);
  free(s);
  {
    /* a label of 63 octets is fine, 64 is not */
    char buf[80] = "a@";
    memset(buf + 2, 'c', 63);
    buf[65] = 0;
    CHECK(M(buf, 0) == ADDR_OK);
    buf[65] = 'c';
    buf[66] = 0;
    CHECK(M(buf, 0) == ADDR_ESYNTAX);
  }

  /* folding */
  CHECK(addr_fold("Demo+Tag@Example.TEST", 21, &out) && is("demo+tag@example.test"));
  CHECK(addr_fold("\xc3\x84@X", 4, &out) && out.len == 4 && !memcmp(out.s, "\xc3\x84@x", 4));
  CHECK(strcmp(addr_strerror(ADDR_EPATH), addr_strerror(ADDR_ESYNTAX)) != 0);

  /* properties over many random paths (run under ASan by make check SANITIZE=1): the parser
   * never reads past len, and whatever it accepts is a mailbox within the limits */
  {
    static char const alpha[] = "ab.@<>\"\\ :,[]0129IPv6:-+;\r\n\x80\xc3\xa9\xff";
    unsigned long seed = 12345;
    long iter;
    int bad = 0;
    for (iter = 0; iter < 200000 && bad < 5; iter++) {
      char *buf;
      size_t n, k;
      int r, bad0 = bad;
      unsigned int flags;
      seed = seed * 6364136223846793005UL + 1442695040888963407UL;
      n = (seed >> 33) % 24;
      flags = (seed >> 20) & 7;
      buf = malloc(n ? n : 1); /* exact size: ASan sees any overread */
      for (k = 0; k < n; k++) {
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        buf[k] = alpha[(seed >> 33) % (sizeof alpha - 1)];
      }
      if (n > 2 && (seed & 1)) { /* often a plausible frame */
        buf[0] = '<';
        buf[n - 1] = '>';
      }
      r = addr_parse_path(buf, n, flags, &out, &end);
      if (r == ADDR_OK) {
        if (end > n) bad++;
        if (out.len) {
          size_t at = addr_at(out.s, out.len);
          if (addr_check_mailbox(out.s, out.len, flags & ADDR_UTF8) != ADDR_OK) bad++;
          if (at >= out.len || at > ADDR_LOCAL_MAX || out.len - at - 1 > ADDR_DOMAIN_MAX) bad++;
          if (memchr(out.s, 0, out.len) || memchr(out.s, '\r', out.len) ||
              memchr(out.s, '\n', out.len) || (memchr(out.s, ' ', out.len) && out.s[0] != '"'))
            bad++;
          if (!(flags & ADDR_UTF8))
            for (k = 0; k < out.len; k++)
              if ((unsigned char)out.s[k] >= 0x80) bad++;
        } else if (!(flags & ADDR_ALLOW_NULL))
          bad++;
      } else if (r != ADDR_ESYNTAX && r != ADDR_ELOCAL && r != ADDR_EDOMAIN && r != ADDR_EPATH &&
                 r != ADDR_E8BIT)
        bad++;
      if (bad != bad0) fprintf(stderr, "property failed on input %.*s\n", (int)n, buf);
      addr_at(buf, n);
      addr_is_literal(buf, n);
      free(buf);
    }
    CHECK(bad == 0);
  }

  return CHECK_DONE();
}
