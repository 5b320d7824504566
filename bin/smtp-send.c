/* smtp-send: deliver one message to one remote domain's recipients over SMTP.
 *
 * smtp-send DOMAIN SENDER RCPT... ; the message on fd 0 (LF, CRLF or mixed line ends).
 * Routes (control/routes) first, else MX (lib/dns). One result line per recipient on fd 1:
 * K \t RCPT \t REMOTE-MTA \t DIAGNOSTIC \n, K = D delivered, T temporary, P permanent.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/buffer.h>
#include <skalibs/djbunix.h>
#include <skalibs/sgetopt.h>
#include <skalibs/sig.h>
#include <skalibs/socket.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "control.h"
#include "dns.h"
#include "timedio.h"
#include "tlsclient.h"

#define USAGE "smtp-send DOMAIN SENDER RCPT..."
char const *PROG = "smtp-send";

#define RCPTS_MAX 10000
#define ADDRESS_MAX 256
#define LINE_MAX_ 4096      /* longest reply line we keep (longer: protocol error) */
#define REPLY_LINES_MAX 200 /* lines in one multi-line reply */
#define DIAG_MAX 480
#define PIPELINE_BATCH 100

/* Policies from control/tls-policy. */
#define POL_NONE 0
#define POL_MAY 1
#define POL_ENCRYPT 2
#define POL_VERIFY 3

/* Timeouts in seconds (RFC 5321 4.5.3.2), each capped by $PILLARBOX_SMTP_TIMEOUT. */
static unsigned int to_connect = 60, to_greeting = 300, to_ehlo = 300, to_mail = 300,
                    to_rcpt = 300, to_datainit = 120, to_block = 180, to_dataend = 600,
                    to_quit = 10;

typedef struct rcpt_s rcpt;
struct rcpt_s {
  char const *addr;
  char state;       /* 0 pending, 'D', 'T', 'P' */
  int accepted;     /* RCPT accepted in the current session */
  stralloc diag;
  char const *remote;
};

static rcpt *rcpts;
static unsigned int nrcpts;
static char const *domain;
static char const *sender;
static stralloc me = STRALLOC_ZERO;
static stralloc msg = STRALLOC_ZERO;
static size_t wiresize;
static int eightbit, needutf8;
static int policy = POL_MAY;
static dns_result targets;
static unsigned int routeport; /* 0: no route */
static stralloc lasterr = STRALLOC_ZERO;

/* ---- the connection: plaintext or TLS, every wait bounded ---- */

static int fd = -1;
static tlsclient tls;
static int intls;
static char rbuf[8192];
static size_t rlen, rpos;
static tain deadline;
static char const *curhost; /* remote host name for results */
static char curdesc[DNS_NAME_MAX + 80];

static void set_deadline(unsigned int secs)
{
  tain_now_g();
  tain_addsec_g(&deadline, secs);
  if (intls) tlsclient_deadline(&tls, &deadline);
}

static int conn_write(char const *s, size_t len)
{
  if (intls) return tlsclient_write(&tls, s, len) ? 0 : -1;
  return timedio_fdwrite(fd, s, len, &deadline) ? 0 : -1;
}

static int conn_fill(void)
{
  ssize_t r;
  rpos = rlen = 0;
  r = intls ? tlsclient_read(&tls, rbuf, sizeof rbuf)
            : timedio_fdread(fd, rbuf, sizeof rbuf, &deadline);
  if (!r) errno = EPIPE;
  if (r <= 0) return -1;
  rlen = (size_t)r;
  return 0;
}

/* Reads one line (without CRLF) into line. 0 ok, -1 error/timeout, -2 line too long. */
static int conn_getline(stralloc *line)
{
  line->len = 0;
  for (;;) {
    while (rpos < rlen) {
      char c = rbuf[rpos++];
      if (c == '\n') {
        if (line->len && line->s[line->len - 1] == '\r') line->len--;
        return 0;
      }
      if (line->len >= LINE_MAX_) return -2;
      if (!stralloc_catb(line, &c, 1)) return -1;
    }
    if (conn_fill() < 0) return -1;
  }
}

static void conn_close(void)
{
  if (fd >= 0) fd_close(fd);
  fd = -1;
  intls = 0;
  rlen = rpos = 0;
}

/* ---- replies ---- */

typedef struct reply_s reply;
struct reply_s {
  unsigned int code;
  stralloc lines; /* each line's text after "ddd-", NUL-terminated */
  stralloc text;  /* "ddd text text ..." for diagnostics */
};
static reply rep = {0, STRALLOC_ZERO, STRALLOC_ZERO};

/* Appends s, with control bytes (tabs, CR, LF, ...) turned to spaces, bounded. */
static int cat_clean(stralloc *sa, char const *s, size_t len)
{
  size_t i;
  for (i = 0; i < len && sa->len < DIAG_MAX; i++) {
    char c = ((unsigned char)s[i] < 32 || s[i] == 127) ? ' ' : s[i];
    if (!stralloc_catb(sa, &c, 1)) return 0;
  }
  return 1;
}

static void fail_errno(char const *what);

/* Appends s to lasterr; out of memory is fatal. */
static void err_cat(char const *x)
{
  if (!stralloc_cats(&lasterr, x)) strerr_diefu(111, "allocate");
}

/* Reads a reply with the current deadline. Returns the code (200..599), or 0 on a network
 * error, timeout or protocol violation (lasterr set). */
static unsigned int get_reply(char const *what)
{
  static stralloc line = STRALLOC_ZERO;
  unsigned int n = 0, code = 0;
  rep.code = 0;
  rep.lines.len = 0;
  rep.text.len = 0;
  for (;;) {
    int r = conn_getline(&line);
    unsigned int c;
    if (r == -2) {
      lasterr.len = 0;
      err_cat("reply line too long after ");
      err_cat(what);
      return 0;
    }
    if (r < 0) {
      fail_errno(what);
      return 0;
    }
    if (line.len < 3 || line.s[0] < '2' || line.s[0] > '5' || line.s[1] < '0' ||
        line.s[1] > '9' || line.s[2] < '0' || line.s[2] > '9' ||
        (line.len > 3 && line.s[3] != ' ' && line.s[3] != '-'))
      goto bad;
    c = (unsigned int)(line.s[0] - '0') * 100 + (unsigned int)(line.s[1] - '0') * 10 +
        (unsigned int)(line.s[2] - '0');
    if (n && c != code) goto bad;
    code = c;
    if (++n > REPLY_LINES_MAX) goto bad;
    if (!stralloc_catb(&rep.lines, line.len > 4 ? line.s + 4 : "",
                       line.len > 4 ? line.len - 4 : 0) ||
        !stralloc_0(&rep.lines))
      strerr_diefu(111, "allocate");
    if (n == 1) {
      if (!cat_clean(&rep.text, line.s, 3) ||
          (line.len > 4 && (!cat_clean(&rep.text, " ", 1) ||
                            !cat_clean(&rep.text, line.s + 4, line.len - 4))))
        strerr_diefu(111, "allocate");
    } else if (line.len > 4) {
      if (!cat_clean(&rep.text, " ", 1) || !cat_clean(&rep.text, line.s + 4, line.len - 4))
        strerr_diefu(111, "allocate");
    }
    if (line.len == 3 || line.s[3] == ' ') break;
  }
  rep.code = code;
  return code;
bad:
  lasterr.len = 0;
  err_cat("protocol error: malformed reply after ");
  err_cat(what);
  return 0;
}

static void fail_errno(char const *what)
{
  int e = errno;
  lasterr.len = 0;
  if (e == ETIMEDOUT) {
    err_cat("timed out waiting for ");
    err_cat(what);
  } else {
    err_cat("connection lost during ");
    err_cat(what);
    err_cat(": ");
    err_cat((intls && tls.err[0]) ? tls.err : strerror(e));
  }
}

static void fail_reply(char const *what)
{
  lasterr.len = 0;
  err_cat(what);
  err_cat(": ");
  if (!stralloc_catb(&lasterr, rep.text.s, rep.text.len)) strerr_diefu(111, "allocate");
}

static int send_str(char const *s, char const *what)
{
  if (conn_write(s, strlen(s)) < 0) {
    fail_errno(what);
    return -1;
  }
  return 0;
}

static unsigned int command(char const *cmd, unsigned int timeout, char const *what)
{
  set_deadline(timeout);
  if (send_str(cmd, what) < 0) return 0;
  return get_reply(what);
}

static void quit(void)
{
  static stralloc keep = STRALLOC_ZERO; /* QUIT's own trouble is not the reason for anything */
  keep.len = 0;
  if (!stralloc_catb(&keep, lasterr.s ? lasterr.s : "", lasterr.len)) strerr_diefu(111, "allocate");
  set_deadline(to_quit);
  if (conn_write("QUIT\r\n", 6) == 0) get_reply("QUIT");
  lasterr.len = 0;
  if (!stralloc_catb(&lasterr, keep.s ? keep.s : "", keep.len)) strerr_diefu(111, "allocate");
  if (intls) tlsclient_close(&tls);
  conn_close();
}

/* ---- results ---- */

static void set_result(rcpt *r, char k, char const *diag, size_t len)
{
  r->state = k;
  r->remote = curhost ? curhost : "-";
  r->diag.len = 0;
  if (!cat_clean(&r->diag, diag, len)) strerr_diefu(111, "allocate");
}

static void set_all_pending(char k, char const *diag, size_t len)
{
  unsigned int i;
  for (i = 0; i < nrcpts; i++)
    if (!rcpts[i].state) set_result(&rcpts[i], k, diag, len);
}

/* ---- EHLO extensions ---- */

typedef struct ext_s ext;
struct ext_s {
  int ehlo, pipelining, size, eightbitmime, smtputf8, starttls;
  unsigned long sizelimit;
};
static ext ex;

static void parse_ehlo(void)
{
  size_t i = 0;
  int first = 1;
  memset(&ex, 0, sizeof ex);
  ex.ehlo = 1;
  while (i < rep.lines.len) {
    char const *l = rep.lines.s + i;
    size_t n = strlen(l);
    i += n + 1;
    if (first) { /* the first line is the server's name */
      first = 0;
      continue;
    }
    if (!strcasecmp(l, "PIPELINING")) ex.pipelining = 1;
    else if (!strcasecmp(l, "8BITMIME")) ex.eightbitmime = 1;
    else if (!strcasecmp(l, "SMTPUTF8")) ex.smtputf8 = 1;
    else if (!strcasecmp(l, "STARTTLS")) ex.starttls = 1;
    else if (!strncasecmp(l, "SIZE", 4) && (l[4] == ' ' || !l[4])) {
      ex.size = 1;
      ex.sizelimit = l[4] ? strtoul(l + 5, 0, 10) : 0;
    }
  }
}

/* EHLO, or HELO when EHLO is refused. 0 ok, -1 session failure (lasterr set). */
static int hello(void)
{
  static stralloc cmd = STRALLOC_ZERO;
  unsigned int c;
  cmd.len = 0;
  if (!stralloc_cats(&cmd, "EHLO ") || !stralloc_catb(&cmd, me.s, me.len) ||
      !stralloc_cats(&cmd, "\r\n") || !stralloc_0(&cmd))
    strerr_diefu(111, "allocate");
  c = command(cmd.s, to_ehlo, "EHLO");
  if (!c) return -1;
  if (c >= 200 && c < 300) {
    parse_ehlo();
    return 0;
  }
  if (c == 421) {
    fail_reply("EHLO");
    return -1;
  }
  memset(&ex, 0, sizeof ex);
  cmd.s[0] = 'H'; /* "EHLO " -> "HELO " */
  cmd.s[1] = 'E';
  c = command(cmd.s, to_ehlo, "HELO");
  if (!c) return -1;
  if (c >= 200 && c < 300) return 0;
  fail_reply("HELO");
  return -1;
}

/* ---- the message on the wire: CRLF everywhere, dot-stuffed, one end-of-data ---- */

/* Calls out(s, len) for the wire form of the message (without the final ".\r\n").
 * A lone CR or LF ends a line, CRLF ends a line, a final line without an ending gets CRLF. */
static int wire(int (*out)(char const *, size_t))
{
  size_t i = 0, n = msg.len, start;
  char const *s = msg.s;
  while (i < n) {
    size_t j;
    start = i;
    if (s[i] == '.' && out("..", 1) < 0) return -1; /* writes one extra '.' */
    j = i;
    while (j < n && s[j] != '\r' && s[j] != '\n') j++;
    if (j > start && out(s + start, j - start) < 0) return -1;
    if (out("\r\n", 2) < 0) return -1;
    if (j < n && s[j] == '\r' && j + 1 < n && s[j + 1] == '\n') j += 2;
    else if (j < n) j++;
    i = j;
  }
  return 0;
}

static size_t countsize;
static int count_out(char const *s, size_t len)
{
  (void)s;
  countsize += len;
  return 0;
}

static char obuf[65536];
static size_t olen;
static int flush_out(void)
{
  if (olen) {
    set_deadline(to_block);
    if (conn_write(obuf, olen) < 0) return -1;
  }
  olen = 0;
  return 0;
}
static int buf_out(char const *s, size_t len)
{
  while (len) {
    size_t k = sizeof obuf - olen;
    if (!k) {
      if (flush_out() < 0) return -1;
      continue;
    }
    if (k > len) k = len;
    memcpy(obuf + olen, s, k);
    olen += k;
    s += k;
    len -= k;
  }
  return 0;
}

/* ---- one SMTP session with one address ---- */

#define S_DONE 0     /* every pending recipient got a result, or the session ended cleanly */
#define S_NEXT 1     /* try the next host (lasterr set) */
#define S_TLSFAIL 2  /* the TLS handshake failed: with policy may, retry this host in clear */

static int connect_to(dns_target const *t, unsigned int port)
{
  char ip[64];
  dns_fmt_ip(t, ip);
  if (t->host[0] == '[') snprintf(curdesc, sizeof curdesc, "%s:%u", t->host, port);
  else snprintf(curdesc, sizeof curdesc, "%s[%s]:%u", t->host, ip, port);
  fd = t->is6 ? socket_tcp6_nb() : socket_tcp4_nb();
  if (fd < 0) strerr_diefusys(111, "create socket");
  tain_now_g();
  tain_addsec_g(&deadline, to_connect);
  if (!(t->is6 ? socket_deadlineconnstamp6_g(fd, (char const *)t->ip, (uint16_t)port, &deadline)
               : socket_deadlineconnstamp4_g(fd, (char const *)t->ip, (uint16_t)port, &deadline))) {
    lasterr.len = 0;
    int e = errno;
    err_cat("unable to connect to ");
    err_cat(curdesc);
    err_cat(": ");
    err_cat(e == ETIMEDOUT ? "timed out" : strerror(e));
    conn_close();
    return -1;
  }
  return 0;
}

/* The steps of a session below return one of the S_ results above, or: */
#define S_GO (-1)   /* this step is done: on to the next one */
#define S_FAIL (-2) /* the exchange broke off (lasterr set): close or QUIT, then the next host */

/* The greeting and EHLO/HELO. */
static int greet(void)
{
  unsigned int c;
  set_deadline(to_greeting);
  c = get_reply("greeting");
  if (!c) return S_FAIL;
  if (c < 200 || c >= 300) {
    fail_reply("greeting");
    if (c == 421) conn_close();
    else quit();
    return S_NEXT;
  }
  return hello() < 0 ? S_FAIL : S_GO;
}

/* STARTTLS and the second EHLO when the server offers it and the policy allows; refuses to go
 * on in clear when the policy requires TLS. */
static int starttls(dns_target const *t, int usetls)
{
  unsigned int c;
  if (!(ex.starttls && usetls && policy != POL_NONE)) {
    if (policy < POL_ENCRYPT) return S_GO;
    lasterr.len = 0;
    err_cat("TLS required by policy but ");
    err_cat(curdesc);
    err_cat(usetls ? " does not offer STARTTLS" : " failed TLS");
    quit();
    return S_NEXT;
  }
  c = command("STARTTLS\r\n", to_ehlo, "STARTTLS");
  if (!c) return S_FAIL;
  if (c != 220) {
    if (policy < POL_ENCRYPT) return S_GO;
    fail_reply("STARTTLS (TLS required by policy)");
    quit();
    return S_NEXT;
  }
  {
    /* The name to check: the MX or route host name; for an address literal, the mail domain
     * itself (the certificate must then name the domain). */
    char const *sni = t->host[0] == '[' ? (domain[0] == '[' ? 0 : domain) : t->host;
    rlen = rpos = 0; /* anything the server sent before the handshake is discarded */
    set_deadline(to_ehlo);
    tlsclient_deadline(&tls, &deadline);
    if (!tlsclient_start(&tls, fd, sni, policy == POL_VERIFY ? TLSCLIENT_VERIFY : TLSCLIENT_ANY)) {
      lasterr.len = 0;
      err_cat(tls.err);
      err_cat(" (");
      err_cat(curdesc);
      err_cat(")");
      conn_close();
      return policy == POL_MAY ? S_TLSFAIL : S_NEXT;
    }
  }
  intls = 1;
  if (hello() < 0) return S_FAIL;
  {
    char d[80];
    strerr_warni(curdesc, ": TLS ", tlsclient_describe(&tls, d, sizeof d));
  }
  return S_GO;
}

/* What the server's EHLO says it cannot take: every recipient fails permanently now. */
static int check_limits(void)
{
  if (ex.size && ex.sizelimit && wiresize > ex.sizelimit) {
    char a[SIZE_FMT], b[ULONG_FMT];
    static stralloc d = STRALLOC_ZERO;
    a[size_fmt(a, wiresize)] = 0;
    b[ulong_fmt(b, ex.sizelimit)] = 0;
    d.len = 0;
    if (!stralloc_cats(&d, "552 5.3.4 message size ") || !stralloc_cats(&d, a) ||
        !stralloc_cats(&d, " exceeds the remote limit of ") || !stralloc_cats(&d, b))
      strerr_diefu(111, "allocate");
    set_all_pending('P', d.s, d.len);
    quit();
    return S_DONE;
  }
  if (needutf8 && !ex.smtputf8) {
    static char const d[] = "553 5.6.7 the message or an address needs SMTPUTF8, which the remote "
                            "server does not support";
    set_all_pending('P', d, sizeof d - 1);
    quit();
    return S_DONE;
  }
  return S_GO;
}

/* "MAIL FROM:<sender> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]\r\n" into cmd. */
static void mail_command(stralloc *cmd)
{
  char fmt[SIZE_FMT];
  cmd->len = 0;
  if (!stralloc_cats(cmd, "MAIL FROM:<") || !stralloc_cats(cmd, sender) ||
      !stralloc_cats(cmd, ">"))
    strerr_diefu(111, "allocate");
  if (ex.size) {
    fmt[size_fmt(fmt, wiresize)] = 0;
    if (!stralloc_cats(cmd, " SIZE=") || !stralloc_cats(cmd, fmt)) strerr_diefu(111, "allocate");
  }
  if (eightbit && ex.eightbitmime && !stralloc_cats(cmd, " BODY=8BITMIME"))
    strerr_diefu(111, "allocate");
  if (needutf8 && !stralloc_cats(cmd, " SMTPUTF8")) strerr_diefu(111, "allocate");
  if (!stralloc_cats(cmd, "\r\n")) strerr_diefu(111, "allocate");
}

/* MAIL and the RCPTs: with PIPELINING, MAIL and up to PIPELINE_BATCH RCPTs per write. Marks
 * the accepted recipients; those refused get their result. S_GO when at least one was
 * accepted. */
static int envelope(void)
{
  static stralloc cmd = STRALLOC_ZERO;
  unsigned int c, i = 0, accepted = 0, first = 1;
  mail_command(&cmd);
  set_deadline(to_mail);
  if (!ex.pipelining) {
    if (conn_write(cmd.s, cmd.len) < 0) {
      fail_errno("MAIL");
      return S_FAIL;
    }
    cmd.len = 0;
  }
  while (first || i < nrcpts) {
    unsigned int batch[PIPELINE_BATCH], nb = 0, k;
    unsigned int max = ex.pipelining ? PIPELINE_BATCH : 1;
    if (!first) cmd.len = 0;
    if (ex.pipelining || !first) {
      while (i < nrcpts && nb < max) {
        if (!rcpts[i].state) {
          if (!stralloc_cats(&cmd, "RCPT TO:<") || !stralloc_cats(&cmd, rcpts[i].addr) ||
              !stralloc_cats(&cmd, ">\r\n"))
            strerr_diefu(111, "allocate");
          batch[nb++] = i;
        }
        i++;
      }
      set_deadline(to_rcpt);
      if (cmd.len && conn_write(cmd.s, cmd.len) < 0) {
        fail_errno("RCPT");
        return S_FAIL;
      }
    }
    if (first) {
      set_deadline(to_mail);
      c = get_reply("MAIL");
      if (!c) return S_FAIL;
      if (c >= 400) {
        if (c >= 500) {
          set_all_pending('P', rep.text.s, rep.text.len);
          quit();
          return S_DONE;
        }
        fail_reply("MAIL");
        if (c == 421) return S_FAIL;
        quit();
        return S_NEXT;
      }
      first = 0;
      if (!ex.pipelining) continue;
    }
    for (k = 0; k < nb; k++) {
      rcpt *r = &rcpts[batch[k]];
      set_deadline(to_rcpt);
      c = get_reply("RCPT");
      if (!c) return S_FAIL;
      if (c == 421) {
        fail_reply("RCPT");
        return S_FAIL;
      }
      if (c < 300) {
        r->accepted = 1;
        accepted++;
      } else {
        set_result(r, c >= 500 ? 'P' : 'T', rep.text.s, rep.text.len);
      }
    }
  }
  if (!accepted) {
    quit();
    return S_DONE;
  }
  return S_GO;
}

/* Gives every accepted recipient still without a result the result k. */
static void set_accepted(char k, char const *diag, size_t len)
{
  unsigned int i;
  for (i = 0; i < nrcpts; i++)
    if (rcpts[i].accepted && !rcpts[i].state) set_result(&rcpts[i], k, diag, len);
}

/* DATA, the message, and the reply that decides for every accepted recipient. */
static int data(void)
{
  unsigned int c = command("DATA\r\n", to_datainit, "DATA");
  if (!c) return S_FAIL;
  if (c != 354) {
    if (c == 421) {
      fail_reply("DATA");
      return S_FAIL;
    }
    set_accepted(c >= 500 ? 'P' : 'T', rep.text.s, rep.text.len);
    quit();
    return S_DONE;
  }
  olen = 0;
  if (wire(&buf_out) < 0 || buf_out(".\r\n", 3) < 0 || flush_out() < 0) {
    fail_errno("message data");
    return S_FAIL;
  }
  set_deadline(to_dataend);
  c = get_reply("end of data");
  if (!c) {
    /* The server may have the message: no next host for these, retry later. */
    static char const d[] = "no reply to end of data (the message may have been delivered): ";
    static stralloc x = STRALLOC_ZERO;
    x.len = 0;
    if (!stralloc_cats(&x, d) || !stralloc_catb(&x, lasterr.s, lasterr.len))
      strerr_diefu(111, "allocate");
    set_accepted('T', x.s, x.len);
    conn_close();
    return S_DONE;
  }
  set_accepted(c < 300 ? 'D' : c >= 500 ? 'P' : 'T', rep.text.s, rep.text.len);
  quit();
  return S_DONE;
}

/* One session: the steps in the order of RFC 5321, each ending it when it must. */
static int session(dns_target const *t, unsigned int port, int usetls)
{
  unsigned int i;
  int r;
  curhost = t->host;
  for (i = 0; i < nrcpts; i++) rcpts[i].accepted = 0;
  if (connect_to(t, port) < 0) return S_NEXT;
  r = greet();
  if (r == S_GO) r = starttls(t, usetls);
  if (r == S_GO) r = check_limits();
  if (r == S_GO) r = envelope();
  if (r == S_GO) r = data();
  if (r != S_FAIL) return r;
  if (rep.code == 421 || !rep.code) conn_close();
  else quit();
  return S_NEXT;
}

/* ---- configuration ---- */

static unsigned int env_uint(char const *name, unsigned int def, unsigned int max)
{
  char const *x = getenv(name);
  unsigned int u;
  if (!x || !*x) return def;
  if (!uint0_scan(x, &u) || !u || u > max) strerr_dief(111, "invalid $", name, ": ", x);
  return u;
}

static void cap(unsigned int *t, unsigned int c)
{
  if (*t > c) *t = c;
}

/* Finds the value for dom (exact match, case-insensitive) or "*" in control/NAME lines
 * "KEY VALUE". Returns 1 and sets *val (NUL-terminated, inside sa), 0 if none. */
static int keyed(stralloc *sa, char const *name, char const *dom, char const **val)
{
  size_t i = 0;
  char const *star = 0;
  int r = control_readlines(sa, name);
  if (r < 0) strerr_diefu(111, "read control/", name);
  if (!r) return 0;
  while (i < sa->len) {
    char *l = sa->s + i;
    size_t n = strlen(l), k = 0;
    i += n + 1;
    while (k < n && l[k] != ' ' && l[k] != '\t') k++;
    if (k == n) strerr_dief(111, "control/", name, ": line without a value: ", l);
    l[k] = 0;
    {
      char const *v = l + k + 1;
      while (*v == ' ' || *v == '\t') v++;
      if (!strcasecmp(l, dom)) {
        *val = v;
        return 1;
      }
      if (!strcmp(l, "*") && !star) star = v;
    }
  }
  if (star) {
    *val = star;
    return 1;
  }
  return 0;
}

static void read_policy(void)
{
  static stralloc sa = STRALLOC_ZERO;
  char const *v;
  if (!keyed(&sa, "tls-policy", domain, &v)) return;
  if (!strcmp(v, "none")) policy = POL_NONE;
  else if (!strcmp(v, "may")) policy = POL_MAY;
  else if (!strcmp(v, "encrypt")) policy = POL_ENCRYPT;
  else if (!strcmp(v, "verify")) policy = POL_VERIFY;
  else strerr_dief(111, "control/tls-policy: unknown policy for ", domain, ": ", v);
}

/* control/routes: "domain host[:port]" or "* host[:port]"; host may be "[literal]". */
static int read_route(char *host, size_t hostlen)
{
  static stralloc sa = STRALLOC_ZERO;
  char const *v, *colon;
  size_t n;
  if (!keyed(&sa, "routes", domain, &v)) return 0;
  if (*v == '[') {
    char const *close = strchr(v, ']');
    if (!close) strerr_dief(111, "control/routes: bad route for ", domain, ": ", v);
    n = (size_t)(close - v) + 1;
    colon = close[1] == ':' ? close + 1 : 0;
    if (close[1] && !colon) strerr_dief(111, "control/routes: bad route for ", domain, ": ", v);
  } else {
    colon = strchr(v, ':');
    n = colon ? (size_t)(colon - v) : strlen(v);
  }
  if (!n || n >= hostlen) strerr_dief(111, "control/routes: bad route for ", domain, ": ", v);
  if (*v != '[' && n + 3 < hostlen) { /* a bare IPv4 address is taken as a literal */
    unsigned char ip[4];
    char tmp[64];
    if (n < sizeof tmp) {
      memcpy(tmp, v, n);
      tmp[n] = 0;
      if (inet_pton(AF_INET, tmp, ip) == 1) {
        host[0] = '[';
        memcpy(host + 1, v, n);
        host[n + 1] = ']';
        host[n + 2] = 0;
        goto port;
      }
    }
  }
  memcpy(host, v, n);
  host[n] = 0;
port:
  routeport = 25;
  if (colon) {
    unsigned int p;
    if (!uint0_scan(colon + 1, &p) || !p || p > 65535)
      strerr_dief(111, "control/routes: bad port for ", domain, ": ", v);
    routeport = p;
  }
  return 1;
}

static int goodaddr(char const *a)
{
  size_t i, n = strlen(a);
  if (n > ADDRESS_MAX) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)a[i];
    if (c < 33 || c == 127 || c == '<' || c == '>') return 0;
  }
  return 1;
}

static int has8bit(char const *s, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    if ((unsigned char)s[i] >= 0x80) return 1;
  return 0;
}

/* Timeouts, port, control/me and the TLS policy. */
static void read_config(unsigned int *port)
{
  unsigned int t = env_uint("PILLARBOX_SMTP_TIMEOUT", 0, 86400);
  int r;
  if (t) {
    cap(&to_connect, t); cap(&to_greeting, t); cap(&to_ehlo, t); cap(&to_mail, t);
    cap(&to_rcpt, t); cap(&to_datainit, t); cap(&to_block, t); cap(&to_dataend, t);
    cap(&to_quit, t);
  }
  *port = env_uint("PILLARBOX_SMTP_PORT", 25, 65535);
  r = control_readline(&me, "me");
  if (r < 0) strerr_diefusys(111, "read control/me");
  if (!r || !me.len) strerr_dief(111, "control/me is missing or empty");
  read_policy();
}

/* The message from fd 0: its size on the wire, whether it needs 8BITMIME or SMTPUTF8; the
 * recipients that are not addresses get their permanent result now. */
static void read_message(void)
{
  unsigned int i;
  size_t h = 0;
  if (!slurp(&msg, 0)) strerr_diefusys(111, "read the message");
  countsize = 0;
  wire(&count_out);
  wiresize = countsize + 3;
  eightbit = has8bit(msg.s, msg.len);
  needutf8 = has8bit(sender, strlen(sender));
  while (h < msg.len) { /* the header section: up to the first empty line */
    size_t e = h;
    while (e < msg.len && msg.s[e] != '\n') e++;
    if (e == h || (e == h + 1 && msg.s[h] == '\r')) break;
    if (has8bit(msg.s + h, e - h)) needutf8 = 1;
    h = e + 1;
  }
  for (i = 0; i < nrcpts; i++) {
    if (!goodaddr(rcpts[i].addr)) {
      curhost = 0;
      set_result(&rcpts[i], 'P', "invalid recipient address", 25);
    } else if (has8bit(rcpts[i].addr, strlen(rcpts[i].addr))) needutf8 = 1;
  }
}

/* The hosts to try, into targets: the route's host, or the domain's MX. Returns 1, or 0 when
 * there are none (every pending recipient then has its result). */
static int resolve(unsigned int *port)
{
  char routehost[DNS_NAME_MAX + 8];
  int r;
  if (read_route(routehost, sizeof routehost)) {
    r = dns_host(routehost, 0, &targets);
    *port = routeport;
    /* A route whose host does not resolve is a configuration problem: mail waits for the
     * postmaster to fix it instead of bouncing. */
    if (r == DNS_PERM) {
      char w[sizeof targets.why];
      memcpy(w, targets.why, sizeof w);
      snprintf(targets.why, sizeof targets.why, "route host for %.200s: %.250s", domain, w);
      r = DNS_TEMP;
    }
  } else {
    r = dns_mx(domain, &targets);
  }
  if (r != DNS_OK) {
    static stralloc d = STRALLOC_ZERO;
    if (!stralloc_cats(&d, r == DNS_PERM ? "5.1.2 " : "4.4.3 ") || !stralloc_cats(&d, targets.why))
      strerr_diefu(111, "allocate");
    curhost = 0;
    set_all_pending(r == DNS_PERM ? 'P' : 'T', d.s, d.len);
    return 0;
  }
  return 1;
}

/* A session with each host in turn until every recipient has a result (a failed STARTTLS
 * under policy "may" is retried in clear on the same host). */
static void try_hosts(unsigned int port)
{
  unsigned int i;
  for (i = 0; i < targets.n; i++) {
    unsigned int k;
    int s, pending = 0;
    for (k = 0; k < nrcpts; k++)
      if (!rcpts[k].state) pending = 1;
    if (!pending) break;
    s = session(&targets.t[i], port, 1);
    if (s == S_TLSFAIL) {
      if (!stralloc_0(&lasterr)) strerr_diefu(111, "allocate");
      lasterr.len--;
      strerr_warnw(lasterr.s, ": retrying without TLS");
      s = session(&targets.t[i], port, 0);
    }
    if (s == S_NEXT) {
      if (!stralloc_0(&lasterr)) strerr_diefu(111, "allocate");
      lasterr.len--;
      strerr_warnw(curdesc, ": ", lasterr.s);
    }
  }
}

/* One line per recipient on fd 1, in argument order (the interface queue-run reads). */
static void report(void)
{
  unsigned int i;
  for (i = 0; i < nrcpts; i++) {
    rcpt *x = &rcpts[i];
    char k = x->state;
    if (buffer_put(buffer_1, &k, 1) < 0 || buffer_put(buffer_1, "\t", 1) < 0 ||
        buffer_puts(buffer_1, x->addr) < 0 || buffer_put(buffer_1, "\t", 1) < 0 ||
        buffer_puts(buffer_1, x->remote ? x->remote : "-") < 0 ||
        buffer_put(buffer_1, "\t", 1) < 0 ||
        buffer_put(buffer_1, x->diag.s ? x->diag.s : "", x->diag.len) < 0 ||
        buffer_put(buffer_1, "\n", 1) < 0)
      strerr_diefusys(111, "write results");
  }
  if (!buffer_flush(buffer_1)) strerr_diefusys(111, "write results");
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  unsigned int i, port;
  PROG = "smtp-send";
  for (;;) {
    int opt = subgetopt_r(argc, argv, "", &l);
    if (opt == -1) break;
    strerr_dieusage(100, USAGE);
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc < 3 || !argv[0][0]) strerr_dieusage(100, USAGE);
  if ((unsigned int)argc - 2 > RCPTS_MAX) strerr_dief(100, "too many recipients");
  domain = argv[0];
  sender = argv[1];
  if (!strcmp(sender, "<>")) sender = "";
  if (!goodaddr(sender) && *sender) strerr_dief(100, "invalid sender address");
  nrcpts = (unsigned int)argc - 2;
  rcpts = calloc(nrcpts, sizeof *rcpts);
  if (!rcpts) strerr_diefusys(111, "allocate");
  for (i = 0; i < nrcpts; i++) rcpts[i].addr = argv[2 + i];

  tain_now_set_stopwatch_g();
  tain_now_g();
  if (!sig_ignore(SIGPIPE)) strerr_diefusys(111, "ignore SIGPIPE");
  read_config(&port);
  read_message();
  if (resolve(&port)) {
    try_hosts(port);
    if (!lasterr.len && !targets.n) err_cat("no host to deliver to");
  }
  curhost = 0;
  set_all_pending('T', lasterr.s, lasterr.len);
  report();
  return 0;
}
