/* pop3io: the session I/O of pop3-serve and pop3-maildir. See pop3io.h. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <skalibs/djbunix.h>
#include <skalibs/tai.h>
#include "pop3io.h"
#include "timedio.h"

static int rfd = 0, wfd = 1;
static unsigned int timeout = 600;
static char ibuf[POP3IO_IBUF];
static size_t ipos, ilen;
static char obuf[POP3IO_OBUF];
static size_t olen;

int pop3io_init(int r, int w, unsigned int t)
{
  rfd = r;
  wfd = w;
  timeout = t ? t : 1;
  if (ndelay_on(rfd) < 0 || ndelay_on(wfd) < 0) return 0;
  {
    /* Replies are written whole, in few large writes: do not let Nagle hold back the tail of
     * one (a pipe under tls-serve is not a socket: ENOTSOCK is fine). */
    int one = 1;
    setsockopt(wfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return 1;
}

void pop3io_discard(void)
{
  ipos = ilen = 0;
}

int pop3io_preload(char const *s, size_t len)
{
  if (len > sizeof ibuf - (ilen - ipos)) return 0;
  memmove(ibuf + len, ibuf + ipos, ilen - ipos);
  memcpy(ibuf, s, len);
  ilen = ilen - ipos + len;
  ipos = 0;
  return 1;
}

size_t pop3io_pending(char const **s)
{
  *s = ibuf + ipos;
  return ilen - ipos;
}

size_t pop3io_pending_hex(char *out)
{
  static char const digits[] = "0123456789abcdef";
  size_t i, n = ilen - ipos;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)ibuf[ipos + i];
    out[2 * i] = digits[c >> 4];
    out[2 * i + 1] = digits[c & 15];
  }
  out[2 * n] = 0;
  return 2 * n;
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int pop3io_preload_hex(char const *hex)
{
  char tmp[POP3IO_IBUF];
  size_t n = strlen(hex), i;
  if (n & 1 || n / 2 > sizeof tmp) return 0;
  for (i = 0; i < n / 2; i++) {
    int h = hexval(hex[2 * i]), l = hexval(hex[2 * i + 1]);
    if (h < 0 || l < 0) return 0;
    tmp[i] = (char)(h << 4 | l);
  }
  return pop3io_preload(tmp, n / 2);
}

/* Waits until fd is ready for reading or writing, at most the idle timeout (lib/timedio).
 * 1 ready, 0 deadline passed, -1 error. */
static int waitfd(int fd, int forwrite)
{
  tain deadline;
  if (!tain_now_g()) return -1;
  tain_addsec_g(&deadline, (int)timeout);
  if (timedio_wait(fd, forwrite, &deadline) == 1) return 1;
  return errno == ETIMEDOUT ? 0 : -1;
}

int pop3io_flush(void)
{
  size_t done = 0;
  while (done < olen) {
    ssize_t w = write(wfd, obuf + done, olen - done);
    if (w < 0) {
      int r;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return 0;
      r = waitfd(wfd, 1);
      if (r < 0) return 0;
      if (!r) {
        errno = ETIMEDOUT;
        return 0;
      }
      continue;
    }
    done += (size_t)w;
  }
  olen = 0;
  return 1;
}

char *pop3io_room(size_t min, size_t *avail)
{
  if (sizeof obuf - olen < min && !pop3io_flush()) return 0;
  *avail = sizeof obuf - olen;
  return obuf + olen;
}

void pop3io_commit(size_t n)
{
  olen += n;
}

int pop3io_put(char const *s, size_t len)
{
  while (len) {
    size_t n = sizeof obuf - olen;
    if (!n) {
      if (!pop3io_flush()) return 0;
      continue;
    }
    if (n > len) n = len;
    memcpy(obuf + olen, s, n);
    olen += n;
    s += n;
    len -= n;
  }
  return 1;
}

int pop3io_puts(char const *s)
{
  return pop3io_put(s, strlen(s));
}

/* Reads more input. 1 got some, or a POP3IO_* result. */
static int fill(void)
{
  if (ipos) {
    memmove(ibuf, ibuf + ipos, ilen - ipos);
    ilen -= ipos;
    ipos = 0;
  }
  if (olen && !pop3io_flush()) return POP3IO_ERR;
  for (;;) {
    ssize_t r = read(rfd, ibuf + ilen, sizeof ibuf - ilen);
    if (r > 0) {
      ilen += (size_t)r;
      return 1;
    }
    if (!r) return POP3IO_EOF;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return POP3IO_ERR;
    r = waitfd(rfd, 0);
    if (r < 0) return POP3IO_ERR;
    if (!r) return POP3IO_TIMEOUT;
  }
}

int pop3io_getline(char **line, size_t *len, size_t max)
{
  int discarding = 0;
  if (max > sizeof ibuf) max = sizeof ibuf;
  for (;;) {
    char *nl = memchr(ibuf + ipos, '\n', ilen - ipos);
    if (nl) {
      size_t n = (size_t)(nl - (ibuf + ipos)) + 1;
      *line = ibuf + ipos;
      ipos += n;
      if (discarding || n > max) {
        *len = max + 1;
        return 1;
      }
      *len = n;
      return 1;
    }
    if (ilen - ipos >= max) {
      /* Too long: drop what we have and go on dropping until the LF. */
      discarding = 1;
      ipos = ilen = 0;
    }
    {
      int r = fill();
      if (r != 1) return r;
    }
  }
}

int pop3io_getcmd(char **line, size_t *len)
{
  int r = pop3io_getline(line, len, POP3IO_IBUF);
  if (r == POP3IO_TIMEOUT) {
    /* pop3io_getline flushed before waiting: the reply fits, only the write can fail */
    pop3io_puts("-ERR autologout: idle for too long\r\n");
    pop3io_flush();
  }
  return r;
}
