/* instance: see instance.h */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/stralloc.h>

#include "control.h"
#include "instance.h"

char const *instance_role_dir(int role)
{
  switch (role) {
    case INSTANCE_MAIL: return "mail";
    case INSTANCE_QUEUE: return "queue";
    case INSTANCE_LOG: return "log";
    case INSTANCE_CONTROL: return "control";
    case INSTANCE_AUTH: return "run/auth";
    default: return 0;
  }
}

int instance_owner(int role, uid_t *uid, gid_t *gid)
{
  static int cached[5];
  static uid_t cu[5];
  static gid_t cg[5];
  char const *rel = instance_role_dir(role);
  stralloc p = STRALLOC_ZERO;
  struct stat st;
  int r;
  if (!rel) {
    errno = EINVAL;
    return -1;
  }
  if (cached[role]) {
    *uid = cu[role];
    *gid = cg[role];
    return 1;
  }
  if (!mailroot_path(&p, rel)) return -1;
  r = stat(p.s, &st);
  stralloc_free(&p);
  if (r < 0) return -1;
  cached[role] = 1;
  *uid = cu[role] = st.st_uid;
  *gid = cg[role] = st.st_gid;
  return 1;
}

int instance_own(char const *path, int role)
{
  uid_t u;
  gid_t g;
  if (geteuid()) return 1;
  if (instance_owner(role, &u, &g) < 0) return -1;
  return lchown(path, u, g) < 0 ? -1 : 1;
}

int instance_fown(int fd, int role)
{
  uid_t u;
  gid_t g;
  if (geteuid()) return 1;
  if (instance_owner(role, &u, &g) < 0) return -1;
  return fchown(fd, u, g) < 0 ? -1 : 1;
}

static int own_tree(stralloc *p, uid_t u, gid_t g, unsigned int depth)
{
  struct stat st;
  DIR *d;
  size_t base;
  if (lstat(p->s, &st) < 0) return -1;
  if (lchown(p->s, u, g) < 0) return -1;
  if (!S_ISDIR(st.st_mode)) return 1;
  if (depth > 32) {
    errno = ELOOP;
    return -1;
  }
  d = opendir(p->s);
  if (!d) return -1;
  base = p->len - 1; /* at the NUL */
  for (;;) {
    struct dirent *e;
    errno = 0;
    e = readdir(d);
    if (!e) break;
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    p->len = base;
    if (!stralloc_catb(p, "/", 1) || !stralloc_cats(p, e->d_name) || !stralloc_0(p) ||
        own_tree(p, u, g, depth + 1) < 0) {
      int e2 = errno;
      closedir(d);
      errno = e2;
      return -1;
    }
  }
  if (errno) {
    int e2 = errno;
    closedir(d);
    errno = e2;
    return -1;
  }
  closedir(d);
  p->len = base;
  return stralloc_0(p) ? 1 : -1;
}

int instance_chown_tree(char const *path, uid_t u, gid_t g)
{
  stralloc p = STRALLOC_ZERO;
  int r;
  if (!stralloc_cats(&p, path) || !stralloc_0(&p)) return -1;
  r = own_tree(&p, u, g, 0);
  stralloc_free(&p);
  return r;
}

int instance_own_tree(char const *path, int role)
{
  uid_t u;
  gid_t g;
  if (geteuid()) return 1;
  if (instance_owner(role, &u, &g) < 0) return -1;
  return instance_chown_tree(path, u, g);
}
