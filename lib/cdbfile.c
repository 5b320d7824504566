/* cdbfile: see cdbfile.h. Uses tinycdb (<cdb.h>) and never includes <skalibs/cdb.h>. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cdb.h>

#include <skalibs/stralloc.h>

#include "cdbfile.h"
#include "control.h"

void cdbfile_drop(cdbfile *d)
{
  if (d->open == 1) {
    cdb_free(&d->c);
    close(d->fd);
  }
  d->fd = -1;
  d->open = 0;
}

int cdbfile_fresh(cdbfile *d)
{
  stralloc p = STRALLOC_ZERO;
  struct stat st;
  int fd;
  if (!mailroot_path(&p, d->rel)) return 0;
  if (stat(p.s, &st) < 0) {
    int e = errno;
    stralloc_free(&p);
    if (e != ENOENT) {
      errno = e;
      return 0;
    }
    cdbfile_drop(d);
    d->open = 2;
    return 1;
  }
  if ((d->open == 1 || d->open == 3) && st.st_dev == d->dev && st.st_ino == d->ino &&
      st.st_size == d->size && st.st_mtim.tv_sec == d->mtime.tv_sec &&
      st.st_mtim.tv_nsec == d->mtime.tv_nsec && st.st_ctim.tv_sec == d->ctime.tv_sec &&
      st.st_ctim.tv_nsec == d->ctime.tv_nsec) {
    stralloc_free(&p);
    return 1;
  }
  cdbfile_drop(d);
  fd = open(p.s, O_RDONLY | O_CLOEXEC);
  stralloc_free(&p);
  if (fd < 0) {
    if (errno == ENOENT) {
      d->open = 2;
      return 1;
    }
    if (errno == EACCES) { /* remembered until the file changes: no open() per lookup */
      d->open = 3;
      d->dev = st.st_dev;
      d->ino = st.st_ino;
      d->size = st.st_size;
      d->mtime = st.st_mtim;
      d->ctime = st.st_ctim;
      return 1;
    }
    return 0;
  }
  if (fstat(fd, &st) < 0 || cdb_init(&d->c, fd) < 0) {
    int e = errno;
    close(fd);
    errno = e ? e : EPROTO;
    return 0;
  }
  d->fd = fd;
  d->open = 1;
  d->dev = st.st_dev;
  d->ino = st.st_ino;
  d->size = st.st_size;
  d->mtime = st.st_mtim;
  d->ctime = st.st_ctim;
  return 1;
}

int cdbfile_get(cdbfile *d, char const *k, size_t kn, char const **v, size_t *vn)
{
  int r;
  if (d->open != 1) return 0;
  if (kn > 0xffffffffUL) return 0;
  r = cdb_find(&d->c, k, (unsigned)kn);
  if (r < 0) {
    errno = EPROTO;
    return -1;
  }
  if (!r) return 0;
  *v = (char const *)cdb_get(&d->c, cdb_datalen(&d->c), cdb_datapos(&d->c));
  if (!*v) {
    errno = EPROTO;
    return -1;
  }
  *vn = cdb_datalen(&d->c);
  return 1;
}

