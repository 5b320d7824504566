/* smtpd: see smtpd.h */
#include <errno.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/bytestr.h>
#include <skalibs/djbunix.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>

#include "addr.h"
#include "authfail.h"
#include "checkpw.h"
#include "dns.h"
#include "lookup.h"
#include "smtp.h"
#include "smtpd.h"
#include "timedio.h"
#include "ucspitls.h"

unsigned long smtpd_errors;

static int infd = -1, outfd = -1;
static char ibuf[SMTPD_IBUF];
static size_t ipos, ilen;
static stralloc out = STRALLOC_ZERO;
static unsigned int timeout = 300;
static tain session_end;
static void (*hook)(int, char const *);
static sigjmp_buf *jump;
static stralloc sasline = STRALLOC_ZERO; /* an AUTH answer, wiped after each step */

/* The deadline of the next wait: now + timeout, never past the session's end. */
static void deadline(tain *d)
{
  tain_now_g();
  tain_addsec_g(d, (int)timeout);
  if (tain_less(&session_end, d)) *d = session_end;
}

static void timed_out(void) gccattr_noreturn;
static void timed_out(void)
{
  ipos = ilen = 0;
  if (!tain_future(&session_end))
    smtpd_die(421, "4.4.2", "session time limit reached, closing", "session time limit");
  smtpd_die(421, "4.4.2", "idle timeout, closing", "timeout");
}

static int flush(void)
{
  tain d;
  int r;
  if (!out.len) return 1;
  deadline(&d);
  r = timedio_fdwrite(outfd, out.s, out.len, &d);
  out.len = 0;
  return r;
}

int smtpd_init(int in, int o, unsigned int t, unsigned int sessionmax,
               void (*atexit)(int, char const *))
{
  infd = in;
  outfd = o;
  ipos = ilen = 0;
  out.len = 0;
  smtpd_errors = 0;
  timeout = t ? t : 1;
  hook = atexit;
  tain_now_set_stopwatch_g();
  tain_addsec_g(&session_end, (int)sessionmax);
  return ndelay_on(infd) >= 0 && ndelay_on(outfd) >= 0;
}

void smtpd_quit(int code, char const *why)
{
  flush();
  if (hook) hook(code, why);
  if (jump && !code) siglongjmp(*jump, 1);
  _exit(code);
}

void smtpd_keepalive(sigjmp_buf *j)
{
  jump = j;
}

void smtpd_reset(void)
{
  if (infd > 2) fd_close(infd);
  if (outfd > 2 && outfd != infd) fd_close(outfd);
  infd = outfd = -1;
  ipos = ilen = 0;
  out.len = 0;
  smtpd_errors = 0;
  if (sasline.s) byte_zzero(sasline.s, sasline.a);
  sasline.len = 0;
  byte_zzero(ibuf, sizeof ibuf); /* the last client's bytes (an AUTH PLAIN line) */
}

void smtpd_reply(unsigned int code, char const *ecode, char const *text)
{
  if (!smtp_reply(&out, code, ecode, text, 0)) smtpd_quit(111, "out of memory");
  if (code >= 400 && code != 452 && code != 354) smtpd_errors++;
  if (out.len >= SMTPD_IBUF) smtpd_flush();
}

void smtpd_reply_more(unsigned int code, char const *ecode, char const *text)
{
  if (!smtp_reply(&out, code, ecode, text, 1)) smtpd_quit(111, "out of memory");
}

void smtpd_die(unsigned int code, char const *ecode, char const *text, char const *why)
{
  smtp_reply(&out, code, ecode, text, 0);
  smtpd_quit(0, why);
}

void smtpd_flush(void)
{
  if (!flush()) {
    if (errno == ETIMEDOUT) smtpd_quit(111, "write timeout");
    /* the client went away (as an EOF when reading): the session is over, not the program
     * (a pool worker takes its next connection instead of being replaced) */
    if (errno == EPIPE || errno == ECONNRESET) smtpd_quit(0, "disconnected");
    smtpd_quit(111, "write error");
  }
}

size_t smtpd_fill(void)
{
  tain d;
  ssize_t r;
  if (ipos < ilen) return ilen - ipos;
  ipos = ilen = 0;
  smtpd_flush();
  deadline(&d);
  r = timedio_fdread(infd, ibuf, sizeof ibuf, &d);
  if (r < 0) {
    if (errno == ETIMEDOUT) timed_out();
    return 0;
  }
  ilen = (size_t)r;
  return ilen;
}

char const *smtpd_input(void)
{
  return ibuf + ipos;
}

void smtpd_consume(size_t n)
{
  ipos += n;
}

int smtpd_getline(stralloc *line, size_t max)
{
  int toolong = 0;
  line->len = 0;
  for (;;) {
    size_t n = smtpd_fill(), i;
    char const *p = ibuf + ipos;
    if (!n) return 0;
    i = byte_chr(p, n, '\n');
    if (!toolong) {
      if (line->len + i > max) toolong = 1;
      else if (!stralloc_catb(line, p, i)) smtpd_quit(111, "out of memory");
    }
    if (i < n) {
      ipos += i + 1;
      if (toolong) return -1;
      if (line->len && line->s[line->len - 1] == '\r') line->len--;
      if (!stralloc_0(line)) smtpd_quit(111, "out of memory");
      line->len--;
      return 1;
    }
    ipos += n;
  }
}

int smtpd_pending(unsigned long waitms)
{
  int n = 0;
  if (ipos < ilen) return 1;
  if (waitms) {
    tain d, w;
    tain_from_millisecs(&w, (int)waitms);
    tain_now_g();
    tain_add_g(&d, &w);
    timedio_wait(infd, 0, &d);
  }
  return ioctl(infd, FIONREAD, &n) == 0 && n > 0;
}

int smtpd_starttls(void)
{
  int rfd, wfd;
  smtpd_flush();
  if (!ucspitls_start(&rfd, &wfd)) return 0;
  if (ndelay_on(rfd) < 0 || ndelay_on(wfd) < 0) smtpd_quit(111, "set TLS fds non-blocking");
  coe(rfd);
  coe(wfd);
  infd = rfd;
  outfd = wfd;
  ipos = ilen = 0; /* RFC 3207 4.2: what was pipelined in clear is dropped */
  return 1;
}

int smtpd_sasl(saslserv *s, char const *arg, size_t len)
{
  stralloc *line = &sasline;
  char const *ch;
  int r = saslserv_start(s, arg, len, &ch);
  while (r == SASLSERV_CHALLENGE) {
    int g;
    smtpd_reply(334, 0, ch);
    g = smtpd_getline(line, SASL_RESPONSE_MAX);
    if (!g) smtpd_quit(0, "disconnected in AUTH");
    if (g < 0) { r = SASLSERV_ETOOLONG; break; }
    r = saslserv_step(s, line->s, line->len, &ch);
    byte_zzero(line->s, line->len);
  }
  return r;
}

unsigned int smtpd_sasl_error(int r, char const **ecode, char const **text)
{
  switch (r) {
    case SASLSERV_DONE: case SASLSERV_EAUTHZ: return 0;
    case SASLSERV_ESYNTAX:
      *ecode = "5.5.4";
      *text = "syntax: AUTH mechanism [initial-response]";
      return 501;
    case SASLSERV_EMECH: *ecode = "5.5.4"; *text = "mechanism not supported"; return 504;
    case SASLSERV_ECANCEL: *ecode = "5.7.0"; *text = "authentication cancelled"; return 501;
    case SASLSERV_EBASE64: *ecode = "5.5.2"; *text = "bad base64"; return 501;
    case SASLSERV_ETOOLONG:
      *ecode = "5.5.6";
      *text = "authentication exchange too long";
      return 500;
    default: *ecode = "5.5.2"; *text = "malformed authentication response"; return 501;
  }
}

int smtpd_auth_attempt(char const *ip)
{
  int r = authfail_attempt(ip);
  if (r < 0) strerr_warnwusys("record a login attempt");
  if (r) return 1;
  smtpd_reply(454, "4.7.0", "too many failed logins from your address, try later");
  return 0;
}

void smtpd_auth_ok(char const *ip, char const *user, size_t len, stralloc *out)
{
  account acc = ACCOUNT_ZERO;
  if (authfail_forgive(ip) < 0) strerr_warnwusys("record a good login");
  out->len = 0;
  if (lookup_account_nohash(user, len, &acc) > 0 && acc.address.len > 1) {
    if (!addr_fold(acc.address.s, acc.address.len - 1, out)) smtpd_quit(111, "out of memory");
  } else if (!addr_fold(user, len, out)) smtpd_quit(111, "out of memory");
  account_free(&acc);
  if (!stralloc_0(out)) smtpd_quit(111, "out of memory");
  out->len--;
}

static void auth_failed(char const *ip, unsigned long delay, unsigned int *failures)
{
  ++*failures;
  strerr_warni("auth failed ip=", ip);
  smtpd_reply(535, "5.7.8", "authentication credentials invalid");
  if (*failures >= 3) smtpd_die(421, "4.7.0", "too many failed logins, closing", "auth failures");
  smtpd_flush();
  if (delay) sleep((unsigned int)(delay * *failures));
}

static void auth_check(saslserv *s, char const *ip, unsigned long delay, unsigned int *failures,
                       stralloc *user)
{
  int r;
  if (!smtpd_auth_attempt(ip)) return;
  r = checkpw(s->user, s->userlen, s->pass, s->passlen);
  if (r == CHECKPW_OK) {
    smtpd_auth_ok(ip, s->user, s->userlen, user);
    strerr_warni("auth ok ip=", ip, " user=", user->s);
    smtpd_reply(235, "2.7.0", "authentication successful");
  } else if (r == CHECKPW_BAD) auth_failed(ip, delay, failures);
  else {
    /* No decision: not a guess (retries through an auth outage are not locked out) */
    if (authfail_forgive(ip) < 0) strerr_warnwusys("record an undecided login");
    smtpd_reply(454, "4.7.0", "temporary authentication failure");
  }
}

void smtpd_auth(saslserv *s, char const *arg, size_t len, char const *ip, unsigned long delay,
                unsigned int *failures, stralloc *user)
{
  char const *ecode, *text;
  unsigned int code;
  int r = authfail_blocked(ip);
  if (r < 0) strerr_warnwusys("read the failed login table");
  if (r > 0) {
    smtpd_reply(454, "4.7.0", "too many failed logins from your address, try later");
    return;
  }
  r = smtpd_sasl(s, arg, len);
  if (r == SASLSERV_DONE) auth_check(s, ip, delay, failures, user);
  else if (r == SASLSERV_EAUTHZ) {
    if (smtpd_auth_attempt(ip)) auth_failed(ip, delay, failures);
  } else if ((code = smtpd_sasl_error(r, &ecode, &text))) smtpd_reply(code, ecode, text);
  saslserv_wipe(s);
}

void smtpd_rcptlist(stralloc *out, char const *rcpts, size_t len, unsigned int max)
{
  size_t i;
  unsigned int k = 0;
  out->len = 0;
  for (i = 0; i < len && k < max; i += strlen(rcpts + i) + 1, k++)
    if (!stralloc_cats(out, k ? ",<" : "<") || !stralloc_cats(out, rcpts + i + 1) ||
        !stralloc_cats(out, ">"))
      smtpd_quit(111, "out of memory");
  if ((i < len && !stralloc_cats(out, ",...")) || !stralloc_0(out))
    smtpd_quit(111, "out of memory");
}

char const *smtpd_client_name(char const *ip)
{
  static char name[DNS_NAME_MAX + 1];
  char const *x = getenv("SMTP_RDNS");
  if (!x || !*x || !strcmp(x, "0") || !getenv("TCPREMOTEIP")) return 0;
  return dns_client_name(ip, name) ? name : 0;
}
