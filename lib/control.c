/* control: see control.h */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"

char const *mailroot(void)
{
  char const *r = getenv("MAILROOT");
  return (r && *r) ? r : MAILROOT_DEFAULT;
}

int mailroot_path(stralloc *sa, char const *rel)
{
  sa->len = 0;
  return stralloc_cats(sa, mailroot()) && stralloc_catb(sa, "/", 1) && stralloc_cats(sa, rel) &&
         stralloc_0(sa);
}

/* Slurps control/NAME. 1 read, 0 missing, -1 error. */
static int slurp_control(stralloc *file, char const *name)
{
  stralloc path = STRALLOC_ZERO;
  int r;
  if (!stralloc_cats(&path, "control/") || !stralloc_cats(&path, name) || !stralloc_0(&path))
    return -1;
  {
    stralloc full = STRALLOC_ZERO;
    if (!mailroot_path(&full, path.s)) {
      stralloc_free(&path);
      return -1;
    }
    stralloc_free(&path);
    file->len = 0;
    r = openslurpclose(file, full.s);
    stralloc_free(&full);
  }
  if (!r) return errno == ENOENT ? 0 : -1;
  return 1;
}

/* Calls f on each meaningful line of s[0..len). */
static int each_line(char const *s, size_t len, int (*f)(char const *, size_t, void *), void *data)
{
  size_t i = 0;
  while (i < len) {
    size_t j = i, k;
    while (j < len && s[j] != '\n') j++;
    k = j;
    while (k > i && (s[k - 1] == ' ' || s[k - 1] == '\t' || s[k - 1] == '\r')) k--;
    {
      size_t b = i;
      while (b < k && (s[b] == ' ' || s[b] == '\t')) b++;
      if (b < k && s[b] != '#') {
        int r = f(s + b, k - b, data);
        if (r <= 0) return r;
      }
    }
    i = j + 1;
  }
  return 1;
}

static int first_line(char const *s, size_t n, void *data)
{
  stralloc *sa = data;
  if (!stralloc_catb(sa, s, n)) return -1;
  return 0; /* stop after the first */
}

static int add_line(char const *s, size_t n, void *data)
{
  stralloc *sa = data;
  return (stralloc_catb(sa, s, n) && stralloc_0(sa)) ? 1 : -1;
}

int control_readline(stralloc *sa, char const *name)
{
  stralloc file = STRALLOC_ZERO;
  int r = slurp_control(&file, name);
  sa->len = 0;
  if (r <= 0) return r;
  r = each_line(file.s, file.len, first_line, sa);
  stralloc_free(&file);
  if (r < 0) return -1;
  return sa->len ? 1 : 0;
}

int control_defaultdomain(stralloc *sa)
{
  static char const *const names[3] = {"defaultdomain", "domains", "me"};
  unsigned int i;
  for (i = 0; i < 3; i++) {
    int r = control_readline(sa, names[i]);
    if (r < 0) return -1;
    if (r) {
      size_t k;
      for (k = 0; k < sa->len; k++)
        if (sa->s[k] >= 'A' && sa->s[k] <= 'Z') sa->s[k] += 32;
      return 1;
    }
  }
  return 0;
}

int control_readlines(stralloc *sa, char const *name)
{
  stralloc file = STRALLOC_ZERO;
  int r = slurp_control(&file, name);
  if (r <= 0) return r;
  r = each_line(file.s, file.len, add_line, sa);
  stralloc_free(&file);
  return r < 0 ? -1 : 1;
}

int control_readuint(char const *name, unsigned long def, unsigned long *u)
{
  stralloc sa = STRALLOC_ZERO;
  int r = control_readline(&sa, name);
  if (r < 0) return -1;
  if (!r) {
    *u = def;
    return 1;
  }
  if (!stralloc_0(&sa)) return -1;
  {
    size_t n = ulong_scan(sa.s, u);
    int ok = n && n == sa.len - 1;
    stralloc_free(&sa);
    if (!ok) {
      errno = EINVAL;
      return 0;
    }
  }
  return 1;
}

unsigned long control_uint(char const *name, unsigned long def)
{
  unsigned long u;
  int r = control_readuint(name, def, &u);
  if (r < 0) strerr_diefu3sys(111, "read ", "control/", name);
  if (!r) strerr_dief3x(100, "control/", name, ": not an unsigned number");
  return u;
}

unsigned long control_uint_in(char const *name, unsigned long def, unsigned long min,
                              unsigned long max)
{
  unsigned long u = control_uint(name, def);
  return u < min ? min : u > max ? max : u;
}
