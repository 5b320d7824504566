/* sasl: see sasl.h */
#include <string.h>

#include "sasl.h"

static char const b64alpha[64] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for an alphabet byte, 64 for '=', 255 for anything else. */
static unsigned char b64val(unsigned char c)
{
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  if (c == '=') return 64;
  return 255;
}

int sasl_b64_decode(char const *in, size_t inlen, char *out, size_t outmax, size_t *outlen)
{
  size_t i, o = 0;
  *outlen = 0;
  if (inlen == 1 && in[0] == '=') return SASL_OK;
  if (inlen % 4) return SASL_EBASE64;
  for (i = 0; i < inlen; i += 4) {
    unsigned char v[4];
    unsigned int j, pad = 0, n;
    unsigned long w;
    for (j = 0; j < 4; j++) {
      v[j] = b64val((unsigned char)in[i + j]);
      if (v[j] == 255) return SASL_EBASE64;
      if (v[j] == 64) {
        /* '=' only in the last quantum, only in positions 2 and 3, and then to the end */
        if (i + 4 != inlen || j < 2) return SASL_EBASE64;
        pad++;
      } else if (pad) return SASL_EBASE64;
    }
    w = ((unsigned long)(v[0] & 63) << 18) | ((unsigned long)(v[1] & 63) << 12) |
        ((unsigned long)(pad >= 2 ? 0 : v[2] & 63) << 6) |
        (unsigned long)(pad >= 1 ? 0 : v[3] & 63);
    /* the bits under the padding must be zero (canonical encoding) */
    if (pad == 2 && (v[1] & 15)) return SASL_EBASE64;
    if (pad == 1 && (v[2] & 3)) return SASL_EBASE64;
    n = 3 - pad;
    if (o + n > outmax) return SASL_ETOOLONG;
    out[o++] = (char)((w >> 16) & 255);
    if (n > 1) out[o++] = (char)((w >> 8) & 255);
    if (n > 2) out[o++] = (char)(w & 255);
  }
  *outlen = o;
  return SASL_OK;
}

size_t sasl_b64_encode(char const *in, size_t inlen, char *out)
{
  unsigned char const *s = (unsigned char const *)in;
  size_t i, o = 0;
  for (i = 0; i + 3 <= inlen; i += 3) {
    unsigned long w = ((unsigned long)s[i] << 16) | ((unsigned long)s[i + 1] << 8) | s[i + 2];
    out[o++] = b64alpha[(w >> 18) & 63];
    out[o++] = b64alpha[(w >> 12) & 63];
    out[o++] = b64alpha[(w >> 6) & 63];
    out[o++] = b64alpha[w & 63];
  }
  if (inlen - i == 1) {
    unsigned long w = (unsigned long)s[i] << 16;
    out[o++] = b64alpha[(w >> 18) & 63];
    out[o++] = b64alpha[(w >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (inlen - i == 2) {
    unsigned long w = ((unsigned long)s[i] << 16) | ((unsigned long)s[i + 1] << 8);
    out[o++] = b64alpha[(w >> 18) & 63];
    out[o++] = b64alpha[(w >> 12) & 63];
    out[o++] = b64alpha[(w >> 6) & 63];
    out[o++] = '=';
  }
  return o;
}

int sasl_is_cancel(char const *s, size_t len)
{
  return len == 1 && s[0] == '*';
}

static int eqnocase(char const *a, size_t alen, char const *b)
{
  size_t i;
  if (alen != strlen(b)) return 0;
  for (i = 0; i < alen; i++) {
    unsigned char c = (unsigned char)a[i];
    if (c >= 'a' && c <= 'z') c -= 32;
    if (c != (unsigned char)b[i]) return 0;
  }
  return 1;
}

int sasl_parse_auth(char const *arg, size_t len, char const **ir, size_t *irlen)
{
  size_t i = 0, m;
  int mech;
  *ir = 0;
  *irlen = 0;
  while (i < len && arg[i] == ' ') i++;
  m = i;
  while (i < len && arg[i] != ' ') i++;
  if (i == m) return SASL_ESYNTAX;
  if (eqnocase(arg + m, i - m, "PLAIN")) mech = SASL_MECH_PLAIN;
  else if (eqnocase(arg + m, i - m, "LOGIN")) mech = SASL_MECH_LOGIN;
  else mech = SASL_MECH_UNKNOWN;
  while (i < len && arg[i] == ' ') i++;
  if (i < len) {
    size_t r = i;
    while (i < len && arg[i] != ' ') i++;
    {
      size_t e = i;
      while (i < len && arg[i] == ' ') i++;
      if (i < len) return SASL_ESYNTAX;
      *ir = arg + r;
      *irlen = e - r;
    }
  }
  return mech;
}

int sasl_plain_parse(char const *msg, size_t len, sasl_plain *p)
{
  char const *z1, *z2;
  memset(p, 0, sizeof *p);
  z1 = memchr(msg, 0, len);
  if (!z1) return SASL_ESYNTAX;
  z2 = memchr(z1 + 1, 0, len - (size_t)(z1 + 1 - msg));
  if (!z2) return SASL_ESYNTAX;
  if (memchr(z2 + 1, 0, len - (size_t)(z2 + 1 - msg))) return SASL_ESYNTAX;
  p->authzid = msg;
  p->authzidlen = (size_t)(z1 - msg);
  p->authcid = z1 + 1;
  p->authcidlen = (size_t)(z2 - (z1 + 1));
  p->passwd = z2 + 1;
  p->passwdlen = len - (size_t)(z2 + 1 - msg);
  if (!p->authcidlen || !p->passwdlen) return SASL_ESYNTAX;
  if (p->authzidlen > SASL_FIELD_MAX || p->authcidlen > SASL_FIELD_MAX ||
      p->passwdlen > SASL_FIELD_MAX)
    return SASL_ETOOLONG;
  if (p->authzidlen) {
    size_t i;
    if (p->authzidlen != p->authcidlen) return SASL_EAUTHZ;
    for (i = 0; i < p->authzidlen; i++) {
      unsigned char a = (unsigned char)p->authzid[i], b = (unsigned char)p->authcid[i];
      if (a >= 'A' && a <= 'Z') a += 32;
      if (b >= 'A' && b <= 'Z') b += 32;
      if (a != b) return SASL_EAUTHZ;
    }
  }
  return SASL_OK;
}

char const *sasl_login_prompt(unsigned int step)
{
  return step ? "UGFzc3dvcmQ6" : "VXNlcm5hbWU6";
}

int sasl_login_field(char const *s, size_t len)
{
  if (!len || memchr(s, 0, len)) return SASL_ESYNTAX;
  if (len > SASL_FIELD_MAX) return SASL_ETOOLONG;
  return SASL_OK;
}

size_t sasl_checkpassword_input(char *out, size_t outmax, char const *user, size_t userlen,
                                char const *pass, size_t passlen)
{
  size_t n = userlen + passlen + 3;
  if (n < userlen || n > outmax) return 0;
  if (memchr(user, 0, userlen) || memchr(pass, 0, passlen)) return 0;
  memcpy(out, user, userlen);
  out[userlen] = 0;
  memcpy(out + userlen + 1, pass, passlen);
  out[userlen + 1 + passlen] = 0;
  out[userlen + 2 + passlen] = 0;
  return n;
}
