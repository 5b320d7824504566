/* dsn: bounces as RFC 3464 multipart/report. See dsn.h and doc/maildir.md. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/random.h>
#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "dsn.h"

#define DSN_FIELD_MAX 900      /* a field value is cut here (RFC 5322 lines stay < 998) */
#define DSN_HEADERS_MAX 65536  /* at most this much of the original header is returned */

static unsigned long dsn_counter;

static int cat(stralloc *sa, char const *s) { return stralloc_cats(sa, s); }

/* appends s, printable ASCII only (controls become ' ', 8-bit becomes '?'), cut at max */
static int catclean(stralloc *sa, char const *s, size_t max)
{
  size_t i, n = strlen(s);
  if (n > max) n = max;
  if (!stralloc_readyplus(sa, n)) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    sa->s[sa->len++] = c < 32 || c == 127 ? ' ' : c > 127 ? '?' : (char)c;
  }
  return 1;
}

static int catdate(stralloc *sa, time_t t)
{
  static char const *const wd[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static char const *const mo[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  char buf[64];
  char fmt[UINT_FMT];
  size_t n = 0;
  if (!gmtime_r(&t, &tm)) {
    t = 0;
    if (!gmtime_r(&t, &tm)) return 0;
  }
  memcpy(buf + n, wd[tm.tm_wday % 7], 3);
  n += 3;
  buf[n++] = ',';
  buf[n++] = ' ';
  n += uint_fmt(buf + n, (unsigned int)tm.tm_mday);
  buf[n++] = ' ';
  memcpy(buf + n, mo[tm.tm_mon % 12], 3);
  n += 3;
  buf[n++] = ' ';
  n += uint_fmt(buf + n, (unsigned int)(tm.tm_year + 1900));
  buf[n++] = ' ';
  fmt[0] = '0' + tm.tm_hour / 10;
  fmt[1] = '0' + tm.tm_hour % 10;
  fmt[2] = ':';
  fmt[3] = '0' + tm.tm_min / 10;
  fmt[4] = '0' + tm.tm_min % 10;
  fmt[5] = ':';
  fmt[6] = '0' + tm.tm_sec / 10 % 10;
  fmt[7] = '0' + tm.tm_sec % 10;
  memcpy(buf + n, fmt, 8);
  n += 8;
  memcpy(buf + n, " +0000", 6);
  n += 6;
  return stralloc_catb(sa, buf, n);
}

/* "X.Y.Z" with X in 2, 4, 5, Y up to 3 digits, Z up to 3 digits */
static int status_ok(char const *s)
{
  size_t i = 1, k;
  if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return 0;
  for (k = 0; k < 2; k++) {
    size_t d = 0;
    i++;
    while (s[i] >= '0' && s[i] <= '9') i++, d++;
    if (!d || d > 3) return 0;
    if (k == 0 && s[i] != '.') return 0;
  }
  return s[i] == 0;
}

/* a diagnostic already typed as "smtp; ..." or "x-foo; ..." */
static int typed(char const *s)
{
  size_t i = 0;
  while ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
         (s[i] >= '0' && s[i] <= '9') || s[i] == '-')
    i++;
  return i > 0 && s[i] == ';';
}

/* end of the header section of m (LF or CRLF line ends), capped at DSN_HEADERS_MAX on a line
 * boundary */
static size_t header_end(char const *s, size_t len)
{
  size_t i = 0, lastline = 0;
  while (i < len) {
    char const *nl = memchr(s + i, '\n', len - i);
    size_t e = nl ? (size_t)(nl - s) + 1 : len;
    if (e - i == 1 || (e - i == 2 && s[i] == '\r')) return i; /* the empty line */
    if (e > DSN_HEADERS_MAX) return lastline;
    lastline = i = e;
  }
  return len;
}

static int contains(char const *hay, size_t hlen, char const *needle, size_t nlen)
{
  size_t i;
  if (nlen > hlen) return 0;
  for (i = 0; i + nlen <= hlen; i++)
    if (hay[i] == needle[0] && !memcmp(hay + i, needle, nlen)) return 1;
  return 0;
}

/* copies the original header lines with CRLF line ends; control characters (but tab) become
 * ' ' and a line is cut at 998 octets, so the bounce stays valid on the wire. 8-bit octets are
 * kept (RFC 6532 headers). */
static int cathead(stralloc *sa, char const *s, size_t len)
{
  size_t i = 0;
  while (i < len) {
    char const *nl = memchr(s + i, '\n', len - i);
    size_t e = nl ? (size_t)(nl - s) : len;
    size_t l = e, k;
    if (l > i && s[l - 1] == '\r') l--;
    if (l - i > 998) l = i + 998;
    if (!stralloc_readyplus(sa, l - i + 2)) return 0;
    for (k = i; k < l; k++) {
      unsigned char c = (unsigned char)s[k];
      sa->s[sa->len++] = (c < 32 && c != '\t') || c == 127 ? ' ' : (char)c;
    }
    sa->s[sa->len++] = '\r';
    sa->s[sa->len++] = '\n';
    i = e + 1;
  }
  return 1;
}

static void hex(char *d, unsigned char const *s, size_t n)
{
  static char const x[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    d[2 * i] = x[s[i] >> 4];
    d[2 * i + 1] = x[s[i] & 15];
  }
}

int dsn_build(stralloc *out, dsn_msg const *m, dsn_rcpt const *r, size_t n)
{
  size_t base = out->len, hlen, i;
  char boundary[80];
  char msgid[40];
  char fmt[ULONG_FMT];
  int anyfailed = 0;
  unsigned int tries;
  char const *me = m->me && m->me[0] ? m->me : "localhost";
  hlen = m->message ? header_end(m->message, m->messagelen) : 0;
  for (i = 0; i < n; i++)
    if (!r[i].action_delayed) anyfailed = 1;

  dsn_counter++;
  for (tries = 0;; tries++) {
    unsigned char rnd[12];
    size_t k;
    random_buf((char *)rnd, sizeof rnd);
    memcpy(boundary, "=_pillarbox_", 12);
    k = 12 + ulong_fmt(boundary + 12, (unsigned long)m->now);
    boundary[k++] = '_';
    hex(boundary + k, rnd, sizeof rnd);
    k += 2 * sizeof rnd;
    boundary[k] = 0;
    hex(msgid, rnd, 8);
    msgid[16] = 0;
    if (!contains(m->message, hlen, boundary, k) || tries >= 4) break;
  }

  if (!cat(out, "From: Mail Delivery System <MAILER-DAEMON@") || !catclean(out, me, 255) ||
      !cat(out, ">\r\nTo: "))
    goto nomem;
  if (m->to && m->to[0]) {
    if (!cat(out, "<") || !catclean(out, m->to, DSN_FIELD_MAX) || !cat(out, ">\r\n")) goto nomem;
  } else if (!cat(out, "undisclosed-recipients:;\r\n"))
    goto nomem;
  if (!cat(out, anyfailed ? "Subject: Undelivered Mail Returned to Sender\r\n"
                          : "Subject: Delayed Mail (still being retried)\r\n") ||
      !cat(out, "Date: ") || !catdate(out, m->now) || !cat(out, "\r\nMessage-ID: <") ||
      !stralloc_catb(out, fmt, ulong_fmt(fmt, (unsigned long)m->now)) || !cat(out, ".") ||
      !stralloc_catb(out, fmt, ulong_fmt(fmt, (unsigned long)getpid())) || !cat(out, ".") ||
      !stralloc_catb(out, fmt, ulong_fmt(fmt, dsn_counter)) || !cat(out, ".") ||
      !cat(out, msgid) || !cat(out, ".bounce@") || !catclean(out, me, 255) ||
      !cat(out, ">\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                "\tboundary=\"") ||
      !cat(out, boundary) || !cat(out, "\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n"))
    goto nomem;

  /* 1: the explanation */
  if (!cat(out, "--") || !cat(out, boundary) ||
      !cat(out, "\r\nContent-Type: text/plain; charset=us-ascii\r\n"
                "Content-Description: Notification\r\n\r\n"
                "This is the mail system at host ") ||
      !catclean(out, me, 255) ||
      !cat(out, anyfailed ? ".\r\n\r\nI'm sorry to have to inform you that your message could\r\n"
                            "not be delivered to one or more recipients. The details are\r\n"
                            "below.\r\n\r\n"
                          : ".\r\n\r\nYour message has not been delivered yet to one or\r\n"
                            "more recipients. Delivery will be tried again; you need not\r\n"
                            "resend it.\r\n\r\n"))
    goto nomem;
  for (i = 0; i < n; i++) {
    if (!cat(out, "<") || !catclean(out, r[i].rcpt ? r[i].rcpt : "", DSN_FIELD_MAX) ||
        !cat(out, r[i].action_delayed ? ">: delayed" : ">: failed"))
      goto nomem;
    if (r[i].diagnostic && (!cat(out, ": ") || !catclean(out, r[i].diagnostic, DSN_FIELD_MAX)))
      goto nomem;
    if (!cat(out, "\r\n")) goto nomem;
  }
  if (!cat(out, "\r\n")) goto nomem;

  /* 2: the machine-readable report */
  if (!cat(out, "--") || !cat(out, boundary) ||
      !cat(out, "\r\nContent-Type: message/delivery-status\r\n"
                "Content-Description: Delivery report\r\n\r\n"
                "Reporting-MTA: dns; ") ||
      !catclean(out, me, 255) || !cat(out, "\r\n"))
    goto nomem;
  if (m->queueid && m->queueid[0] &&
      (!cat(out, "X-Pillarbox-Queue-ID: ") || !catclean(out, m->queueid, 255) || !cat(out, "\r\n")))
    goto nomem;
  if (!cat(out, "Arrival-Date: ") || !catdate(out, m->arrival) || !cat(out, "\r\n")) goto nomem;
  for (i = 0; i < n; i++) {
    char const *st = r[i].status;
    /* the class follows the action (RFC 3464 2.3.3), except 4.4.7: the queue lifetime ran
     * out on a persistent transient error (RFC 3463 X.4.7), reported as failed with its
     * own 4.4.7 as Postfix and Exim do */
    if (!status_ok(st) || (r[i].action_delayed && st[0] != '4') ||
        (!r[i].action_delayed && st[0] != '5' && strcmp(st, "4.4.7")))
      st = r[i].action_delayed ? "4.0.0" : "5.0.0";
    if (!cat(out, "\r\nFinal-Recipient: rfc822; ") ||
        !catclean(out, r[i].rcpt ? r[i].rcpt : "", DSN_FIELD_MAX) ||
        !cat(out, r[i].action_delayed ? "\r\nAction: delayed\r\nStatus: "
                                      : "\r\nAction: failed\r\nStatus: ") ||
        !cat(out, st) || !cat(out, "\r\n"))
      goto nomem;
    if (r[i].remote_mta && r[i].remote_mta[0] &&
        (!cat(out, "Remote-MTA: dns; ") || !catclean(out, r[i].remote_mta, 255) ||
         !cat(out, "\r\n")))
      goto nomem;
    if (r[i].diagnostic && r[i].diagnostic[0] &&
        (!cat(out, "Diagnostic-Code: ") ||
         (!typed(r[i].diagnostic) && !cat(out, "x-pillarbox; ")) ||
         !catclean(out, r[i].diagnostic, DSN_FIELD_MAX) || !cat(out, "\r\n")))
      goto nomem;
    if (!cat(out, "Last-Attempt-Date: ") || !catdate(out, m->now) || !cat(out, "\r\n"))
      goto nomem;
  }
  if (!cat(out, "\r\n")) goto nomem;

  /* 3: the original header */
  if (!cat(out, "--") || !cat(out, boundary) ||
      !cat(out, "\r\nContent-Type: text/rfc822-headers\r\n"
                "Content-Description: Undelivered message headers\r\n\r\n") ||
      (hlen && !cathead(out, m->message, hlen)) || !cat(out, "\r\n--") || !cat(out, boundary) ||
      !cat(out, "--\r\n"))
    goto nomem;
  return 1;
nomem:
  out->len = base;
  return 0;
}
