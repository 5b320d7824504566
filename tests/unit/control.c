/* unit: control file parsing */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <skalibs/stralloc.h>
#include "control.h"
#include "check.h"
char const *PROG = "unit-control";

static void put(char const *name, char const *text)
{
  char p[256];
  FILE *f;
  snprintf(p, sizeof p, "control/%s", name);
  f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
}

int main(void)
{
  stralloc sa = STRALLOC_ZERO;
  unsigned long u;
  mkdir("control", 0755);
  setenv("MAILROOT", ".", 1);
  put("me", "# comment\n\n  mx.example.test \r\nsecond\n");
  CHECK(control_readline(&sa, "me") == 1);
  CHECK(sa.len == 15 && !memcmp(sa.s, "mx.example.test", 15));
  CHECK(control_readline(&sa, "missing") == 0);
  put("n", "1234\n");
  CHECK(control_readuint("n", 7, &u) == 1 && u == 1234);
  CHECK(control_readuint("missing", 7, &u) == 1 && u == 7);
  put("junk", "12x\n");
  CHECK(control_readuint("junk", 7, &u) == 0);
  sa.len = 0;
  put("list", "a\n#b\nc\n");
  CHECK(control_readlines(&sa, "list") == 1 && sa.len == 4 && !memcmp(sa.s, "a\0c\0", 4));
  /* the default domain: defaultdomain, else the first local domain, else me */
  CHECK(control_defaultdomain(&sa) == 1 && sa.len == 15 && !memcmp(sa.s, "mx.example.test", 15));
  put("domains", "# local\nFirst.TEST\nsecond.test\n");
  CHECK(control_defaultdomain(&sa) == 1 && sa.len == 10 && !memcmp(sa.s, "first.test", 10));
  put("defaultdomain", "Mail.Example.TEST\n");
  CHECK(control_defaultdomain(&sa) == 1 && sa.len == 17 && !memcmp(sa.s, "mail.example.test", 17));
  put("defaultdomain", "");
  put("domains", "");
  put("me", "# nothing\n");
  CHECK(control_defaultdomain(&sa) == 0 && sa.len == 0);
  return CHECK_DONE();
}
