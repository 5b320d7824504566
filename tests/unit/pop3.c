/* unit: POP3 command parsing, wire encoding, sizes and UIDLs */
#include <string.h>
#include "pop3.h"
#include "check.h"
char const *PROG = "unit-pop3";

static int parse(char const *s, pop3_cmd *c)
{
  return pop3_parse(s, strlen(s), c);
}

/* Encodes the whole of in through an output buffer of outmax bytes, in input chunks of
 * chunk bytes, into res; returns the length. */
static size_t encode(char const *in, size_t chunk, size_t outmax, long top, char *res)
{
  pop3_enc e;
  char out[64];
  size_t len = strlen(in), pos = 0, r = 0;
  pop3_enc_init(&e, top);
  while (pos < len && !e.done) {
    size_t take = len - pos < chunk ? len - pos : chunk, off = 0;
    while (off < take && !e.done) {
      size_t used, o = pop3_enc_run(&e, in + pos + off, take - off, out, outmax, &used);
      memcpy(res + r, out, o);
      r += o;
      off += used;
    }
    pos += take;
  }
  r += pop3_enc_end(&e, res + r);
  res[r] = 0;
  return r;
}

static int enc_is(char const *in, long top, char const *want)
{
  char res[1024];
  size_t chunk, outmax;
  for (chunk = 1; chunk <= 8; chunk++)
    for (outmax = 2; outmax <= 9; outmax++) {
      encode(in, chunk, outmax, top, res);
      if (strcmp(res, want)) {
        fprintf(stderr, "chunk %zu outmax %zu top %ld: got [%s]\n", chunk, outmax, top, res);
        return 0;
      }
    }
  encode(in, 4096, 64, top, res);
  return !strcmp(res, want);
}

static uint64_t wsize(char const *s, size_t chunk)
{
  pop3_wsize w = POP3_WSIZE_ZERO;
  size_t len = strlen(s), pos;
  for (pos = 0; pos < len; pos += chunk)
    pop3_wiresize_feed(&w, s + pos, len - pos < chunk ? len - pos : chunk);
  return pop3_wiresize_end(&w);
}

int main(void)
{
  pop3_cmd c;
  char line[400];
  char u[POP3_UIDL_MAX];
  unsigned long n;
  uint64_t sz;
  size_t i;

  /* commands and arguments */
  CHECK(parse("USER joe\r\n", &c) == POP3_USER && c.argc == 1 && c.arglen[0] == 3 &&
        !memcmp(c.arg[0], "joe", 3));
  CHECK(parse("user joe\n", &c) == POP3_USER);
  CHECK(parse("PASS two words \r\n", &c) == POP3_PASS && c.arglen[0] == 10 &&
        !memcmp(c.arg[0], "two words ", 10));
  CHECK(parse("PASS\r\n", &c) == POP3_ESYNTAX);
  CHECK(parse("STAT\r\n", &c) == POP3_STAT && c.argc == 0);
  CHECK(parse("STAT 1\r\n", &c) == POP3_ESYNTAX);
  CHECK(parse("LIST\r\n", &c) == POP3_LIST && c.argc == 0);
  CHECK(parse("LIST 3\r\n", &c) == POP3_LIST && c.argc == 1);
  CHECK(parse("LIST 3 4\r\n", &c) == POP3_ESYNTAX);
  CHECK(parse("TOP 1 0\r\n", &c) == POP3_TOP && c.argc == 2);
  CHECK(parse("TOP 1\r\n", &c) == POP3_ESYNTAX);
  CHECK(parse("RETR\r\n", &c) == POP3_ESYNTAX);
  CHECK(parse("XYZZY\r\n", &c) == POP3_EUNKNOWN);
  CHECK(parse("FOO\r\n", &c) == POP3_EUNKNOWN);
  CHECK(parse("\r\n", &c) == POP3_ESYNTAX);
  CHECK(parse("RETR 1\0\r\n", &c) == POP3_RETR); /* strlen stops at NUL */
  CHECK(pop3_parse("RETR \0\r\n", 8, &c) == POP3_ESYNTAX);
  CHECK(parse("RETR\t1\r\n", &c) == POP3_ESYNTAX);
  CHECK(parse("AUTH\r\n", &c) == POP3_AUTH && c.argc == 0);
  CHECK(parse("AUTH PLAIN\r\n", &c) == POP3_AUTH && c.argc == 1);
  /* 40 octets pass, 41 do not */
  strcpy(line, "USER ");
  for (i = 0; i < 40; i++) line[5 + i] = 'a';
  strcpy(line + 45, "\r\n");
  CHECK(parse(line, &c) == POP3_USER && c.arglen[0] == 40);
  strcpy(line + 45, "b\r\n");
  CHECK(parse(line, &c) == POP3_EARGLONG);
  /* an AUTH initial response may be longer than 40 */
  strcpy(line, "AUTH PLAIN ");
  for (i = 0; i < 100; i++) line[11 + i] = 'A';
  strcpy(line + 111, "\r\n");
  CHECK(parse(line, &c) == POP3_AUTH && c.argc == 2 && c.arglen[1] == 100);
  /* 255 octets with CRLF pass, 256 do not */
  memset(line, 0, sizeof line);
  strcpy(line, "PASS ");
  for (i = 5; i < 253; i++) line[i] = 'x';
  strcpy(line + 253, "\r\n");
  CHECK(strlen(line) == 255 && parse(line, &c) == POP3_PASS);
  line[253] = 'x';
  strcpy(line + 254, "\r\n");
  CHECK(parse(line, &c) == POP3_ETOOLONG);

  /* numbers */
  CHECK(pop3_msgnum("1", 1, 5, &n) && n == 1);
  CHECK(pop3_msgnum("5", 1, 5, &n) && n == 5);
  CHECK(!pop3_msgnum("6", 1, 5, &n));
  CHECK(!pop3_msgnum("0", 1, 5, &n));
  CHECK(!pop3_msgnum("-1", 2, 5, &n));
  CHECK(!pop3_msgnum("1x", 2, 5, &n));
  CHECK(!pop3_msgnum("99999999999999999999", 20, 5, &n));
  CHECK(pop3_ulong("0", 1, &n) && n == 0);

  /* encoding: CRLF, dot-stuffing, TOP */
  CHECK(enc_is("a\nb\n", -1, "a\r\nb\r\n.\r\n"));
  CHECK(enc_is("a\r\nb\r\n", -1, "a\r\nb\r\n.\r\n"));
  CHECK(enc_is("a\nb", -1, "a\r\nb\r\n.\r\n"));
  CHECK(enc_is("", -1, ".\r\n"));
  CHECK(enc_is(".\n..x\nx.\n.", -1, "..\r\n...x\r\nx.\r\n..\r\n.\r\n"));
  CHECK(enc_is("H: 1\nI: 2\n\nb1\nb2\nb3\n", 0, "H: 1\r\nI: 2\r\n\r\n.\r\n"));
  CHECK(enc_is("H: 1\nI: 2\n\nb1\nb2\nb3\n", 2, "H: 1\r\nI: 2\r\n\r\nb1\r\nb2\r\n.\r\n"));
  CHECK(enc_is("H: 1\r\n\r\n.b1\r\nb2\r\n", 1, "H: 1\r\n\r\n..b1\r\n.\r\n"));
  CHECK(enc_is("H: 1\nI: 2\n\nb1\nb2\nb3\n", 99, "H: 1\r\nI: 2\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n"));
  CHECK(enc_is("H: 1\nI: 2\n", 0, "H: 1\r\nI: 2\r\n.\r\n"));
  CHECK(enc_is("H: 1\n\n\n\nx\n", 2, "H: 1\r\n\r\n\r\n\r\n.\r\n"));

  /* sizes agree with the encoding, without the stuffing and the final dot */
  CHECK(wsize("a\nb\n", 1) == 6 && wsize("a\nb\n", 3) == 6);
  CHECK(wsize("a\r\nb\r\n", 1) == 6 && wsize("a\r\nb\r\n", 2) == 6);
  CHECK(wsize("a\nb", 2) == 6);
  CHECK(wsize("", 1) == 0);
  CHECK(wsize("\n\n\n", 1) == 6);
  CHECK(pop3_name_wsize("123.M1P2.host,S=100,W=104:2,S", 29, &sz) && sz == 104);
  CHECK(pop3_name_wsize("123.M1P2.host,W=104", 19, &sz) && sz == 104);
  CHECK(!pop3_name_wsize("123.M1P2.host,S=100:2,W=5", 25, &sz));
  CHECK(!pop3_name_wsize("123.M1P2.host,W=", 16, &sz));

  /* UIDL */
  CHECK(pop3_uidl("123.M1P2.host:2,S", 17, u) == 13 && !memcmp(u, "123.M1P2.host", 13));
  CHECK(pop3_uidl("123.M1P2.host", 13, u) == 13 && !memcmp(u, "123.M1P2.host", 13));
  memset(line, 'a', 100);
  CHECK(pop3_uidl(line, 100, u) == 41 && u[0] == 'H');
  {
    char u2[POP3_UIDL_MAX];
    CHECK(pop3_uidl(line, 100, u2) == 41 && !memcmp(u, u2, 41));
    line[99] = 'b';
    CHECK(pop3_uidl(line, 100, u2) == 41 && memcmp(u, u2, 41));
  }
  CHECK(pop3_uidl("a b:2,", 6, u) == 41);
  CHECK(pop3_name_time("1700000000.M1.h", 15) == 1700000000);
  CHECK(pop3_name_time("x", 1) == 0);
  return CHECK_DONE();
}
