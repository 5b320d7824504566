/* imapio: the session I/O of imap-serve and imap-maildir: a lib/timedio session with IMAP's
 * buffer sizes, idle timer and layer, and whole commands with their literals. See imapio.h. */
#include <errno.h>
#include <string.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>
#include "imapio.h"
#include "timedio.h"

static char ibuf[IMAPIO_IBUF];
static char obuf[IMAPIO_OBUF];
static timedio S = {.ibuf = ibuf, .isize = sizeof ibuf, .obuf = obuf, .osize = sizeof obuf,
                    .idle = 1800, .wfd = 1};
static size_t cmdmax = IMAPIO_CMD_MAX;
static uint64_t litmax = IMAPIO_CMD_MAX;

void imapio_setlayer(imapio_layer const *l)
{
  timedio_setlayer(&S, l);
}

int imapio_init(int r, int w, unsigned int t)
{
  if (!timedio_usefds(&S, r, w)) return 0;
  timedio_idle(&S, t ? t : 1);
  return 1;
}

void imapio_onrest(void (*rest)(void))
{
  timedio_onrest(&S, rest, TIMEDIO_REST_MS);
}

void imapio_setlimits(size_t c, uint64_t l)
{
  cmdmax = c < IMAPIO_CMD_MAX ? c : IMAPIO_CMD_MAX;
  litmax = l;
}

void imapio_settimeout(unsigned int t)
{
  timedio_idle(&S, t ? t : 1);
}

void imapio_forget(void)
{
  timedio_forget(&S);
}

void imapio_discard(void)
{
  timedio_discard(&S);
}

int imapio_preload(char const *s, size_t len)
{
  return timedio_preload(&S, s, len);
}

size_t imapio_pending(char const **s)
{
  return timedio_input(&S, s);
}

int imapio_buffered(void)
{
  return timedio_buffered(&S);
}

int imapio_flush(void)
{
  return timedio_flush(&S);
}

int imapio_put(char const *s, size_t len)
{
  return timedio_put(&S, s, len);
}

int imapio_puts(char const *s)
{
  return timedio_put(&S, s, strlen(s));
}

int imapio_putu(uint64_t u)
{
  char fmt[UINT64_FMT];
  return timedio_put(&S, fmt, uint64_fmt(fmt, u));
}

/* Reads more input (after flushing the output). 1, or IMAPIO_EOF/ERR/TIMEOUT. */
static int fill(void)
{
  ssize_t r = timedio_fill(&S);
  if (r > 0) return 1;
  if (r == TIMEDIO_TIMEOUT) return IMAPIO_TIMEOUT;
  return r < 0 ? IMAPIO_ERR : IMAPIO_EOF;
}

int imapio_wait(int fd, unsigned long ms)
{
  tain deadline, d;
  if (timedio_buffered(&S)) return 1;
  if (ms > 86400000UL) ms = 86400000UL;
  if (!tain_now_g() || !tain_from_millisecs(&d, (int)ms)) return -1;
  tain_add_g(&deadline, &d);
  return timedio_waitinput(&S, fd, &deadline);
}

/* Appends one line (up to and including LF) to sa. 1, IMAPIO_TOOLONG (the line was dropped up
 * to its LF; sa keeps what it had plus at most max octets), or EOF/ERR/TIMEOUT. */
static int getline_sa(stralloc *sa, size_t max)
{
  size_t got = 0;
  int discarding = 0;
  for (;;) {
    char *nl = memchr(S.ibuf + S.ipos, '\n', S.ilen - S.ipos);
    size_t n = nl ? (size_t)(nl - (S.ibuf + S.ipos)) + 1 : S.ilen - S.ipos;
    if (!discarding) {
      if (got + n > max) {
        discarding = 1;
      } else {
        if (!stralloc_catb(sa, S.ibuf + S.ipos, n)) return IMAPIO_ERR;
        got += n;
      }
    }
    S.ipos += n;
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

/* Moves n octets of input into sa, or (sa 0) to fd, or drops them (fd < 0). 1 ok (*werr set
 * on a write failure to fd), or EOF/ERR/TIMEOUT. */
static int take_literal(uint64_t n, stralloc *sa, int fd, int *werr)
{
  while (n) {
    size_t k = S.ilen - S.ipos;
    if (!k) {
      int r = fill();
      if (r != 1) return r;
      continue;
    }
    if (k > n) k = (size_t)n;
    if (sa) {
      if (!stralloc_catb(sa, S.ibuf + S.ipos, k)) return IMAPIO_ERR;
    } else if (fd >= 0 && !*werr && allwrite(fd, S.ibuf + S.ipos, k) < k) *werr = 1;
    S.ipos += k;
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
      r = take_literal(n, 0, fd, &werr);
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
    r = take_literal(n, cmd, -1, 0);
    if (r != 1) return r;
  }
}
