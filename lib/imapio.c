/* imapio: the session I/O of imap-serve and imap-maildir. See imapio.h. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>
#include "imapio.h"
#include "timedio.h"

static int rfd = 0, wfd = 1;
static unsigned int timeout = 1800;
static char ibuf[IMAPIO_IBUF];
static size_t ipos, ilen;
static char obuf[IMAPIO_OBUF];
static size_t olen;
static size_t cmdmax = IMAPIO_CMD_MAX;
static uint64_t litmax = IMAPIO_CMD_MAX;
static imapio_layer const *layer;

void imapio_setlayer(imapio_layer const *l)
{
  layer = l;
}

int imapio_init(int r, int w, unsigned int t)
{
  int one = 1;
  rfd = r;
  wfd = w;
  timeout = t ? t : 1;
  if (ndelay_on(rfd) < 0 || ndelay_on(wfd) < 0) return 0;
  setsockopt(wfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* a pipe: ENOTSOCK is fine */
  return 1;
}

void imapio_setlimits(size_t c, uint64_t l)
{
  cmdmax = c < IMAPIO_CMD_MAX ? c : IMAPIO_CMD_MAX;
  litmax = l;
}

void imapio_settimeout(unsigned int t)
{
  timeout = t ? t : 1;
}

void imapio_discard(void)
{
  ipos = ilen = 0;
}

int imapio_preload(char const *s, size_t len)
{
  if (len > sizeof ibuf - (ilen - ipos)) return 0;
  memmove(ibuf + len, ibuf + ipos, ilen - ipos);
  memcpy(ibuf, s, len);
  ilen = ilen - ipos + len;
  ipos = 0;
  return 1;
}

size_t imapio_pending(char const **s)
{
  *s = ibuf + ipos;
  return ilen - ipos;
}

int imapio_buffered(void)
{
  return ipos < ilen || (layer && layer->pending());
}

/* Waits for fd (read or write) or xfd (read), at most ms milliseconds (lib/timedio's wait).
 * 1 fd ready, 2 xfd ready, 0 deadline, -1 error. */
static int waitfds(int fd, int forwrite, int xfd, unsigned long ms)
{
  tain deadline, d;
  int r;
  if (!tain_now_g()) return -1;
  if (ms > 86400000UL) ms = 86400000UL;
  if (!tain_from_millisecs(&d, (int)ms)) return -1;
  tain_add_g(&deadline, &d);
  r = timedio_wait2(fd, forwrite, xfd, &deadline);
  if (r < 0 && errno == ETIMEDOUT) return 0;
  return r;
}

int imapio_flush(void)
{
  char const *p = obuf;
  size_t n = olen, done = 0;
  if (layer && olen && !layer->out(obuf, olen, &p, &n)) return 0;
  while (done < n) {
    ssize_t w = write(wfd, p + done, n - done);
    if (w < 0) {
      int r;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return 0;
      r = waitfds(wfd, 1, -1, (unsigned long)timeout * 1000);
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

int imapio_put(char const *s, size_t len)
{
  while (len) {
    size_t n = sizeof obuf - olen;
    if (!n) {
      if (!imapio_flush()) return 0;
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

int imapio_puts(char const *s)
{
  return imapio_put(s, strlen(s));
}

int imapio_putu(uint64_t u)
{
  char fmt[UINT64_FMT];
  return imapio_put(fmt, uint64_fmt(fmt, u));
}

/* Reads more input (after flushing the output). 1, or IMAPIO_EOF/ERR/TIMEOUT. */
static int fill(void)
{
  if (ipos == ilen) ipos = ilen = 0;
  else if (ipos) {
    memmove(ibuf, ibuf + ipos, ilen - ipos);
    ilen -= ipos;
    ipos = 0;
  }
  if (olen && !imapio_flush()) return IMAPIO_ERR;
  for (;;) {
    ssize_t r = layer ? layer->read(rfd, ibuf + ilen, sizeof ibuf - ilen)
                      : read(rfd, ibuf + ilen, sizeof ibuf - ilen);
    if (r > 0) {
      ilen += (size_t)r;
      return 1;
    }
    if (!r) return IMAPIO_EOF;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return IMAPIO_ERR;
    r = waitfds(rfd, 0, -1, (unsigned long)timeout * 1000);
    if (r < 0) return IMAPIO_ERR;
    if (!r) return IMAPIO_TIMEOUT;
  }
}

int imapio_wait(int fd, unsigned long ms)
{
  int r;
  if (ipos < ilen || (layer && layer->pending())) return 1;
  if (olen && !imapio_flush()) return -1;
  r = waitfds(rfd, 0, fd, ms);
  return r;
}

/* Appends one line (up to and including LF) to sa. 1, IMAPIO_TOOLONG (the line was dropped up
 * to its LF; sa keeps what it had plus at most max octets), or EOF/ERR/TIMEOUT. */
static int getline_sa(stralloc *sa, size_t max)
{
  size_t got = 0;
  int discarding = 0;
  for (;;) {
    char *nl = memchr(ibuf + ipos, '\n', ilen - ipos);
    size_t n = nl ? (size_t)(nl - (ibuf + ipos)) + 1 : ilen - ipos;
    if (!discarding) {
      if (got + n > max) {
        discarding = 1;
      } else {
        if (!stralloc_catb(sa, ibuf + ipos, n)) return IMAPIO_ERR;
        got += n;
      }
    }
    ipos += n;
    if (nl) return discarding ? IMAPIO_TOOLONG : 1;
    {
      int r = fill();
      if (r != 1) return r;
    }
  }
}

int imapio_readline(stralloc *line, size_t max)
{
  int r;
  line->len = 0;
  r = getline_sa(line, max + 2);
  if (r != 1) return r;
  if (line->len && line->s[line->len - 1] == '\n') line->len--;
  if (line->len && line->s[line->len - 1] == '\r') line->len--;
  return 1;
}

/* Moves n octets of input to fd (or drops them when fd < 0). 1 ok (*werr set on a write
 * failure), or EOF/ERR/TIMEOUT. */
static int copy_literal(uint64_t n, int fd, int *werr)
{
  while (n) {
    size_t k = ilen - ipos;
    if (!k) {
      int r = fill();
      if (r != 1) return r;
      continue;
    }
    if (k > n) k = (size_t)n;
    if (fd >= 0 && !*werr && allwrite(fd, ibuf + ipos, k) < k) *werr = 1;
    ipos += k;
    n -= k;
  }
  return 1;
}

static int read_literal_into(stralloc *sa, uint64_t n)
{
  while (n) {
    size_t k = ilen - ipos;
    if (!k) {
      int r = fill();
      if (r != 1) return r;
      continue;
    }
    if (k > n) k = (size_t)n;
    if (!stralloc_catb(sa, ibuf + ipos, k)) return IMAPIO_ERR;
    ipos += k;
    n -= k;
  }
  return 1;
}

/* Is the command in cmd (so far) an APPEND? Looks at the second word. */
static int is_append(char const *s, size_t len)
{
  size_t i = 0, j;
  while (i < len && s[i] != ' ') i++;
  if (i >= len) return 0;
  j = ++i;
  while (j < len && s[j] != ' ') j++;
  return imap_ieq(s + i, j - i, "APPEND");
}

int imapio_readcmd(stralloc *cmd, imap_cmd *c, imapio_spool *sp)
{
  cmd->len = 0;
  c->nspool = 0;
  if (sp) sp->spool_failed = 0;
  for (;;) {
    size_t start = cmd->len, linelen;
    uint64_t n;
    int nonsync, r;
    size_t at;
    size_t room = cmdmax > cmd->len ? cmdmax - cmd->len : 0;
    r = getline_sa(cmd, room < IMAPIO_LINE_MAX ? room : IMAPIO_LINE_MAX);
    if (r != 1) return r;
    linelen = cmd->len - start;
    if (linelen && cmd->s[cmd->len - 1] == '\n') linelen--;
    if (linelen && cmd->s[start + linelen - 1] == '\r') linelen--;
    r = imap_literal_tail(cmd->s + start, linelen, &n, &nonsync, &at);
    if (!r) return 1;
    if (r < 0) return IMAPIO_BADLIT;
    at += start;
    if (sp && sp->spool_open && is_append(cmd->s, cmd->len) &&
        (n > sp->max_literal || (n > IMAPIO_SPOOL_MIN && c->nspool >= IMAP_SPOOL_MAX))) {
      if (nonsync) return IMAPIO_FATAL;
      cmd->len = at;
      return IMAPIO_TOOBIG;
    }
    if (sp && sp->spool_open && n > IMAPIO_SPOOL_MIN && is_append(cmd->s, cmd->len)) {
      int fd = -1, werr = 0;
      if (!nonsync) {
        if (!imapio_puts("+ OK\r\n") || !imapio_flush()) return IMAPIO_ERR;
      }
      fd = sp->spool_open(sp->ctx, n);
      if (fd < 0) sp->spool_failed = 1;
      r = copy_literal(n, fd, &werr);
      if (werr) sp->spool_failed = 1;
      sp->fd[c->nspool] = fd;
      c->spool_at[c->nspool++] = at;
      if (r != 1) return r;
      continue;
    }
    if (n > litmax || n > cmdmax || cmd->len + n > cmdmax) {
      if (nonsync) return IMAPIO_FATAL;
      cmd->len = at;
      return IMAPIO_TOOBIG;
    }
    if (!nonsync) {
      if (!imapio_puts("+ OK\r\n") || !imapio_flush()) return IMAPIO_ERR;
    }
    r = read_literal_into(cmd, n);
    if (r != 1) return r;
  }
}
