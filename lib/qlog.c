/* qlog: delivery log line pieces. See qlog.h. */
#include <string.h>
#include <time.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "qlog.h"

size_t qlog_delay(char *buf, char const *id, uint64_t arrival)
{
  struct timespec ts;
  uint64_t arr = arrival * 100, cs, sec, usec;
  char const *dot = strchr(id, '.');
  size_t n;
  if (dot && uint64_scan(id, &sec) == (size_t)(dot - id) && uint64_scan(dot + 1, &usec) == 6)
    arr = sec * 100 + usec / 10000;
  if (clock_gettime(CLOCK_REALTIME, &ts) < 0) ts.tv_sec = time(0), ts.tv_nsec = 0;
  cs = (uint64_t)ts.tv_sec * 100 + (uint64_t)ts.tv_nsec / 10000000;
  cs = cs > arr ? cs - arr : 0;
  n = uint64_fmt(buf, cs / 100);
  buf[n++] = '.';
  buf[n++] = (char)('0' + cs % 100 / 10);
  buf[n++] = (char)('0' + cs % 10);
  buf[n] = 0;
  return n;
}

char const *qlog_shown(char const *d)
{
  if (!strncmp(d, "R=", 2)) {
    char const *sp = strchr(d, ' ');
    d = sp ? sp + 1 : "";
  }
  if (!strncmp(d, "x-pillarbox; ", 13)) d += 13;
  return d;
}

#define LOG_WRITE 4096
static stralloc logbuf = STRALLOC_ZERO;

void qlog_flush(void)
{
  size_t p = 0;
  while (p < logbuf.len) {
    size_t n = logbuf.len - p, e;
    if (n > LOG_WRITE) { /* up to the last whole line that fits (one longer line: alone) */
      for (e = LOG_WRITE; e > 0 && logbuf.s[p + e - 1] != '\n'; e--)
        ;
      if (e) n = e;
    }
    if (allwrite(1, logbuf.s + p, n) != n) break;
    p += n;
  }
  logbuf.len = 0;
}

void qlog_line(char const *const *v, unsigned int n)
{
  unsigned int i;
  size_t start = logbuf.len;
  for (i = 0; i < n; i++)
    if (v[i] && !stralloc_cats(&logbuf, v[i])) goto nomem;
  if (!stralloc_catb(&logbuf, "\n", 1)) goto nomem;
  if (logbuf.len >= 65536) qlog_flush();
  return;
nomem:
  logbuf.len = start;
}
