/* unit: dns address literals and formatting (no network) */
#include <string.h>
#include "dns.h"
#include "check.h"
char const *PROG = "unit-dns";

static dns_result r;

int main(void)
{
  int is6;
  unsigned char ip[16];
  char buf[64];
  CHECK(dns_literal("[192.0.2.1]", 11, &is6, ip) == 1 && !is6 && ip[0] == 192 && ip[3] == 1);
  CHECK(dns_literal("[IPv6:2001:db8::1]", 18, &is6, ip) == 1 && is6 && ip[0] == 0x20 &&
        ip[15] == 1);
  CHECK(dns_literal("[ipv6:::1]", 10, &is6, ip) == 1 && is6 && ip[15] == 1);
  CHECK(dns_literal("[::1]", 5, &is6, ip) == 1 && is6);
  CHECK(dns_literal("[192.0.2.256]", 13, &is6, ip) == 0);
  CHECK(dns_literal("[IPv6:192.0.2.1]", 16, &is6, ip) == 0);
  CHECK(dns_literal("192.0.2.1", 9, &is6, ip) == 0);
  CHECK(dns_literal("[192.0.2.1", 10, &is6, ip) == 0);
  CHECK(dns_literal("[]", 2, &is6, ip) == 0);
  CHECK(dns_literal("[1.2.3.4]", 5, &is6, ip) == 0); /* length is what counts */
  {
    char big[200];
    memset(big, '1', sizeof big);
    big[0] = '[';
    big[199] = ']';
    CHECK(dns_literal(big, sizeof big, &is6, ip) == 0);
  }
  /* literals go through dns_mx without any DNS traffic */
  CHECK(dns_mx("[127.0.0.9]", &r) == DNS_OK && r.n == 1 && r.t[0].pref == 0 && !r.t[0].is6);
  CHECK(!strcmp(dns_fmt_ip(&r.t[0], buf), "127.0.0.9") && !strcmp(r.t[0].host, "[127.0.0.9]"));
  CHECK(dns_mx("[IPv6:::1]", &r) == DNS_OK && r.n == 1 && !strcmp(dns_fmt_ip(&r.t[0], buf), "::1"));
  CHECK(dns_mx("[999.1.1.1]", &r) == DNS_PERM && strstr(r.why, "literal"));
  /* invalid names are refused before any query */
  CHECK(dns_mx("a..b", &r) == DNS_PERM && strstr(r.why, "invalid"));
  CHECK(dns_mx("", &r) == DNS_PERM);
  CHECK(dns_mx("bad_\x01.test", &r) == DNS_PERM);
  CHECK(dns_host("x y.test", 0, &r) == DNS_PERM);
  {
    /* replies parsed without a network: a reply to "example.test" MX with two MX records
     * (one name compressed), then a null MX, then a CNAME chain, then a loop of CNAMEs */
    static unsigned char const q[] = "\x12\x34\x81\x80\x00\x01\x00\x02\x00\x00\x00\x00"
                                     "\x07" "example" "\x04" "test" "\x00" "\x00\x0f\x00\x01"
                                     /* MX 10 mx1.example.test */
                                     "\xc0\x0c\x00\x0f\x00\x01\x00\x00\x00\x3c\x00\x08"
                                     "\x00\x0a\x03mx1\xc0\x0c"
                                     /* MX 20 mx2.other (uncompressed) */
                                     "\xc0\x0c\x00\x0f\x00\x01\x00\x00\x00\x3c\x00\x0d"
                                     "\x00\x14\x03mx2\x05other\x00";
    unsigned char b[sizeof q];
    int n = dns_parse_reply(q, sizeof q - 1, "example.test", 1, &r);
    CHECK(n == 2 && r.n == 2);
    CHECK(n == 2 && r.t[0].pref == 10 && !strcmp(r.t[0].host, "mx1.example.test"));
    CHECK(n == 2 && r.t[1].pref == 20 && !strcmp(r.t[1].host, "mx2.other"));
    /* the same reply for another name: no record belongs to it */
    CHECK(dns_parse_reply(q, sizeof q - 1, "example.org", 1, &r) == 0);
    /* truncated anywhere: malformed, never a crash */
    {
      size_t cut;
      int bad = 0;
      for (cut = 0; cut < sizeof q - 1; cut++)
        if (dns_parse_reply(q, (int)cut, "example.test", 1, &r) >= 0) bad++;
      CHECK(bad == 0);
    }
    /* rdata length that runs past the name: malformed */
    memcpy(b, q, sizeof q);
    b[41] = 0x09;
    CHECK(dns_parse_reply(b, sizeof q - 1, "example.test", 1, &r) == -1);
  }
  {
    static unsigned char const nullmx[] = "\x00\x01\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
                                          "\x01" "n" "\x04" "test" "\x00" "\x00\x0f\x00\x01"
                                          "\xc0\x0c\x00\x0f\x00\x01\x00\x00\x00\x3c\x00\x03"
                                          "\x00\x00\x00";
    CHECK(dns_parse_reply(nullmx, sizeof nullmx - 1, "n.test", 1, &r) == -2);
  }
  {
    /* a.test CNAME b.test, b.test A 127.0.0.2 and AAAA ::1; c.test A (not in the chain) */
    static unsigned char const cn[] =
      "\x00\x01\x81\x80\x00\x01\x00\x04\x00\x00\x00\x00"
      "\x01" "a" "\x04" "test" "\x00" "\x00\x01\x00\x01"
      "\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x04"
      "\x01" "b" "\xc0\x0e"
      "\x01" "b" "\xc0\x0e" "\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04"
      "\x7f\x00\x00\x02"
      "\x01" "b" "\xc0\x0e" "\x00\x1c\x00\x01\x00\x00\x00\x3c\x00\x10"
      "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
      "\x01" "c" "\xc0\x0e" "\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04"
      "\x7f\x00\x00\x03";
    char ipb[64];
    CHECK(dns_parse_reply(cn, sizeof cn - 1, "a.test", 0, &r) == 2 && r.n == 2);
    CHECK(r.n == 2 && r.t[0].is6 && !strcmp(dns_fmt_ip(&r.t[0], ipb), "::1"));
    CHECK(r.n == 2 && !r.t[1].is6 && !strcmp(dns_fmt_ip(&r.t[1], ipb), "127.0.0.2"));
    CHECK(r.n == 2 && !strcmp(r.t[1].host, "a.test"));
  }
  return CHECK_DONE();
}
