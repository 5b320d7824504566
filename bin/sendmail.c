/* sendmail: the sendmail-compatible command line that cron, scripts and PHP call.
 *
 * Reads a message on stdin and injects it through lib/inject: the local injection socket
 * (so the queue holds only files of the queue's owner, whoever calls, root included), or
 * queue-inject directly when the caller owns MAILROOT/queue; $QUEUE_INJECT overrides the
 * choice (lib/inject.h). -bs runs an SMTP session on stdin/stdout (smtp-receive, as a relay
 * client), -bp lists the queue (queue-list). See doc/sendmail.1.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/buffer.h>
#include <skalibs/bytestr.h>
#include <skalibs/skamisc.h>
#include <skalibs/djbunix.h>
#include <skalibs/sgetopt.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "addr.h"
#include "control.h"
#include "hdr.h"
#include "inject.h"
#include "progdir.h"

char const *PROG = "sendmail";
#define USAGE \
  "sendmail [ -t ] [ -i ] [ -f sender ] [ -F fullname ] [ -bm | -bs | -bp ] [ recipient... ]"

#define HEADER_MAX (1024 * 1024) /* bytes of header kept in memory for -t */
#define RCPT_MAX 10000
#define ARGV_MAX 32

static stralloc rcpts = STRALLOC_ZERO; /* "T" addr NUL ... */
static unsigned int nrcpt;
static char const *me = "localhost";

static stralloc defdomain = STRALLOC_ZERO; /* for a bare "user": control_defaultdomain() */

static void add_rcpt(char const *s, size_t n)
{
  stralloc a = STRALLOC_ZERO, q = STRALLOC_ZERO;
  size_t end;
  int r;
  while (n && (*s == ' ' || *s == '\t')) { s++; n--; }
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  if (!n) return;
  if (addr_at(s, n) == n && defdomain.len) {
    /* "root" (cron's MAILTO) means root at the default domain, as qmail-inject does */
    if (!stralloc_catb(&q, s, n) || !stralloc_catb(&q, "@", 1) ||
        !stralloc_catb(&q, defdomain.s, defdomain.len))
      strerr_diefusys(111, "allocate");
    s = q.s;
    n = q.len;
  }
  r = addr_parse_path(s, n, ADDR_LOOSE | ADDR_UTF8, &a, &end);
  if (r != ADDR_OK || !a.len) {
    stralloc b = STRALLOC_ZERO;
    if (!stralloc_catb(&b, s, n) || !stralloc_0(&b)) strerr_diefusys(111, "allocate");
    strerr_dief(100, "bad recipient address: ", b.s, ": ",
                r != ADDR_OK ? addr_strerror(r) : "empty");
  }
  if (++nrcpt > RCPT_MAX) strerr_dief(100, "too many recipients");
  if (!stralloc_catb(&rcpts, "T", 1) || !stralloc_catb(&rcpts, a.s, a.len) || !stralloc_0(&rcpts))
    strerr_diefusys(111, "allocate");
  stralloc_free(&a);
  stralloc_free(&q);
}

static int add_rcpt_cb(void *ctx, char const *s, size_t n)
{
  (void)ctx;
  add_rcpt(s, n);
  return 1;
}

/* The injection */
static injector inj;

static void put(char const *s, size_t n)
{
  inject_write(&inj, s, n);
}

static int inj_finish(stralloc *sender)
{
  stralloc env = STRALLOC_ZERO, id = STRALLOC_ZERO;
  char n[UINT_FMT];
  int w;
  if (!stralloc_catb(&env, "F", 1) || !stralloc_catb(&env, sender->s, sender->len) ||
      !stralloc_0(&env) || !stralloc_catb(&env, rcpts.s, rcpts.len) || !stralloc_0(&env))
    strerr_diefusys(111, "allocate");
  w = inject_commit(&inj, env.s, env.len, &id);
  if (!w) return 0;
  n[uint_fmt(n, (unsigned int)(w < 0 ? 111 : w))] = 0;
  if (inject_permanent(w)) strerr_dief(100, "message refused by the queue (exit ", n, ")");
  strerr_dief(111, "temporary queue failure (exit ", n, ")");
}

#define PIECE_MAX 65536
static char piece[PIECE_MAX + 1];

/* Reads the next piece of input into ln: a whole line (CRLF turned into LF; a last line
 * without LF gets one) or, for a line longer than PIECE_MAX, its next part. Memory stays
 * bounded whatever the input. Returns 1 for a whole line, 2 for a part, 0 at the end. */
static int next_piece(buffer *b, stralloc *ln)
{
  size_t w = 0;
  int r = getlnmax(b, piece, PIECE_MAX, &w, '\n');
  ln->len = 0;
  if (r < 0 && errno != ERANGE) strerr_diefusys(111, "read the message");
  if (r < 0) r = 2;
  else if (!r) {
    if (!w) return 0;
    piece[w++] = '\n';
    r = 1;
  }
  if (r == 1 && w >= 2 && piece[w - 2] == '\r') piece[--w - 1] = '\n';
  if (!stralloc_catb(ln, piece, w)) strerr_diefusys(111, "allocate");
  return r;
}

static void exec_prog(char const *name, char const *const *argv)
{
  execvp(name, (char *const *)argv);
  strerr_diefusys(111, "exec ", name);
}

/* -bp and -bs run another program; -bm (the default) goes on. */
static void other_modes(char const *mode)
{
  if (!strcmp(mode, "p")) {
    char const *a[2] = {"queue-list", 0};
    exec_prog(a[0], a);
  }
  if (!strcmp(mode, "s")) {
    /* A local user's SMTP session: a relay client on loopback. */
    char const *a[2] = {"smtp-receive", 0};
    if (setenv("RELAYCLIENT", "", 1) < 0 || setenv("TCPREMOTEIP", "127.0.0.1", 1) < 0 ||
        setenv("TCPLOCALIP", "127.0.0.1", 1) < 0 || setenv("PROTO", "LOCAL", 1) < 0 ||
        setenv("SMTP_SERVICE", "local", 1) < 0)
      strerr_diefusys(111, "setenv");
    exec_prog(a[0], a);
  }
  if (strcmp(mode, "m")) strerr_dief(100, "unsupported mode: -b", mode);
}

static void read_config(void)
{
  static stralloc mesa = STRALLOC_ZERO;
  int r = control_readline(&mesa, "me");
  if (r < 0) strerr_diefusys(111, "read control/me");
  if (r > 0) {
    if (!stralloc_0(&mesa)) strerr_diefusys(111, "allocate");
    me = mesa.s;
  }
  /* bare names, for recipients and the sender, live in the default domain (a local one, so
   * that a bounce to the sender stays here instead of going out as root@HOSTNAME) */
  r = control_defaultdomain(&defdomain);
  if (r < 0) strerr_diefusys(111, "read control/defaultdomain, control/domains or control/me");
  if (!r && !stralloc_cats(&defdomain, me)) strerr_diefusys(111, "allocate");
}

/* The envelope sender: -f (a bare name at the default domain), else the caller's name. */
static void get_sender(char const *from, stralloc *sender)
{
  if (from) {
    size_t end, fl = strlen(from);
    int r;
    stralloc q = STRALLOC_ZERO;
    if (fl && !memchr(from, '@', fl) && !memchr(from, '<', fl)) {
      /* -f root: root at the default domain */
      if (!stralloc_catb(&q, from, fl) || !stralloc_catb(&q, "@", 1) ||
          !stralloc_catb(&q, defdomain.s, defdomain.len) || !stralloc_0(&q))
        strerr_diefusys(111, "allocate");
      from = q.s;
    }
    if (!*from || !strcmp(from, "<>")) sender->len = 0;
    else if ((r = addr_parse_path(from, strlen(from), ADDR_LOOSE | ADDR_ALLOW_NULL | ADDR_UTF8,
                                  sender, &end)) != ADDR_OK)
      strerr_dief(100, "bad sender address: ", from, ": ", addr_strerror(r));
  } else {
    char const *u = getenv("LOGNAME");
    struct passwd *pw = getpwuid(getuid());
    if (pw && pw->pw_name && *pw->pw_name) u = pw->pw_name;
    if (!u || !*u) u = getenv("USER");
    if (!u || !*u) u = "nobody";
    if (!stralloc_cats(sender, u) || !stralloc_catb(sender, "@", 1) ||
        !stralloc_catb(sender, defdomain.s, defdomain.len))
      strerr_diefusys(111, "allocate");
  }
}

/* The input: the header section kept in memory (for -t and to add what is missing), then
 * the body streamed. */
static char buf[8192];
static buffer b = BUFFER_INIT(&buffer_read, 0, buf, sizeof buf);
static stralloc hdr = STRALLOC_ZERO, ln = STRALLOC_ZERO;
static int opt_i, ended, firstwhole = 1;

/* Reads the header lines into hdr; ln then holds the blank line or the first body line. */
static void read_header(void)
{
  int bol = 1;
  for (;;) {
    int r = next_piece(&b, &ln);
    if (!r) break;
    if (!opt_i && bol && r == 1 && ln.len == 2 && ln.s[0] == '.') { ended = 1; break; }
    if (bol) {
      int cont = ln.s[0] == ' ' || ln.s[0] == '\t';
      if (ln.s[0] == '\n' || (!cont && !memchr(ln.s, ':', ln.len))) {
        firstwhole = r == 1;
        break; /* the end of the header */
      }
    }
    if (hdr.len + ln.len > HEADER_MAX) strerr_dief(100, "header too long");
    if (!stralloc_catb(&hdr, ln.s, ln.len)) strerr_diefusys(111, "allocate");
    bol = r == 1;
    ln.len = 0;
  }
  /* input ended inside a header line: end it */
  if (!bol && !stralloc_catb(&hdr, "\n", 1)) strerr_diefusys(111, "allocate");
}

/* The length of the field at hdr[i..], continuation lines included. */
static size_t field_len(size_t i)
{
  size_t j = i;
  do {
    j += byte_chr(hdr.s + j, hdr.len - j, '\n') + 1;
  } while (j < hdr.len && (hdr.s[j] == ' ' || hdr.s[j] == '\t'));
  return j - i;
}

#define HAS_FROM 1
#define HAS_DATE 2
#define HAS_MSGID 4

/* Notes what the header has; with -t, adds the recipients of To, Cc and Bcc ("To :" is To:
 * RFC 5322 4.5, obsolete syntax). */
static unsigned int scan_header(int opt_t)
{
  unsigned int has = 0;
  size_t i, k;
  for (i = 0; i < hdr.len; i += k) {
    char const *h = hdr.s + i;
    size_t c;
    k = field_len(i);
    if (hdr_field(h, k, "From")) has |= HAS_FROM;
    if (hdr_field(h, k, "Date")) has |= HAS_DATE;
    if (hdr_field(h, k, "Message-ID")) has |= HAS_MSGID;
    if (!opt_t) continue;
    c = hdr_field(h, k, "To");
    if (!c) c = hdr_field(h, k, "Cc");
    if (!c) c = hdr_field(h, k, "Bcc");
    if (c) {
      stralloc v = STRALLOC_ZERO;
      size_t x;
      for (x = c; x < k; x++) {
        char ch = h[x] == '\n' || h[x] == '\r' ? ' ' : h[x];
        if (!stralloc_catb(&v, &ch, 1)) strerr_diefusys(111, "allocate");
      }
      hdr_addrlist(v.s, v.len, &add_rcpt_cb, 0);
      stralloc_free(&v);
    }
  }
  return has;
}

/* Writes the From:, Date: and Message-ID: fields the message lacks. */
static void put_missing(unsigned int has, stralloc const *sender, char const *fullname)
{
  if (!(has & HAS_FROM)) {
    stralloc f = STRALLOC_ZERO;
    size_t i;
    if (!stralloc_cats(&f, "From: ") ||
        (fullname && (!stralloc_catb(&f, "\"", 1) || !stralloc_cats(&f, fullname) ||
                      !stralloc_cats(&f, "\" <"))) ||
        !stralloc_catb(&f, sender->s, sender->len) || (fullname && !stralloc_catb(&f, ">", 1)) ||
        !stralloc_catb(&f, "\n", 1))
      strerr_diefusys(111, "allocate");
    for (i = 6; i < f.len - 1; i++) if (f.s[i] == '\n' || f.s[i] == '\r') f.s[i] = ' ';
    put(f.s, f.len);
    stralloc_free(&f);
  }
  if (!(has & HAS_DATE)) {
    char d[80];
    time_t t = time(0);
    struct tm tm;
    if (gmtime_r(&t, &tm) && strftime(d, sizeof d, "Date: %a, %d %b %Y %H:%M:%S +0000\n", &tm))
      put(d, strlen(d));
  }
  if (!(has & HAS_MSGID)) {
    char m[200 + UINT64_FMT * 2];
    size_t n = 13, ml = strlen(me);
    memcpy(m, "Message-ID: <", 13);
    n += uint64_fmt(m + n, (uint64_t)time(0));
    m[n++] = '.';
    n += uint64_fmt(m + n, (uint64_t)getpid());
    m[n++] = '@';
    if (ml > 150) ml = 150;
    memcpy(m + n, me, ml);
    n += ml;
    memcpy(m + n, ">\n", 2);
    put(m, n + 2);
  }
}

/* The header without Bcc ("Bcc :" too), then the body. */
static void put_rest(void)
{
  size_t i, k;
  int bol;
  for (i = 0; i < hdr.len; i += k) {
    k = field_len(i);
    if (!hdr_field(hdr.s + i, k, "Bcc")) put(hdr.s + i, k);
  }
  if (ended || !ln.len) return;
  if (ln.s[0] != '\n') put("\n", 1); /* the body started without a blank line */
  put(ln.s, ln.len);
  bol = firstwhole;
  for (;;) {
    int r = next_piece(&b, &ln);
    if (!r) break;
    if (!opt_i && bol && r == 1 && ln.len == 2 && ln.s[0] == '.') break;
    put(ln.s, ln.len);
    bol = r == 1;
  }
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  int opt_t = 0;
  char const *from = 0, *fullname = 0, *mode = "m";
  stralloc sender = STRALLOC_ZERO;
  unsigned int has;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "tif:r:F:o:b:vN:R:B:V:X:h:L:O:", &l);
    if (opt == -1) break;
    switch (opt) {
      case 't': opt_t = 1; break;
      case 'i': opt_i = 1; break;
      case 'f': case 'r': from = l.arg; break;
      case 'F': fullname = l.arg; break;
      case 'o': if (l.arg[0] == 'i' && !l.arg[1]) opt_i = 1; break; /* other -o: ignored */
      case 'b': mode = l.arg; break;
      case 'v': case 'N': case 'R': case 'B': case 'V': case 'X': case 'h': case 'L': case 'O':
        break; /* accepted for compatibility, ignored */
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (sig_altignore(SIGPIPE) < 0) strerr_diefusys(111, "ignore SIGPIPE");
  /* run as /usr/sbin/sendmail with cron's PATH: the programs we run are our siblings */
  if (!progdir_path_prepend()) strerr_diefusys(111, "set PATH");
  other_modes(mode);
  read_config();
  get_sender(from, &sender);
  for (; *argv; argv++) add_rcpt(*argv, strlen(*argv));
  read_header();
  has = scan_header(opt_t);
  if (!nrcpt) strerr_dief(100, "no recipients");
  /* no facts: the server knows who we are (the kernel's uid) and that this is local */
  if (!inject_start(&inj, 0, 600)) strerr_diefusys(111, "start the injection");
  put_missing(has, &sender, fullname);
  put_rest();
  return inj_finish(&sender);
}
