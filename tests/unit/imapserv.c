/* unit: imap-serve's pre-login helpers (lib/imapserv) */
#include <string.h>

#include "imap_parse.h"
#include "imapserv.h"
#include "check.h"
char const *PROG = "unit-imapserv";

static imap_cmd c;
static char buf[8192];

static int parse(char const *s)
{
  size_t n = strlen(s);
  memcpy(buf, s, n);
  c.nspool = 0;
  return imap_parse(buf, n, &c);
}

int main(void)
{
  char const *u, *p;
  size_t ul, pl;
  char out[600], hex[16];
  char const *caps;

  /* capabilities: LOGINDISABLED and no AUTH= until login is allowed; STARTTLS not in TLS */
  caps = imapserv_capabilities(IMAPSERV_STARTTLS);
  CHECK(strstr(caps, "LOGINDISABLED") && strstr(caps, "STARTTLS") && !strstr(caps, "AUTH="));
  CHECK(strstr(caps, "IMAP4rev1") && strstr(caps, "SASL-IR") && strstr(caps, "ID"));
  caps = imapserv_capabilities(IMAPSERV_TLS | IMAPSERV_STARTTLS | IMAPSERV_LOGINOK);
  CHECK(!strstr(caps, "LOGINDISABLED") && !strstr(caps, "STARTTLS") && strstr(caps, "AUTH=PLAIN"));
  caps = imapserv_capabilities(IMAPSERV_STARTTLS | IMAPSERV_LOGINOK);
  CHECK(strstr(caps, "STARTTLS") && strstr(caps, "AUTH=PLAIN"));
  CHECK(!strstr(imapserv_capabilities(0), "STARTTLS"));

  CHECK(imapserv_loopback("127.0.0.1") && imapserv_loopback("::1"));
  CHECK(imapserv_loopback("::ffff:127.0.0.2"));
  CHECK(!imapserv_loopback("10.0.0.1") && !imapserv_loopback("::2") && !imapserv_loopback(0));

  /* LOGIN: two astrings (atom, quoted, literal), non-empty, bounded */
  CHECK(parse("a LOGIN joe \"pw with \\\"quote\"") == IMAP_OK);
  CHECK(imapserv_login_args(&c, &u, &ul, &p, &pl));
  CHECK(ul == 3 && !memcmp(u, "joe", 3) && pl == 14 && !memcmp(p, "pw with \"quote", 14));
  CHECK(parse("a LOGIN {3}\r\njoe {2}\r\npw") == IMAP_OK);
  CHECK(imapserv_login_args(&c, &u, &ul, &p, &pl) && pl == 2 && !memcmp(p, "pw", 2));
  CHECK(parse("a LOGIN joe") == IMAP_OK && !imapserv_login_args(&c, &u, &ul, &p, &pl));
  CHECK(parse("a LOGIN joe pw x") == IMAP_OK && !imapserv_login_args(&c, &u, &ul, &p, &pl));
  CHECK(parse("a LOGIN \"\" pw") == IMAP_OK && !imapserv_login_args(&c, &u, &ul, &p, &pl));
  CHECK(parse("a LOGIN (joe) pw") == IMAP_OK && !imapserv_login_args(&c, &u, &ul, &p, &pl));
  memset(out, 'x', 300);
  memcpy(out, "a LOGIN joe ", 12);
  out[300] = 0; /* a 288-octet password: over SASL_FIELD_MAX */
  CHECK(parse(out) == IMAP_OK && !imapserv_login_args(&c, &u, &ul, &p, &pl));

  /* AUTHENTICATE: mechanism and optional initial response, as saslserv takes them */
  CHECK(parse("a AUTHENTICATE PLAIN AGpvZQBwdw==") == IMAP_OK);
  CHECK(imapserv_sasl_arg(&c, out, sizeof out) == 18 && !strcmp(out, "PLAIN AGpvZQBwdw=="));
  CHECK(parse("a AUTHENTICATE PLAIN") == IMAP_OK);
  CHECK(imapserv_sasl_arg(&c, out, sizeof out) == 5 && !strcmp(out, "PLAIN"));
  CHECK(parse("a AUTHENTICATE PLAIN =") == IMAP_OK);
  CHECK(imapserv_sasl_arg(&c, out, sizeof out) == 7);
  CHECK(parse("a AUTHENTICATE") == IMAP_OK && !imapserv_sasl_arg(&c, out, sizeof out));
  CHECK(parse("a AUTHENTICATE PLAIN a b") == IMAP_OK && !imapserv_sasl_arg(&c, out, sizeof out));
  CHECK(parse("a AUTHENTICATE \"PLAIN\"") == IMAP_OK && !imapserv_sasl_arg(&c, out, sizeof out));
  CHECK(parse("a AUTHENTICATE PLAIN AGpvZQBwdw==") == IMAP_OK);
  CHECK(!imapserv_sasl_arg(&c, out, 18)); /* no room for the NUL */

  imapserv_hex(hex, "\0a\xff", 3);
  CHECK(!strcmp(hex, "0061ff"));
  imapserv_hex(hex, "", 0);
  CHECK(!hex[0]);
  return CHECK_DONE();
}
