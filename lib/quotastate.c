/* quotastate: the per-account usage record read at RCPT time. See quotastate.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "control.h"
#include "maildir.h"
#include "quotastate.h"

#define ADDR_MAX 320

static int name_ok(char const *a, size_t len)
{
  size_t i;
  if (!len || len > ADDR_MAX || a[0] == '.') return 0;
  for (i = 0; i < len; i++)
    if (a[i] == '/' || (unsigned char)a[i] < 32 || a[i] == 127) return 0;
  return 1;
}

/* MAILROOT/run/quota[/ADDRESS] into sa, NUL-terminated; *dirlen the length of the directory */
static int path(stralloc *sa, char const *root, char const *a, size_t len, size_t *dirlen)
{
  size_t i;
  if (!name_ok(a, len)) {
    errno = EINVAL;
    return 0;
  }
  sa->len = 0;
  if (!stralloc_cats(sa, root ? root : mailroot()) || !stralloc_cats(sa, "/run/quota")) return 0;
  *dirlen = sa->len;
  if (!stralloc_catb(sa, "/", 1) || !stralloc_readyplus(sa, len + 1)) return 0;
  for (i = 0; i < len; i++) {
    char c = a[i];
    sa->s[sa->len++] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
  }
  return stralloc_0(sa);
}

size_t quotastate_fmt(char *buf, quotastate const *q)
{
  size_t n = 0;
  memcpy(buf, "PBQS1", 5);
  n = 5;
  buf[n++] = ' ';
  n += uint64_fmt(buf + n, q->used);
  buf[n++] = ' ';
  n += uint64_fmt(buf + n, q->count);
  buf[n++] = ' ';
  n += uint64_fmt(buf + n, q->limit);
  buf[n++] = ' ';
  n += uint64_fmt(buf + n, q->limitcount);
  buf[n++] = ' ';
  n += uint64_fmt(buf + n, q->updated);
  buf[n++] = '\n';
  return n;
}

int quotastate_parse(char const *s, size_t len, quotastate *q)
{
  uint64_t v[5];
  size_t i = 6, k;
  if (len < 6 || len > QUOTASTATE_LINE_MAX || memcmp(s, "PBQS1 ", 6) || s[len - 1] != '\n')
    return 0;
  for (k = 0; k < 5; k++) {
    size_t n = 0;
    if (i >= len) return 0;
    n = uint64_scan(s + i, &v[k]);
    if (!n || n > 20) return 0;
    i += n;
    if (s[i] != (k < 4 ? ' ' : '\n')) return 0;
    i++;
  }
  if (i != len) return 0;
  q->used = v[0];
  q->count = v[1];
  q->limit = v[2];
  q->limitcount = v[3];
  q->updated = v[4];
  return 1;
}

int quotastate_read(char const *root, char const *addr, size_t len, quotastate *q)
{
  stralloc p = STRALLOC_ZERO;
  char buf[QUOTASTATE_LINE_MAX + 1];
  size_t dl;
  ssize_t r;
  int fd;
  if (!path(&p, root, addr, len, &dl)) {
    int e = errno;
    stralloc_free(&p);
    if (e == EINVAL) return 0;
    errno = e;
    return -1;
  }
  fd = open(p.s, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  stralloc_free(&p);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  r = allread(fd, buf, sizeof buf);
  {
    int e = errno;
    close(fd);
    errno = e;
  }
  if (r < 0) return -1;
  return quotastate_parse(buf, (size_t)r, q);
}

int quotastate_write(char const *root, char const *addr, size_t len, quotastate const *q)
{
  stralloc p = STRALLOC_ZERO, t = STRALLOC_ZERO;
  char buf[QUOTASTATE_LINE_MAX];
  char pid[PID_FMT];
  quotastate w = *q;
  size_t dl, n;
  int fd, ok = 0;
  if (!w.updated) w.updated = (uint64_t)time(0);
  n = quotastate_fmt(buf, &w);
  if (!path(&p, root, addr, len, &dl)) goto end;
  if (!stralloc_catb(&t, p.s, dl) || !stralloc_cats(&t, "/.") ||
      !stralloc_cats(&t, p.s + dl + 1) || !stralloc_catb(&t, ".", 1) ||
      !stralloc_catb(&t, pid, pid_fmt(pid, getpid())) || !stralloc_cats(&t, ".tmp") ||
      !stralloc_0(&t))
    goto end;
  fd = open(t.s, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0 && errno == ENOENT) { /* no run/quota yet: make it (group and setgid kept) */
    p.s[dl] = 0;
    p.s[dl - 6] = 0; /* MAILROOT/run first */
    if (mkdir(p.s, 0755) < 0 && errno != EEXIST) goto end;
    p.s[dl - 6] = '/';
    if (mkdir(p.s, 02750) < 0) {
      if (errno != EEXIST) goto end;
    } else if (chmod(p.s, 02750) < 0) /* mkdir leaves out the setgid bit */
      goto end;
    p.s[dl] = '/';
    fd = open(t.s, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
  }
  if (fd < 0) goto end;
  if (fchmod(fd, 0640) < 0 || allwrite(fd, buf, n) != n) {
    int e = errno;
    close(fd);
    unlink(t.s);
    errno = e;
    goto end;
  }
  if (close(fd) < 0 || rename(t.s, p.s) < 0) {
    int e = errno;
    unlink(t.s);
    errno = e;
    goto end;
  }
  ok = 1;
end:
  {
    int e = errno;
    stralloc_free(&p);
    stralloc_free(&t);
    errno = e;
  }
  return ok;
}

int quotastate_remove(char const *root, char const *addr, size_t len)
{
  stralloc p = STRALLOC_ZERO;
  size_t dl;
  int ok;
  if (!path(&p, root, addr, len, &dl)) {
    stralloc_free(&p);
    return 0;
  }
  ok = unlink(p.s) == 0 || errno == ENOENT;
  stralloc_free(&p);
  return ok;
}

int quotastate_check(quotastate const *q, uint64_t limit, uint64_t size)
{
  uint64_t limitcount = 0;
  if (limit == (uint64_t)-1) limit = q->limit, limitcount = q->limitcount;
  if (limit && size > limit) return QUOTASTATE_TOOBIG;
  if (limit && (q->used >= limit || size > limit - q->used)) return QUOTASTATE_FULL;
  if (limitcount && q->count >= limitcount) return QUOTASTATE_FULL;
  return QUOTASTATE_OK;
}

int quotastate_sync(char const *root, char const *addr, size_t len, char const *maildir)
{
  maildir_quota mq;
  quotastate q;
  stralloc p = STRALLOC_ZERO;
  int r, lk = -1, ok = 0;
  /* under a lock on maildirsize, so that of two deliveries ending together the last to write
   * the record has read the other's line too */
  if (stralloc_cats(&p, maildir) && stralloc_cats(&p, "/maildirsize") && stralloc_0(&p))
    lk = open(p.s, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  stralloc_free(&p);
  if (lk >= 0 && flock(lk, LOCK_EX) < 0) {
    close(lk);
    lk = -1;
  }
  r = maildir_quota_read(maildir, &mq);
  if (r < 0) goto end;
  if (!r || (!mq.maxsize && !mq.maxcount)) {
    ok = quotastate_remove(root, addr, len);
    goto end;
  }
  if (mq.stale && maildir_quota_recalc(maildir, mq.maxsize, mq.maxcount, &mq) < 0) goto end;
  q.used = mq.cursize > 0 ? (uint64_t)mq.cursize : 0;
  q.count = mq.curcount > 0 ? (uint64_t)mq.curcount : 0;
  q.limit = mq.maxsize;
  q.limitcount = mq.maxcount;
  q.updated = 0;
  ok = quotastate_write(root, addr, len, &q);
end:
  if (lk >= 0) {
    int e = errno;
    close(lk);
    errno = e;
  }
  return ok;
}
