/* timedio: bounded waits, reads and writes on non-blocking fds (timedio.h). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/tai.h>

#include "timedio.h"

int timedio_wait2(int fd, int forwrite, int xfd, tain const *deadline)
{
  iopause_fd x[2];
  for (;;) {
    int r;
    unsigned int n = xfd >= 0 ? 2 : 1;
    x[0].fd = fd;
    x[0].events = forwrite ? IOPAUSE_WRITE : IOPAUSE_READ;
    x[0].revents = 0;
    x[1].fd = xfd;
    x[1].events = IOPAUSE_READ;
    x[1].revents = 0;
    if (!tain_now_g()) return -1;
    r = iopause_g(x, n, deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (!r) {
      errno = ETIMEDOUT;
      return -1;
    }
    if (x[0].revents) return 1;
    if (n == 2 && x[1].revents) return 2;
  }
}

int timedio_wait(int fd, int forwrite, tain const *deadline)
{
  return timedio_wait2(fd, forwrite, -1, deadline);
}

ssize_t timedio_fdread(int fd, char *buf, size_t len, tain const *deadline)
{
  for (;;) {
    ssize_t r = read(fd, buf, len);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (timedio_wait(fd, 0, deadline) < 0) return -1;
  }
}

int timedio_fdwrite(int fd, char const *s, size_t len, tain const *deadline)
{
  while (len) {
    ssize_t w = write(fd, s, len);
    if (w > 0) {
      s += w;
      len -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return 0;
    if (timedio_wait(fd, 1, deadline) < 0) return 0;
  }
  return 1;
}

int timedio_setfds(timedio *t, int rfd, int wfd)
{
  if (ndelay_on(rfd) < 0 || ndelay_on(wfd) < 0) return 0;
  t->rfd = rfd;
  t->wfd = wfd;
  t->ipos = t->ilen = 0;
  return 1;
}

int timedio_init(timedio *t, int rfd, int wfd)
{
  t->olen = 0;
  timedio_timeout(t, 300);
  return timedio_setfds(t, rfd, wfd);
}

void timedio_timeout(timedio *t, unsigned int secs)
{
  tain_now_g();
  tain_addsec_g(&t->deadline, (int)secs);
}

void timedio_deadline(timedio *t, tain const *deadline)
{
  t->deadline = *deadline;
}

size_t timedio_pending(timedio const *t)
{
  return t->ilen - t->ipos;
}

int timedio_flush(timedio *t)
{
  if (!t->olen) return 1;
  if (!timedio_fdwrite(t->wfd, t->obuf, t->olen, &t->deadline)) return 0;
  t->olen = 0;
  return 1;
}

int timedio_put(timedio *t, char const *s, size_t len)
{
  while (len) {
    size_t n = sizeof t->obuf - t->olen;
    if (!n) {
      if (!timedio_flush(t)) return 0;
      continue;
    }
    if (n > len) n = len;
    memcpy(t->obuf + t->olen, s, n);
    t->olen += n;
    s += n;
    len -= n;
  }
  return 1;
}

int timedio_puts(timedio *t, char const *s)
{
  return timedio_put(t, s, strlen(s));
}

/* Reads more input after what is buffered (moved to the front). > 0, 0 EOF, -1. */
static ssize_t fill(timedio *t)
{
  ssize_t r;
  if (t->ipos) {
    memmove(t->ibuf, t->ibuf + t->ipos, t->ilen - t->ipos);
    t->ilen -= t->ipos;
    t->ipos = 0;
  }
  if (!timedio_flush(t)) return -1;
  r = timedio_fdread(t->rfd, t->ibuf + t->ilen, sizeof t->ibuf - t->ilen, &t->deadline);
  if (r > 0) t->ilen += (size_t)r;
  return r;
}

int timedio_getline(timedio *t, char *line, size_t max, size_t *len)
{
  int dropping = 0;
  if (max > sizeof t->ibuf) max = sizeof t->ibuf;
  for (;;) {
    char *nl = memchr(t->ibuf + t->ipos, '\n', t->ilen - t->ipos);
    if (nl) {
      size_t n = (size_t)(nl - (t->ibuf + t->ipos)) + 1;
      if (dropping || n > max) {
        t->ipos += n;
        return TIMEDIO_TOOLONG;
      }
      memcpy(line, t->ibuf + t->ipos, n);
      t->ipos += n;
      *len = n;
      return 1;
    }
    if (t->ilen - t->ipos >= max) { /* no LF within max bytes: drop through the LF */
      dropping = 1;
      t->ipos = t->ilen = 0;
    }
    {
      ssize_t r = fill(t);
      if (r < 0) return -1;
      if (!r) return 0;
    }
  }
}

ssize_t timedio_read(timedio *t, char *buf, size_t len)
{
  size_t n = t->ilen - t->ipos;
  if (!len) return 0;
  if (!n) {
    if (!timedio_flush(t)) return -1;
    return timedio_fdread(t->rfd, buf, len, &t->deadline);
  }
  if (n > len) n = len;
  memcpy(buf, t->ibuf + t->ipos, n);
  t->ipos += n;
  return (ssize_t)n;
}
