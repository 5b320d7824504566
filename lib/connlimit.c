/* connlimit: see connlimit.h */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "connlimit.h"
#include "control.h"
#include "ipkey.h"

static int makedir(char const *service)
{
  stralloc d = STRALLOC_ZERO;
  int r = 0;
  if (mailroot_path(&d, "run") && (mkdir(d.s, 0755) == 0 || errno == EEXIST)) {
    d.len--;
    if (stralloc_cats(&d, "/slots") && stralloc_0(&d) &&
        (mkdir(d.s, 0755) == 0 || errno == EEXIST)) {
      d.len--;
      if (stralloc_catb(&d, "/", 1) && stralloc_cats(&d, service) && stralloc_0(&d) &&
          (mkdir(d.s, 0700) == 0 || errno == EEXIST))
        r = 1;
    }
  }
  stralloc_free(&d);
  return r;
}

/* 1 locked and still the named file, 0 held by another, -1 error */
static int try_slot(connlimit *c, char const *path, int keep)
{
  for (unsigned int tries = 0; tries < 8; tries++) {
    struct stat a, b;
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | (keep ? 0 : O_CLOEXEC), 0600);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      int e = errno;
      close(fd);
      if (e == EWOULDBLOCK || e == EINTR) return 0;
      errno = e;
      return -1;
    }
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
      c->fd = fd;
      return 1;
    }
    close(fd); /* its holder unlinked it between our open and our lock: take the new one */
  }
  return 0;
}

int connlimit_take(connlimit *c, char const *service, char const *ip, unsigned int max,
                   unsigned int v6bits, int keep_on_exec)
{
  char key[IPKEY_MAX];
  stralloc dir = STRALLOC_ZERO;
  unsigned int n;
  int made = 0;
  c->fd = -1;
  c->path[0] = 0;
  ipkey(ip, v6bits, key);
  if (!stralloc_cats(&dir, mailroot()) || !stralloc_cats(&dir, "/run/slots/") ||
      !stralloc_cats(&dir, service) || !stralloc_0(&dir))
    return -1;
  if (dir.len + strlen(key) + UINT_FMT + 2 > sizeof c->path) {
    stralloc_free(&dir);
    return (errno = ENAMETOOLONG, -1);
  }
  for (n = 0; n < max; n++) {
    char num[UINT_FMT];
    int r;
    num[uint_fmt(num, n)] = 0;
    strcpy(c->path, dir.s);
    strcat(c->path, "/");
    strcat(c->path, key);
    strcat(c->path, ".");
    strcat(c->path, num);
    r = try_slot(c, c->path, keep_on_exec);
    if (r < 0 && errno == ENOENT && !made) {
      made = 1;
      if (makedir(service)) r = try_slot(c, c->path, keep_on_exec);
    }
    if (r) {
      int e = errno;
      stralloc_free(&dir);
      if (r < 0) c->path[0] = 0;
      errno = e;
      return r;
    }
  }
  stralloc_free(&dir);
  c->path[0] = 0;
  return 0;
}

void connlimit_pass(connlimit *c)
{
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->path[0] = 0;
}

void connlimit_release(connlimit *c)
{
  if (c->fd < 0) return;
  if (c->path[0]) unlink(c->path);
  close(c->fd);
  c->fd = -1;
  c->path[0] = 0;
}
