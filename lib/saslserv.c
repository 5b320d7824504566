/* saslserv: see saslserv.h */
#include <string.h>

#include <skalibs/bytestr.h>

#include "saslserv.h"

/* Decodes one response into out (room for max). Returns its length or a SASLSERV_E*. */
static long decode(char const *in, size_t len, char *out, size_t max)
{
  size_t n;
  int r;
  if (sasl_is_cancel(in, len)) return SASLSERV_ECANCEL;
  if (len > SASL_RESPONSE_MAX) return SASLSERV_ETOOLONG;
  r = sasl_b64_decode(in, len, out, max, &n);
  if (r == SASL_ETOOLONG) return SASLSERV_ETOOLONG;
  if (r != SASL_OK) return SASLSERV_EBASE64;
  return (long)n;
}

static int plain(saslserv *s, char const *resp, size_t len)
{
  char dec[SASL_DECODED_MAX];
  sasl_plain p;
  long n = decode(resp, len, dec, sizeof dec);
  int r;
  if (n < 0) return (int)n;
  r = sasl_plain_parse(dec, (size_t)n, &p);
  if (r == SASL_OK || r == SASL_EAUTHZ) { /* the authcid names the failure in the log */
    memcpy(s->user, p.authcid, p.authcidlen);
    s->user[s->userlen = p.authcidlen] = 0;
  }
  if (r == SASL_OK) {
    memcpy(s->pass, p.passwd, p.passwdlen);
    s->pass[s->passlen = p.passwdlen] = 0;
  }
  byte_zzero(dec, sizeof dec);
  if (r == SASL_OK) return SASLSERV_DONE;
  if (r == SASL_EAUTHZ) return SASLSERV_EAUTHZ;
  if (r == SASL_ETOOLONG) return SASLSERV_ETOOLONG;
  return SASLSERV_EMALFORMED;
}

static int login_field(char const *resp, size_t len, char *out, size_t *outlen)
{
  long n = decode(resp, len, out, SASL_FIELD_MAX);
  int r;
  if (n < 0) return (int)n;
  r = sasl_login_field(out, (size_t)n);
  if (r == SASL_ETOOLONG) return SASLSERV_ETOOLONG;
  if (r != SASL_OK) return SASLSERV_EMALFORMED;
  out[n] = 0;
  *outlen = (size_t)n;
  return SASLSERV_DONE;
}

int saslserv_start(saslserv *s, char const *arg, size_t len, char const **challenge)
{
  char const *ir;
  size_t irlen;
  int m;
  memset(s, 0, sizeof *s);
  m = sasl_parse_auth(arg, len, &ir, &irlen);
  if (m < 0) return SASLSERV_ESYNTAX;
  if (m == SASL_MECH_UNKNOWN) return SASLSERV_EMECH;
  s->mech = m;
  if (!ir) {
    *challenge = m == SASL_MECH_PLAIN ? "" : sasl_login_prompt(0);
    return SASLSERV_CHALLENGE;
  }
  return saslserv_step(s, ir, irlen, challenge);
}

int saslserv_step(saslserv *s, char const *line, size_t len, char const **challenge)
{
  int r;
  if (s->mech == SASL_MECH_PLAIN) return plain(s, line, len);
  if (s->mech != SASL_MECH_LOGIN) return SASLSERV_ESYNTAX;
  if (!s->step) {
    r = login_field(line, len, s->user, &s->userlen);
    if (r) return r;
    s->step = 1;
    *challenge = sasl_login_prompt(1);
    return SASLSERV_CHALLENGE;
  }
  return login_field(line, len, s->pass, &s->passlen);
}

void saslserv_wipe(saslserv *s)
{
  byte_zzero((char *)s, sizeof *s);
}
