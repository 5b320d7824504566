/* progdir: see progdir.h. */
#include <stdlib.h>
#include <string.h>

#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>

#include "progdir.h"

int progdir_get(stralloc *dir)
{
  dir->len = 0;
  if (sarealpath(dir, "/proc/self/exe") < 0) return 0;
  while (dir->len && !dir->s[dir->len - 1]) dir->len--; /* a NUL, if sarealpath put one */
  while (dir->len && dir->s[dir->len - 1] != '/') dir->len--;
  if (dir->len > 1) dir->len--; /* the slash, except for "/" itself */
  return stralloc_0(dir);
}

int progdir_path_prepend(void)
{
  stralloc d = STRALLOC_ZERO;
  char const *old = getenv("PATH");
  size_t n;
  int ok;
  if (!progdir_get(&d)) return 0;
  n = d.len - 1;
  if (old && !strncmp(old, d.s, n) && (old[n] == ':' || !old[n])) {
    stralloc_free(&d);
    return 1;
  }
  d.len = n;
  ok = stralloc_catb(&d, ":", 1) && stralloc_cats(&d, old && *old ? old : "/usr/bin:/bin") &&
       stralloc_0(&d) && setenv("PATH", d.s, 1) == 0;
  stralloc_free(&d);
  return ok;
}
