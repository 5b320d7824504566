/* addr: see addr.h. RFC 5321 4.1.2 (Mailbox, Local-part, Domain, address-literal),
 * RFC 6531 3.3 (UTF-8 in local parts and domains when SMTPUTF8 is in effect).
 *
 * Every function reads only s[0..len) and never needs a terminating NUL. */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include <skalibs/stralloc.h>

#include "addr.h"

/* RFC 5321 atext (RFC 5322 3.2.3) */
static int is_atext(unsigned char c)
{
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("!#$%&'*+-/=?^_`{|}~", c) != 0;
}

static int is_letdig(unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Length of one well-formed UTF-8 sequence of two or more bytes at s[i..len), or 0 (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(unsigned char const *s, size_t i, size_t len)
{
  unsigned char c = s[i];
  size_t n, k;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) n = 3;
  else if (c >= 0xf0 && c <= 0xf4) n = 4;
  else return 0;
  if (len - i < n) return 0;
  for (k = 1; k < n; k++)
    if ((s[i + k] & 0xc0) != 0x80) return 0;
  if (c == 0xe0 && s[i + 1] < 0xa0) return 0;  /* overlong */
  if (c == 0xed && s[i + 1] >= 0xa0) return 0; /* surrogates */
  if (c == 0xf0 && s[i + 1] < 0x90) return 0;  /* overlong */
  if (c == 0xf4 && s[i + 1] >= 0x90) return 0; /* > U+10FFFF */
  return n;
}

/* A non-ASCII byte at s[i]: the length of its UTF-8 sequence, or an error. */
static int eight_bit(unsigned char const *s, size_t i, size_t len, unsigned int flags, size_t *n)
{
  if (!(flags & ADDR_UTF8)) return ADDR_E8BIT;
  *n = utf8_len(s, i, len);
  return *n ? ADDR_OK : ADDR_ESYNTAX;
}

/* Local-part = Dot-string / Quoted-string, starting at s[i]. Sets *j just past it. */
static int scan_local(unsigned char const *s, size_t i, size_t len, unsigned int flags, size_t *j)
{
  size_t n;
  int r;
  if (i < len && s[i] == '"') {
    i++;
    for (;;) {
      if (i >= len) return ADDR_ESYNTAX;
      if (s[i] == '"') break;
      if (s[i] == '\\') {
        if (i + 1 >= len) return ADDR_ESYNTAX;
        if (s[i + 1] >= 0x80) {
          r = eight_bit(s, i + 1, len, flags, &n);
          if (r) return r;
          i += 1 + n;
          continue;
        }
        if (s[i + 1] < 32 || s[i + 1] > 126) return ADDR_ESYNTAX;
        i += 2;
        continue;
      }
      if (s[i] >= 0x80) {
        r = eight_bit(s, i, len, flags, &n);
        if (r) return r;
        i += n;
        continue;
      }
      if (s[i] < 32 || s[i] > 126) return ADDR_ESYNTAX; /* NUL, CR, LF, DEL, controls */
      i++;
    }
    *j = i + 1;
    return ADDR_OK;
  }
  for (;;) { /* Atom *("." Atom) */
    size_t start = i;
    while (i < len) {
      if (s[i] >= 0x80) {
        r = eight_bit(s, i, len, flags, &n);
        if (r) return r;
        i += n;
      } else if (is_atext(s[i]))
        i++;
      else
        break;
    }
    if (i == start) return ADDR_ESYNTAX;
    if (i < len && s[i] == '.') {
      i++;
      continue;
    }
    break;
  }
  *j = i;
  return ADDR_OK;
}

/* sub-domain *("." sub-domain), where sub-domain = Let-dig [Ldh-str] / U-label. */
static int scan_domain_name(unsigned char const *s, size_t i, size_t len, unsigned int flags,
                            size_t *j)
{
  size_t n;
  int r;
  for (;;) {
    size_t start = i;
    int last_hyphen = 0;
    while (i < len) {
      if (s[i] >= 0x80) {
        r = eight_bit(s, i, len, flags, &n);
        if (r) return r;
        i += n;
        last_hyphen = 0;
      } else if (is_letdig(s[i])) {
        i++;
        last_hyphen = 0;
      } else if (s[i] == '-' && i > start) {
        i++;
        last_hyphen = 1;
      } else
        break;
    }
    if (i == start || last_hyphen) return ADDR_ESYNTAX;
    if (i - start > 63) return ADDR_ESYNTAX; /* a DNS label (RFC 1035 2.3.4) */
    if (i < len && s[i] == '.') {
      i++;
      continue;
    }
    break;
  }
  *j = i;
  return ADDR_OK;
}

/* IPv4-address-literal: Snum 3("." Snum), Snum = 1*3DIGIT with value 0..255. */
static int ipv4_ok(unsigned char const *s, size_t len)
{
  size_t i = 0;
  int k;
  for (k = 0; k < 4; k++) {
    unsigned int v = 0, d = 0;
    if (k) {
      if (i >= len || s[i] != '.') return 0;
      i++;
    }
    while (i < len && s[i] >= '0' && s[i] <= '9' && d < 4) {
      v = v * 10 + (s[i] - '0');
      i++;
      d++;
    }
    if (!d || d > 3 || v > 255) return 0;
  }
  return i == len;
}

/* address-literal = "[" (IPv4-address-literal / "IPv6:" IPv6-addr) "]" at s[i], i at '['.
 * General-address-literal is refused: no tag besides IPv6 is registered (RFC 5321 4.1.3). */
static int scan_literal(unsigned char const *s, size_t i, size_t len, size_t *j)
{
  size_t k = i + 1;
  while (k < len && s[k] != ']') {
    if (s[k] < 33 || s[k] > 126 || s[k] == '[' || s[k] == '\\') return ADDR_ESYNTAX;
    k++;
  }
  if (k >= len) return ADDR_ESYNTAX;
  {
    unsigned char const *in = s + i + 1;
    size_t n = k - i - 1;
    if (n >= 5 && !memcmp(in, "IPv6:", 5)) {
      char buf[64];
      unsigned char a6[16];
      if (n - 5 >= sizeof buf || n == 5) return ADDR_ESYNTAX;
      memcpy(buf, in + 5, n - 5);
      buf[n - 5] = 0;
      if (inet_pton(AF_INET6, buf, a6) != 1) return ADDR_ESYNTAX;
    } else if (!ipv4_ok(in, n))
      return ADDR_ESYNTAX;
  }
  *j = k + 1;
  return ADDR_OK;
}

/* Mailbox = Local-part "@" ( Domain / address-literal ) at s[i]; *j just past it. */
static int scan_mailbox(unsigned char const *s, size_t i, size_t len, unsigned int flags,
                        size_t *j)
{
  size_t k, d;
  int r = scan_local(s, i, len, flags, &k);
  if (r) return r;
  if (k >= len || s[k] != '@') return ADDR_ESYNTAX;
  if (k - i > ADDR_LOCAL_MAX) return ADDR_ELOCAL;
  d = k + 1;
  if (d < len && s[d] == '[')
    r = scan_literal(s, d, len, j);
  else
    r = scan_domain_name(s, d, len, flags, j);
  if (r) return r;
  if (*j - d > ADDR_DOMAIN_MAX) return ADDR_EDOMAIN;
  return ADDR_OK;
}

int addr_check_mailbox(char const *s, size_t len, unsigned int flags)
{
  size_t j;
  int r = scan_mailbox((unsigned char const *)s, 0, len, flags, &j);
  if (r) return r;
  if (j != len) return ADDR_ESYNTAX;
  if (len + 2 > ADDR_PATH_MAX) return ADDR_EPATH;
  return ADDR_OK;
}

int addr_parse_path(char const *s0, size_t len, unsigned int flags, stralloc *out, size_t *end)
{
  unsigned char const *s = (unsigned char const *)s0;
  size_t i = 0, open, m, j;
  int r;
  while (i < len && s[i] == ' ') i++;
  if (i >= len) return ADDR_ESYNTAX;
  if (s[i] != '<') {
    if (!(flags & ADDR_LOOSE)) return ADDR_ESYNTAX;
    r = addr_check_mailbox(s0 + i, len - i, flags);
    if (r) return r;
    out->len = 0;
    if (!stralloc_catb(out, s0 + i, len - i)) return ADDR_ESYNTAX;
    *end = len;
    return ADDR_OK;
  }
  open = i++;
  if (i < len && s[i] == '>') {
    if (!(flags & ADDR_ALLOW_NULL)) return ADDR_ESYNTAX;
    out->len = 0;
    *end = i + 1;
    return ADDR_OK;
  }
  if (i < len && s[i] == '@') { /* A-d-l ":" : At-domain *( "," At-domain ) */
    for (;;) {
      if (i >= len || s[i] != '@') return ADDR_ESYNTAX;
      r = scan_domain_name(s, i + 1, len, flags, &j);
      if (r) return r;
      if (j - i - 1 > ADDR_DOMAIN_MAX) return ADDR_EDOMAIN;
      i = j;
      if (i < len && s[i] == ',') {
        i++;
        continue;
      }
      if (i < len && s[i] == ':') {
        i++;
        break;
      }
      return ADDR_ESYNTAX;
    }
  }
  m = i;
  r = scan_mailbox(s, m, len, flags, &j);
  if (r) return r;
  if (j >= len || s[j] != '>') return ADDR_ESYNTAX;
  if (j + 1 - open > ADDR_PATH_MAX) return ADDR_EPATH;
  out->len = 0;
  if (!stralloc_catb(out, s0 + m, j - m)) return ADDR_ESYNTAX;
  *end = j + 1;
  return ADDR_OK;
}

size_t addr_at(char const *s, size_t len)
{
  size_t i, at = len;
  int q = 0;
  for (i = 0; i < len; i++) {
    if (q) {
      if (s[i] == '\\' && i + 1 < len) i++;
      else if (s[i] == '"') q = 0;
    } else if (s[i] == '"')
      q = 1;
    else if (s[i] == '@')
      at = i;
  }
  return at;
}

int addr_is_literal(char const *dom, size_t len)
{
  return len >= 2 && dom[0] == '[' && dom[len - 1] == ']';
}

int addr_fold(char const *s, size_t len, stralloc *out)
{
  size_t i;
  out->len = 0;
  if (!stralloc_readyplus(out, len + 1)) return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    out->s[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  out->len = len;
  return 1;
}

char const *addr_strerror(int e)
{
  switch (e) {
  case ADDR_OK: return "ok";
  case ADDR_ESYNTAX: return "syntax error in address";
  case ADDR_ELOCAL: return "local part too long";
  case ADDR_EDOMAIN: return "domain too long";
  case ADDR_EPATH: return "path too long";
  case ADDR_E8BIT: return "non-ASCII address without SMTPUTF8";
  default: return "unknown address error";
  }
}
