/* unit: the server side of a SASL dialogue (lib/saslserv) */
#include <string.h>

#include "saslserv.h"
#include "check.h"
char const *PROG = "unit-saslserv";

static int start(saslserv *s, char const *arg, char const **ch)
{
  return saslserv_start(s, arg, strlen(arg), ch);
}

static int step(saslserv *s, char const *line, char const **ch)
{
  return saslserv_step(s, line, strlen(line), ch);
}

int main(void)
{
  saslserv s;
  char const *ch = 0;
  char big[3000];

  /* PLAIN with an initial response */
  CHECK(start(&s, "PLAIN AHVzZXJAZXhhbXBsZS50ZXN0AHNlY3JldA==", &ch) == SASLSERV_DONE);
  CHECK(!strcmp(s.user, "user@example.test") && s.userlen == 17);
  CHECK(!strcmp(s.pass, "secret") && s.passlen == 6);
  saslserv_wipe(&s);
  CHECK(!s.pass[0] && !s.passlen);
  /* PLAIN without: an empty challenge, then the response; mechanism in any case */
  CHECK(start(&s, "plain", &ch) == SASLSERV_CHALLENGE && !strcmp(ch, ""));
  CHECK(step(&s, "AHVzZXJAZXhhbXBsZS50ZXN0AHNlY3JldA==", &ch) == SASLSERV_DONE);
  /* authzid equal to the authcid is fine, another one is a failed login */
  CHECK(start(&s, "PLAIN dXNlckBleGFtcGxlLnRlc3QAdXNlckBleGFtcGxlLnRlc3QAc2VjcmV0", &ch) ==
        SASLSERV_DONE);
  CHECK(start(&s, "PLAIN b3RoZXIAdXNlckBleGFtcGxlLnRlc3QAc2VjcmV0", &ch) == SASLSERV_EAUTHZ);
  /* ... whose log line names the authcid; no password kept */
  CHECK(!strcmp(s.user, "user@example.test") && s.userlen == 17 && !s.passlen && !s.pass[0]);
  /* "=" is the empty initial response: not a valid PLAIN message */
  CHECK(start(&s, "PLAIN =", &ch) == SASLSERV_EMALFORMED);
  /* cancel, bad base64, unknown mechanism, syntax */
  CHECK(start(&s, "PLAIN", &ch) == SASLSERV_CHALLENGE && step(&s, "*", &ch) == SASLSERV_ECANCEL);
  CHECK(start(&s, "PLAIN !!!!", &ch) == SASLSERV_EBASE64);
  CHECK(start(&s, "PLAIN AHU=AA==", &ch) == SASLSERV_EBASE64);
  CHECK(start(&s, "CRAM-MD5", &ch) == SASLSERV_EMECH);
  CHECK(start(&s, "", &ch) == SASLSERV_ESYNTAX);
  CHECK(start(&s, "PLAIN a b", &ch) == SASLSERV_ESYNTAX);
  /* LOGIN: two prompts */
  CHECK(start(&s, "LOGIN", &ch) == SASLSERV_CHALLENGE && !strcmp(ch, "VXNlcm5hbWU6"));
  CHECK(step(&s, "dXNlckBleGFtcGxlLnRlc3Q=", &ch) == SASLSERV_CHALLENGE &&
        !strcmp(ch, "UGFzc3dvcmQ6"));
  CHECK(step(&s, "c2VjcmV0", &ch) == SASLSERV_DONE);
  CHECK(!strcmp(s.user, "user@example.test") && !strcmp(s.pass, "secret"));
  /* LOGIN with the user name as initial response: straight to the password prompt */
  CHECK(start(&s, "LOGIN dXNlckBleGFtcGxlLnRlc3Q=", &ch) == SASLSERV_CHALLENGE &&
        !strcmp(ch, "UGFzc3dvcmQ6"));
  CHECK(step(&s, "*", &ch) == SASLSERV_ECANCEL);
  /* LOGIN: an empty field or a NUL in it is malformed */
  CHECK(start(&s, "LOGIN", &ch) == SASLSERV_CHALLENGE && step(&s, "=", &ch) == SASLSERV_EMALFORMED);
  CHECK(start(&s, "LOGIN", &ch) == SASLSERV_CHALLENGE &&
        step(&s, "YQBi", &ch) == SASLSERV_EMALFORMED);
  /* bounds: a line over SASL_RESPONSE_MAX, a field over SASL_FIELD_MAX */
  memset(big, 'Q', sizeof big - 1);
  big[sizeof big - 1] = 0;
  CHECK(start(&s, "PLAIN", &ch) == SASLSERV_CHALLENGE && step(&s, big, &ch) == SASLSERV_ETOOLONG);
  big[344] = 0; /* 258 decoded octets: over a LOGIN field */
  CHECK(start(&s, "LOGIN", &ch) == SASLSERV_CHALLENGE && step(&s, big, &ch) == SASLSERV_ETOOLONG);
  return CHECK_DONE();
}
