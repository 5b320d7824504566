/* unit: control file parsing, and the stamps that tell whether the files may have changed */
#include <stdlib.h>
#include <string.h>
#include <skalibs/stralloc.h>
#include "control.h"
#include "check.h"
#include "ctlfile.h"
char const *PROG = "unit-control";

/* s as if taken long after its files last changed (the racy window is over) */
static void aged(control_stamp *s)
{
  s->taken.tv_sec += 60;
}

/* a stamp of names taken after the last change, aged: it vouches for the files */
static void trusted(control_stamp *s, char const *const *names)
{
  tick_control();
  CHECK(control_stamp_take(s, names, 3) == 1);
  aged(s);
  CHECK(control_stamp_same(s) == 1);
}

static void stamps(void)
{
  static char const *const names[] = {"me", "nothere", "n"};
  static control_stamp s;
  put("me", "mx.example.test\n");
  put("n", "5\n");
  tick_control();
  CHECK(control_stamp_take(&s, names, 3) == 1);
  CHECK(control_stamp_same(&s) == 0);   /* just written: within the racy window */
  aged(&s);
  CHECK(control_stamp_same(&s) == 1);   /* nothing changed */
  /* an edit in place (the same inode and size) */
  tick(s.f[0].ctime);
  put("me", "mx.example.tesT\n");
  CHECK(control_stamp_same(&s) == 0);
  /* a file replaced by rename */
  trusted(&s, names);
  tick(s.d.ctime);
  put("n.tmp", "5\n");
  CHECK(rename("control/n.tmp", "control/n") == 0);
  CHECK(control_stamp_same(&s) == 0);
  /* a file created, one removed */
  trusted(&s, names);
  tick(s.d.ctime);
  put("nothere", "1\n");
  CHECK(control_stamp_same(&s) == 0);
  trusted(&s, names);
  tick(s.d.ctime);
  unlink("control/nothere");
  CHECK(control_stamp_same(&s) == 0);
  /* another MAILROOT */
  trusted(&s, names);
  setenv("MAILROOT", "./", 1);
  CHECK(control_stamp_same(&s) == 0);
  setenv("MAILROOT", ".", 1);
  CHECK(control_stamp_take(&s, names, CONTROL_STAMP_MAX + 1) == 0 && !s.valid);
  CHECK(control_stamp_same(&s) == 0);
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
  stamps();
  return CHECK_DONE();
}
