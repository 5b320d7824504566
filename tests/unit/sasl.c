/* unit: base64, SASL PLAIN / LOGIN parsing, checkpassword input, authfail counting */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "authfail.h"
#include "sasl.h"
#include "check.h"
char const *PROG = "unit-sasl";

static int dec(char const *in, char *out, size_t max, size_t *n)
{
  return sasl_b64_decode(in, strlen(in), out, max, n);
}

int main(void)
{
  char out[1100], enc[64];
  size_t n;
  sasl_plain p;
  char const *ir;
  size_t irlen;

  /* base64: RFC 4648 test vectors both ways */
  {
    static char const *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static char const *const b64[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    unsigned int i;
    for (i = 0; i < 7; i++) {
      size_t k = sasl_b64_encode(plain[i], strlen(plain[i]), enc);
      CHECK(k == strlen(b64[i]) && !memcmp(enc, b64[i], k));
      CHECK(dec(b64[i], out, sizeof out, &n) == SASL_OK && n == strlen(plain[i]) &&
            !memcmp(out, plain[i], n));
    }
  }
  CHECK(dec("=", out, sizeof out, &n) == SASL_OK && n == 0);
  CHECK(dec("Zm9", out, sizeof out, &n) == SASL_EBASE64);        /* not a multiple of 4 */
  CHECK(dec("Zm9v!A==", out, sizeof out, &n) == SASL_EBASE64);   /* bad byte */
  CHECK(dec("Zm 9v", out, sizeof out, &n) == SASL_EBASE64);      /* space */
  CHECK(dec("Z===", out, sizeof out, &n) == SASL_EBASE64);       /* too much padding */
  CHECK(dec("Zg=a", out, sizeof out, &n) == SASL_EBASE64);       /* data after padding */
  CHECK(dec("Zg==Zm9v", out, sizeof out, &n) == SASL_EBASE64);   /* padding in the middle */
  CHECK(dec("Zh==", out, sizeof out, &n) == SASL_EBASE64);       /* non-zero pad bits */
  CHECK(dec("Zm9vYmFy", out, 5, &n) == SASL_ETOOLONG);           /* output bound */
  CHECK(dec("Zm9vYmFy", out, 6, &n) == SASL_OK && n == 6);
  {
    char bin[256], e[400];
    unsigned int i;
    size_t k;
    for (i = 0; i < 256; i++) bin[i] = (char)i;
    k = sasl_b64_encode(bin, 256, e);
    CHECK(k == SASL_B64_LEN(256));
    CHECK(sasl_b64_decode(e, k, out, sizeof out, &n) == SASL_OK && n == 256 &&
          !memcmp(out, bin, 256));
  }

  /* AUTH argument */
  CHECK(sasl_parse_auth("PLAIN", 5, &ir, &irlen) == SASL_MECH_PLAIN && !ir);
  CHECK(sasl_parse_auth("plain AGEAYg==", 14, &ir, &irlen) == SASL_MECH_PLAIN && irlen == 8 &&
        !memcmp(ir, "AGEAYg==", 8));
  CHECK(sasl_parse_auth("login", 5, &ir, &irlen) == SASL_MECH_LOGIN);
  CHECK(sasl_parse_auth("CRAM-MD5", 8, &ir, &irlen) == SASL_MECH_UNKNOWN);
  CHECK(sasl_parse_auth("", 0, &ir, &irlen) == SASL_ESYNTAX);
  CHECK(sasl_parse_auth("PLAIN a b", 9, &ir, &irlen) == SASL_ESYNTAX);
  CHECK(sasl_is_cancel("*", 1) && !sasl_is_cancel("**", 2));

  /* PLAIN */
  CHECK(sasl_plain_parse("\0u@d\0pw", 7, &p) == SASL_OK && p.authcidlen == 3 &&
        !memcmp(p.authcid, "u@d", 3) && p.passwdlen == 2 && !memcmp(p.passwd, "pw", 2) &&
        p.authzidlen == 0);
  CHECK(sasl_plain_parse("U@D\0u@d\0pw", 10, &p) == SASL_OK);          /* authzid == authcid */
  CHECK(sasl_plain_parse("x@d\0u@d\0pw", 10, &p) == SASL_EAUTHZ);       /* someone else */
  CHECK(sasl_plain_parse("\0u@d", 4, &p) == SASL_ESYNTAX);              /* one NUL */
  CHECK(sasl_plain_parse("\0u@d\0pw\0x", 9, &p) == SASL_ESYNTAX);       /* three NULs */
  CHECK(sasl_plain_parse("\0\0pw", 4, &p) == SASL_ESYNTAX);             /* empty user */
  CHECK(sasl_plain_parse("\0u\0", 3, &p) == SASL_ESYNTAX);              /* empty password */
  CHECK(sasl_plain_parse("", 0, &p) == SASL_ESYNTAX);
  {
    char big[600];
    memset(big, 'a', sizeof big);
    big[0] = 0;
    big[2] = 0; /* authcid "a", password 597 octets */
    CHECK(sasl_plain_parse(big, sizeof big, &p) == SASL_ETOOLONG);
  }

  /* LOGIN */
  CHECK(!strcmp(sasl_login_prompt(0), "VXNlcm5hbWU6"));
  CHECK(!strcmp(sasl_login_prompt(1), "UGFzc3dvcmQ6"));
  CHECK(sasl_login_field("u", 1) == SASL_OK);
  CHECK(sasl_login_field("", 0) == SASL_ESYNTAX);
  CHECK(sasl_login_field("a\0b", 3) == SASL_ESYNTAX);

  /* checkpassword input */
  {
    char b[16];
    CHECK(sasl_checkpassword_input(b, sizeof b, "u", 1, "pw", 2) == 6 &&
          !memcmp(b, "u\0pw\0\0", 6));
    CHECK(sasl_checkpassword_input(b, 5, "u", 1, "pw", 2) == 0);
    CHECK(sasl_checkpassword_input(b, sizeof b, "u\0", 2, "pw", 2) == 0);
  }

  /* authfail: 10 failures in a minute are fine, the 11th blocks, for a while only */
  {
    unsigned int i;
    uint32_t t = 1000000;
    setenv("MAILROOT", ".", 1);
    mkdir("control", 0755);
    CHECK(authfail_blocked_at("192.0.2.1", t) == 0);
    for (i = 0; i < AUTHFAIL_LIMIT; i++) CHECK(authfail_record_at("192.0.2.1", t + i) == 0);
    CHECK(authfail_blocked_at("192.0.2.1", t + 10) == 0);
    CHECK(authfail_record_at("192.0.2.1", t + 10) == 1);
    CHECK(authfail_blocked_at("192.0.2.1", t + 11) == 1);
    CHECK(authfail_blocked_at("192.0.2.2", t + 11) == 0);          /* another address */
    CHECK(authfail_blocked_at("192.0.2.1", t + 10 + AUTHFAIL_BLOCK + 1) == 0);
    /* failures spread out over more than a minute never block */
    for (i = 0; i < 30; i++) CHECK(authfail_record_at("2001:db8::1", t + i * 7) == 0);
    CHECK(authfail_blocked_at("2001:db8::1", t + 300) == 0);
    /* many addresses: the table stays the same size */
    for (i = 0; i < 20000; i++) {
      char ip[32];
      snprintf(ip, sizeof ip, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
      if (authfail_record_at(ip, t + 20) < 0) { CHECK(0); break; }
    }
    {
      struct stat st;
      CHECK(stat("authfail/table", &st) == 0 && st.st_size <= AUTHFAIL_SLOTS * 32);
    }
  }
  return CHECK_DONE();
}
