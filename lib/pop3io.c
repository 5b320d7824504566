/* pop3io: the session I/O of pop3-serve and pop3-maildir: a lib/timedio session with POP3's
 * buffer sizes and idle timer, and the hand-over of pipelined input. See pop3io.h. */
#include <string.h>
#include "pop3io.h"
#include "timedio.h"

static char ibuf[POP3IO_IBUF];
static char obuf[POP3IO_OBUF];
static timedio S = {.ibuf = ibuf, .isize = sizeof ibuf, .obuf = obuf, .osize = sizeof obuf,
                    .idle = 600, .wfd = 1};

int pop3io_init(int r, int w, unsigned int t)
{
  if (!timedio_usefds(&S, r, w)) return 0;
  timedio_idle(&S, t ? t : 1);
  return 1;
}

void pop3io_onrest(void (*rest)(void))
{
  timedio_onrest(&S, rest, TIMEDIO_REST_MS);
}

void pop3io_forget(void)
{
  timedio_forget(&S);
}

void pop3io_discard(void)
{
  timedio_discard(&S);
}

int pop3io_preload(char const *s, size_t len)
{
  return timedio_preload(&S, s, len);
}

size_t pop3io_pending(char const **s)
{
  return timedio_input(&S, s);
}

size_t pop3io_pending_hex(char *out)
{
  static char const digits[] = "0123456789abcdef";
  char const *s;
  size_t i, n = timedio_input(&S, &s);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
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

int pop3io_flush(void)
{
  return timedio_flush(&S);
}

char *pop3io_room(size_t min, size_t *avail)
{
  return timedio_room(&S, min, avail);
}

void pop3io_commit(size_t n)
{
  timedio_commit(&S, n);
}

int pop3io_put(char const *s, size_t len)
{
  return timedio_put(&S, s, len);
}

int pop3io_puts(char const *s)
{
  return timedio_put(&S, s, strlen(s));
}

int pop3io_getline(char **line, size_t *len, size_t max)
{
  int r;
  if (max > sizeof ibuf) max = sizeof ibuf;
  r = timedio_getline_in(&S, line, max, len);
  if (r == TIMEDIO_TOOLONG) {
    *len = max + 1;
    return 1;
  }
  if (r == TIMEDIO_TIMEOUT) return POP3IO_TIMEOUT;
  return r < 0 ? POP3IO_ERR : r;
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
