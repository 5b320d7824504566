/* timedio: bounded waits, reads and writes on non-blocking fds (timedio.h). */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/tai.h>

#include "pagedrop.h"
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

int timedio_usefds(timedio *t, int rfd, int wfd)
{
  int one = 1;
  if (ndelay_on(rfd) < 0 || ndelay_on(wfd) < 0) return 0;
  t->rfd = rfd;
  t->wfd = wfd;
  setsockopt(wfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* a pipe: ENOTSOCK is fine */
  return 1;
}

int timedio_setfds(timedio *t, int rfd, int wfd)
{
  if (!timedio_usefds(t, rfd, wfd)) return 0;
  t->ipos = t->ilen = 0;
  return 1;
}

int timedio_init(timedio *t, int rfd, int wfd, char *ibuf, size_t isize, char *obuf,
                 size_t osize)
{
  t->ibuf = ibuf;
  t->isize = isize;
  t->obuf = obuf;
  t->osize = osize;
  t->olen = 0;
  t->idle = 0;
  t->layer = 0;
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

void timedio_idle(timedio *t, unsigned int secs)
{
  t->idle = secs;
}

void timedio_setlayer(timedio *t, timedio_layer const *layer)
{
  t->layer = layer;
}

/* The deadline of the wait about to start. 0 when the clock cannot be read. */
static int deadline_now(timedio const *t, tain *d)
{
  if (!t->idle) {
    *d = t->deadline;
    return 1;
  }
  if (!tain_now_g()) return 0;
  tain_addsec_g(d, (int)t->idle);
  return 1;
}

size_t timedio_pending(timedio const *t)
{
  return t->ilen - t->ipos;
}

size_t timedio_input(timedio const *t, char const **s)
{
  *s = t->ibuf + t->ipos;
  return t->ilen - t->ipos;
}

int timedio_buffered(timedio const *t)
{
  return t->ipos < t->ilen || (t->layer && t->layer->pending());
}

void timedio_forget(timedio *t)
{
  memset(t->ibuf, 0, t->isize);
  t->ipos = t->ilen = t->olen = 0;
}

void timedio_discard(timedio *t)
{
  t->ipos = t->ilen = 0;
}

int timedio_preload(timedio *t, char const *s, size_t len)
{
  if (len > t->isize - (t->ilen - t->ipos)) return 0;
  memmove(t->ibuf + len, t->ibuf + t->ipos, t->ilen - t->ipos);
  memcpy(t->ibuf, s, len);
  t->ilen = t->ilen - t->ipos + len;
  t->ipos = 0;
  return 1;
}

int timedio_flush(timedio *t)
{
  char const *p = t->obuf;
  size_t n = t->olen, done = 0;
  if (!n) return 1;
  if (t->layer && !t->layer->out(t->obuf, t->olen, &p, &n)) return 0;
  while (done < n) {
    ssize_t w = write(t->wfd, p + done, n - done);
    tain d;
    if (w >= 0) {
      done += (size_t)w;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return 0;
    if (!deadline_now(t, &d) || timedio_wait(t->wfd, 1, &d) < 0) return 0;
  }
  t->olen = 0;
  return 1;
}

char *timedio_room(timedio *t, size_t min, size_t *avail)
{
  if (t->osize - t->olen < min && !timedio_flush(t)) return 0;
  *avail = t->osize - t->olen;
  return t->obuf + t->olen;
}

void timedio_commit(timedio *t, size_t n)
{
  t->olen += n;
}

int timedio_put(timedio *t, char const *s, size_t len)
{
  while (len) {
    size_t n = t->osize - t->olen;
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

void timedio_onrest(timedio *t, void (*rest)(void), unsigned int ms)
{
  t->rest = rest;
  t->restms = ms;
}

/* timedio_wait2 for input, resting (timedio_onrest) once the wait has lasted t->restms. */
static int inwait(timedio *t, int xfd, tain const *deadline)
{
  tain soon, ms;
  int r;
  if (!t->rest) return timedio_wait2(t->rfd, 0, xfd, deadline);
  if (!tain_now_g() || !tain_from_millisecs(&ms, (int)t->restms)) return -1;
  tain_add_g(&soon, &ms);
  if (!tain_less(&soon, deadline)) return timedio_wait2(t->rfd, 0, xfd, deadline);
  r = timedio_wait2(t->rfd, 0, xfd, &soon);
  if (r >= 0 || errno != ETIMEDOUT) return r;
  if (!t->olen) pagedrop_buf(t->obuf, t->osize);
  pagedrop_buf(t->ibuf + t->ilen, t->isize - t->ilen);
  t->rest();
  {
    /* The wait itself goes on in pagedrop_poll, without the program's text; whatever it
     * returns, timedio_wait2 then says what happened. */
    struct pollfd p[2] = {{.fd = t->rfd, .events = POLLIN}, {.fd = xfd, .events = POLLIN}};
    tain left;
    int ms;
    if (!tain_now_g()) return -1;
    ms = tain_sub(&left, deadline, &STAMP) ? tain_to_millisecs(&left) : 0;
    if (ms > 0) (void)pagedrop_poll(p, xfd >= 0 ? 2 : 1, ms);
  }
  return timedio_wait2(t->rfd, 0, xfd, deadline);
}

/* One read(2) of the input fd, through the layer if there is one. */
static ssize_t rawread(timedio const *t, char *buf, size_t len)
{
  return t->layer ? t->layer->read(t->rfd, buf, len) : read(t->rfd, buf, len);
}

/* Reads into buf, waiting for input up to the deadline. > 0, 0 EOF, -1, TIMEDIO_TIMEOUT. */
static ssize_t readwait(timedio *t, char *buf, size_t len)
{
  for (;;) {
    tain d;
    ssize_t r = rawread(t, buf, len);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (!deadline_now(t, &d)) return -1;
    if (inwait(t, -1, &d) < 0) return errno == ETIMEDOUT ? TIMEDIO_TIMEOUT : -1;
  }
}

ssize_t timedio_fill(timedio *t)
{
  ssize_t r;
  if (t->ipos == t->ilen) t->ipos = t->ilen = 0;
  else if (t->ipos) {
    memmove(t->ibuf, t->ibuf + t->ipos, t->ilen - t->ipos);
    t->ilen -= t->ipos;
    t->ipos = 0;
  }
  if (!timedio_flush(t)) return -1;
  if (t->ilen == t->isize) return 0;
  r = readwait(t, t->ibuf + t->ilen, t->isize - t->ilen);
  if (r > 0) t->ilen += (size_t)r;
  return r;
}

int timedio_getline_in(timedio *t, char **line, size_t max, size_t *len)
{
  int dropping = 0;
  if (max > t->isize) max = t->isize;
  for (;;) {
    char *nl = memchr(t->ibuf + t->ipos, '\n', t->ilen - t->ipos);
    if (nl) {
      size_t n = (size_t)(nl - (t->ibuf + t->ipos)) + 1;
      *line = t->ibuf + t->ipos;
      t->ipos += n;
      if (dropping || n > max) return TIMEDIO_TOOLONG;
      *len = n;
      return 1;
    }
    if (t->ilen - t->ipos >= max) { /* no LF within max bytes: drop through the LF */
      dropping = 1;
      t->ipos = t->ilen = 0;
    }
    {
      ssize_t r = timedio_fill(t);
      if (r <= 0) return (int)r;
    }
  }
}

int timedio_getline(timedio *t, char *line, size_t max, size_t *len)
{
  char *s;
  int r = timedio_getline_in(t, &s, max, len);
  if (r == 1) memcpy(line, s, *len);
  if (r == TIMEDIO_TIMEOUT) {
    errno = ETIMEDOUT;
    return -1;
  }
  return r;
}

ssize_t timedio_read(timedio *t, char *buf, size_t len)
{
  size_t n = t->ilen - t->ipos;
  if (!len) return 0;
  if (!n) {
    ssize_t r;
    if (!timedio_flush(t)) return -1;
    r = readwait(t, buf, len);
    if (r == TIMEDIO_TIMEOUT) {
      errno = ETIMEDOUT;
      return -1;
    }
    return r;
  }
  if (n > len) n = len;
  memcpy(buf, t->ibuf + t->ipos, n);
  t->ipos += n;
  return (ssize_t)n;
}

int timedio_waitinput(timedio *t, int xfd, tain const *deadline)
{
  int r;
  if (timedio_buffered(t)) return 1;
  if (!timedio_flush(t)) return -1;
  r = inwait(t, xfd, deadline);
  if (r < 0 && errno == ETIMEDOUT) return 0;
  return r;
}
