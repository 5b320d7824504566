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
  CHECK(dns_literal("[IPv6:2001:db8::1]", 18, &is6, ip) == 1 && is6 && ip[0] == 0x20 && ip[15] == 1);
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
  return CHECK_DONE();
}
