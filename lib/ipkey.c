/* ipkey: see ipkey.h */
#include <arpa/inet.h>
#include <string.h>

#include "control.h"
#include "ipkey.h"

size_t ipkey(char const *ip, unsigned int v6bits, char *out)
{
  unsigned char a[16];
  static char const hex[] = "0123456789abcdef";
  size_t n = 0, i;
  if (!ip) ip = "unknown";
  if (!v6bits || v6bits > 128) v6bits = IPKEY_V6PREFIX;
  if (inet_pton(AF_INET, ip, a) == 1 ||
      (!strncmp(ip, "::ffff:", 7) && strchr(ip + 7, '.') && inet_pton(AF_INET, ip + 7, a) == 1)) {
    if (!inet_ntop(AF_INET, a, out, IPKEY_MAX)) { out[0] = 0; return 0; }
    return strlen(out);
  }
  if (inet_pton(AF_INET6, ip, a) == 1) {
    for (i = 0; i < 16; i++) {
      unsigned int keep = v6bits >= (i + 1) * 8 ? 8 : v6bits > i * 8 ? v6bits - i * 8 : 0;
      unsigned char b = keep ? (unsigned char)(a[i] & (0xff << (8 - keep))) : 0;
      out[n++] = hex[b >> 4];
      out[n++] = hex[b & 15];
    }
    out[n++] = '-';
    if (v6bits >= 100) out[n++] = (char)('0' + v6bits / 100);
    if (v6bits >= 10) out[n++] = (char)('0' + (v6bits / 10) % 10);
    out[n++] = (char)('0' + v6bits % 10);
    out[n] = 0;
    return n;
  }
  out[n++] = 'x';
  for (i = 0; ip[i] && n < 40; i++) {
    char c = ip[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-' || c == '_';
    out[n++] = ok ? c : '_';
  }
  out[n] = 0;
  return n;
}

unsigned int ipkey_v6prefix(void)
{
  unsigned long u;
  if (control_readuint("ipv6-prefix", IPKEY_V6PREFIX, &u) != 1 || !u || u > 128)
    return IPKEY_V6PREFIX;
  return (unsigned int)u;
}
