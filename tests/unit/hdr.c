/* unit: header field names and address lists (lib/hdr) */
#include <string.h>

#include "hdr.h"
#include "check.h"
char const *PROG = "unit-hdr";

static char got[2048];

static int collect(void *ctx, char const *s, size_t n)
{
  (void)ctx;
  strncat(got, s, n);
  strcat(got, "|");
  return 1;
}

static char const *list(char const *s)
{
  got[0] = 0;
  hdr_addrlist(s, strlen(s), &collect, 0);
  return got;
}

static void grab(hdr_grab *g, char const *msg, size_t piece)
{
  size_t i, n = strlen(msg);
  hdr_grab_init(g, "From");
  for (i = 0; i < n; i += piece) hdr_grab_scan(g, msg + i, n - i < piece ? n - i : piece);
}

int main(void)
{
  hdr_grab g;
  size_t p;
  CHECK(hdr_field("Bcc: x", 6, "Bcc") == 4);
  CHECK(hdr_field("bcc : x", 7, "Bcc") == 5);
  CHECK(hdr_field("Bcc\t: x", 7, "Bcc") == 5);
  CHECK(hdr_field("Bccx: x", 7, "Bcc") == 0);
  CHECK(hdr_field("To: x", 5, "Bcc") == 0);
  CHECK(hdr_field("Bcc", 3, "Bcc") == 0);
  CHECK(!strcmp(list("a@b.example"), "a@b.example|"));
  CHECK(!strcmp(list("\"Doe, J\" <j@d.example>, x@y.example (X, Y)"), "j@d.example|x@y.example|"));
  CHECK(!strcmp(list("team: a@b.example, c@d.example;, e@f.example"),
                "a@b.example|c@d.example|e@f.example|"));
  CHECK(!strcmp(list(" , ,"), ""));
  for (p = 1; p < 40; p += 7) {
    grab(&g, "Subject: x\nFROM : Me\n <me@example.test>\nTo: y\n\nFrom: body@x\n", p);
    CHECK(g.count == 1 && g.len == 21 && !memcmp(g.value, " Me <me@example.test>", 21));
  }
  grab(&g, "From: a@b\nFrom: c@d\n\n", 3);
  CHECK(g.count == 2 && g.len == 4 && !memcmp(g.value, " a@b", 4));
  grab(&g, "X-From: a\nFromage: b\n\n", 5);
  CHECK(g.count == 0);
  return CHECK_DONE();
}
