/* libFuzzer target: DNS replies as lib/dns parses them (MX, CNAME chains, A/AAAA).
 * The first input byte chooses MX (odd) or address (even) parsing; the rest is the reply to a
 * query for "example.test". Built and run by tests/test_dns.py. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dns.h"

char const *PROG = "dns_fuzz";
static dns_result r;

int LLVMFuzzerTestOneInput(uint8_t const *data, size_t size)
{
  int n;
  size_t i;
  if (!size || size > 65536) return 0;
  n = dns_parse_reply(data + 1, (int)(size - 1), "example.test", data[0] & 1, &r);
  if (n < -2) abort();
  if (r.n > DNS_TARGETS_MAX) abort();
  for (i = 0; i < r.n; i++)
    if (strlen(r.t[i].host) > DNS_NAME_MAX) abort();
  return 0;
}
