/* control: see control.h */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

/* ---- stamps: may control files have changed? ---- */

static void filestamp(control_filestamp *f, char const *path)
{
  struct stat st;
  memset(f, 0, sizeof *f);
  if (stat(path, &st) < 0) return;
  f->present = 1;
  f->dev = st.st_dev;
  f->ino = st.st_ino;
  f->size = st.st_size;
  f->mtime = st.st_mtim;
  f->ctime = st.st_ctim;
}

static int ts_eq(struct timespec a, struct timespec b)
{
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

static int filestamp_eq(control_filestamp const *a, control_filestamp const *b)
{
  return a->present == b->present && a->dev == b->dev && a->ino == b->ino &&
         a->size == b->size && ts_eq(a->mtime, b->mtime) && ts_eq(a->ctime, b->ctime);
}

/* Is a time of f so close to (or after) when the stamp was taken that a later change could
 * have left it as it is? */
static int after(struct timespec t, struct timespec edge)
{
  return t.tv_sec > edge.tv_sec || (t.tv_sec == edge.tv_sec && t.tv_nsec >= edge.tv_nsec);
}

static int racy(control_filestamp const *f, struct timespec taken)
{
  taken.tv_sec -= CONTROL_STAMP_RACY;
  return f->present && (after(f->ctime, taken) || after(f->mtime, taken));
}

/* dir, then "/" NAME, NUL-terminated, into path */
static int stamp_path(stralloc *path, control_stamp const *s, char const *name)
{
  path->len = 0;
  return stralloc_catb(path, s->dir.s, s->dir.len - 1) && stralloc_catb(path, "/", 1) &&
         stralloc_cats(path, name) && stralloc_0(path);
}

int control_stamp_take(control_stamp *s, char const *const *names, unsigned int n)
{
  stralloc path = STRALLOC_ZERO;
  unsigned int i;
  s->valid = 0;
  if (n > CONTROL_STAMP_MAX) return (errno = EINVAL, 0);
  if (!mailroot_path(&s->dir, "control")) return 0;
  if (clock_gettime(CLOCK_REALTIME, &s->taken) < 0) return 0;
  s->names = names;
  s->n = n;
  filestamp(&s->d, s->dir.s);
  if (!s->d.present) return (errno = ENOENT, 0);
  for (i = 0; i < n; i++) {
    if (!stamp_path(&path, s, names[i])) {
      stralloc_free(&path);
      return 0;
    }
    filestamp(&s->f[i], path.s);
  }
  stralloc_free(&path);
  s->valid = 1;
  return 1;
}

int control_stamp_same(control_stamp const *s)
{
  static stralloc path = STRALLOC_ZERO;
  control_filestamp now;
  char const *root = mailroot();
  size_t rl = strlen(root);
  unsigned int i;
  if (!s->valid || racy(&s->d, s->taken)) return 0;
  for (i = 0; i < s->n; i++)
    if (racy(&s->f[i], s->taken)) return 0;
  /* the same MAILROOT: dir is exactly root "/control" */
  if (s->dir.len != rl + 9 || memcmp(s->dir.s, root, rl)) return 0;
  filestamp(&now, s->dir.s);
  if (!filestamp_eq(&now, &s->d)) return 0;
  for (i = 0; i < s->n; i++) {
    if (!s->f[i].present) continue; /* its creation would have changed the directory */
    if (!stamp_path(&path, s, s->names[i])) return 0;
    filestamp(&now, path.s);
    if (!filestamp_eq(&now, &s->f[i])) return 0;
  }
  return 1;
}
