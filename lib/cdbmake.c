/* cdbmake: see cdbmake.h. Uses tinycdb (<cdb.h>); never includes <skalibs/cdb.h>. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>

#include <cdb.h>

#include "cdbmake.h"

struct cdbw_s {
  struct cdb_make cm;
  int fd;
  char *path;
  char *tmp;
};

int cdbw_tmpfile(char const *tmp, char const *path, unsigned int mode)
{
  struct stat st;
  int fd, e;
  mode &= 0777;
  if (unlink(tmp) < 0 && errno != ENOENT) return -1;
  fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode); /* umask can only narrow it */
  if (fd < 0) return -1;
  if (!(mode & 077) && stat(path, &st) == 0) {
    if (st.st_uid != geteuid() || st.st_gid != getegid()) {
      if (fchown(fd, st.st_uid, st.st_gid) < 0) goto err;
    }
    if ((st.st_mode & 0044) == 0040) mode |= 0040; /* a deliberate 0640, not a 0644 */
  }
  if (fchmod(fd, mode) < 0) goto err; /* exact, whatever the umask */
  return fd;
err:
  e = errno;
  close(fd);
  unlink(tmp);
  errno = e;
  return -1;
}

/* fsyncs the directory that holds path. */
static int sync_dir(char const *path);

int cdbw_writefile(char const *path, char const *s, size_t n, unsigned int mode)
{
  size_t pn = strlen(path);
  char *tmp = malloc(pn + 5);
  int fd, e;
  if (!tmp) return 0;
  memcpy(tmp, path, pn);
  memcpy(tmp + pn, ".tmp", 5);
  fd = cdbw_tmpfile(tmp, path, mode);
  if (fd < 0) goto err0;
  if (allwrite(fd, s, n) < n || fsync(fd) < 0) goto err;
  if (close(fd) < 0) {
    fd = -1;
    goto err;
  }
  fd = -1;
  if (rename(tmp, path) < 0) goto err;
  free(tmp);
  return sync_dir(path);
err:
  e = errno;
  if (fd >= 0) close(fd);
  unlink(tmp);
  errno = e;
err0:
  e = errno;
  free(tmp);
  errno = e;
  return 0;
}

cdbw *cdbw_start(char const *path)
{
  return cdbw_start_mode(path, 0644);
}

cdbw *cdbw_start_mode(char const *path, unsigned int mode)
{
  size_t n = strlen(path);
  cdbw *w = malloc(sizeof *w);
  if (!w) return 0;
  w->path = malloc(n + 1);
  w->tmp = malloc(n + 5);
  if (!w->path || !w->tmp) goto err;
  memcpy(w->path, path, n + 1);
  memcpy(w->tmp, path, n);
  memcpy(w->tmp + n, ".tmp", 5);
  w->fd = cdbw_tmpfile(w->tmp, w->path, mode); /* read-write: cdb_make_exists reads back */
  if (w->fd < 0) goto err;
  if (cdb_make_start(&w->cm, w->fd) < 0) {
    int e = errno;
    close(w->fd);
    unlink(w->tmp);
    errno = e;
    goto err;
  }
  return w;
err:
  {
    int e = errno;
    free(w->path);
    free(w->tmp);
    free(w);
    errno = e;
  }
  return 0;
}

int cdbw_add(cdbw *w, char const *key, size_t klen, char const *data, size_t dlen)
{
  if (klen > 0xffffffffUL || dlen > 0xffffffffUL) {
    errno = EOVERFLOW;
    return 0;
  }
  return cdb_make_add(&w->cm, key, (unsigned)klen, data, (unsigned)dlen) >= 0;
}

int cdbw_exists(cdbw *w, char const *key, size_t klen)
{
  int r;
  if (klen > 0xffffffffUL) return 0;
  r = cdb_make_exists(&w->cm, key, (unsigned)klen);
  return r > 0 ? 1 : r < 0 ? -1 : 0;
}

static void cdbw_free(cdbw *w)
{
  free(w->path);
  free(w->tmp);
  free(w);
}

/* tinycdb 0.78 has no public way to free an unfinished cdb_make: its record
 * buffers leak until exit (admin commands are short-lived). */
void cdbw_abort(cdbw *w)
{
  int e = errno;
  close(w->fd);
  unlink(w->tmp);
  cdbw_free(w);
  errno = e;
}

/* fsyncs the directory that holds path. */
static int sync_dir(char const *path)
{
  char const *slash = strrchr(path, '/');
  char *dir;
  int fd, r;
  if (!slash) dir = strdup(".");
  else if (slash == path) dir = strdup("/");
  else {
    dir = malloc(slash - path + 1);
    if (dir) {
      memcpy(dir, path, slash - path);
      dir[slash - path] = 0;
    }
  }
  if (!dir) return 0;
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return 0;
  r = fsync(fd);
  close(fd);
  return r == 0;
}

int cdbw_finish(cdbw *w)
{
  if (cdb_make_finish(&w->cm) < 0) goto err;
  if (fsync(w->fd) < 0) goto err;
  if (close(w->fd) < 0) {
    w->fd = -1;
    goto err;
  }
  w->fd = -1;
  if (rename(w->tmp, w->path) < 0) goto err;
  if (!sync_dir(w->path)) {
    cdbw_free(w);
    return 0;
  }
  cdbw_free(w);
  return 1;
err:
  {
    int e = errno;
    if (w->fd >= 0) close(w->fd);
    unlink(w->tmp);
    cdbw_free(w);
    errno = e;
  }
  return 0;
}
