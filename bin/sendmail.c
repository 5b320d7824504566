/* sendmail: the sendmail-compatible command line that cron, scripts and PHP call.
 *
 * Reads a message on stdin and injects it: with queue-inject when the caller can write the
 * queue, otherwise through the local injection socket (queue-inject-ipc -c). $QUEUE_INJECT
 * overrides the choice. -bs runs an SMTP session on stdin/stdout (smtp-receive, as a relay
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
#include "progdir.h"

char const *PROG = "sendmail";
#define USAGE "sendmail [ -t ] [ -i ] [ -f sender ] [ -F fullname ] [ -bm | -bs | -bp ] [ recipient... ]"

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
    strerr_dief(100, "bad recipient address: ", b.s, ": ", r != ADDR_OK ? addr_strerror(r) : "empty");
  }
  if (++nrcpt > RCPT_MAX) strerr_dief(100, "too many recipients");
  if (!stralloc_catb(&rcpts, "T", 1) || !stralloc_catb(&rcpts, a.s, a.len) || !stralloc_0(&rcpts))
    strerr_diefusys(111, "allocate");
  stralloc_free(&a);
  stralloc_free(&q);
}

/* Splits an RFC 5322 address list s[0..n) (already unfolded) and adds each mailbox. Handles
 * display names, comments, quoted strings and groups. */
static void add_rcpt_list(char const *s, size_t n)
{
  size_t i = 0, start = 0, lt = 0, gt = 0;
  int q = 0, comment = 0, angle = 0, haveangle = 0;
  stralloc bare = STRALLOC_ZERO;
  for (i = 0; i <= n; i++) {
    char c = i < n ? s[i] : ',';
    if (q) {
      if (c == '\\' && i + 1 < n) { i++; continue; }
      if (c == '"') q = 0;
      if (!comment && !angle && !stralloc_catb(&bare, &c, 1)) strerr_diefusys(111, "allocate");
      continue;
    }
    if (comment) {
      if (c == '\\' && i + 1 < n) { i++; continue; }
      if (c == '(') comment++;
      else if (c == ')') comment--;
      continue;
    }
    if (c == '(') { comment = 1; continue; }
    if (c == '"') { q = 1; if (!angle && !stralloc_catb(&bare, &c, 1)) strerr_diefusys(111, "allocate"); continue; }
    if (c == '<' && !angle) { angle = 1; lt = i; continue; }
    if (c == '>' && angle) { angle = 0; gt = i; haveangle = 1; continue; }
    if (angle) continue;
    if (c == ':' ) { bare.len = 0; haveangle = 0; start = i + 1; continue; } /* group name */
    if (c == ',' || c == ';') {
      if (haveangle) add_rcpt(s + lt + 1, gt - lt - 1);
      else add_rcpt(bare.s, bare.len);
      bare.len = 0;
      haveangle = 0;
      start = i + 1;
      continue;
    }
    if (!stralloc_catb(&bare, &c, 1)) strerr_diefusys(111, "allocate");
  }
  (void)start;
  stralloc_free(&bare);
}

static int hdr_is(char const *h, size_t n, char const *name)
{
  size_t l = strlen(name);
  return n > l && h[l] == ':' && !strncasecmp(h, name, l);
}

/* The injector */
static pid_t inj_pid;
static int inj_msg = -1, inj_env = -1, inj_id = -1;

static void inj_start(void)
{
  char const *cmd = getenv("QUEUE_INJECT");
  stralloc q = STRALLOC_ZERO, c = STRALLOC_ZERO;
  char const *argv[ARGV_MAX + 1];
  unsigned int argc = 0;
  size_t i;
  int pm[2], pe[2], pi[2];
  if (!cmd || !*cmd) {
    if (!mailroot_path(&q, "queue")) strerr_diefusys(111, "allocate");
    cmd = access(q.s, W_OK) == 0 ? "queue-inject" : "queue-inject-ipc -c";
  }
  if (!stralloc_cats(&c, cmd) || !stralloc_0(&c)) strerr_diefusys(111, "allocate");
  for (i = 0; i + 1 < c.len && argc < ARGV_MAX;) {
    while (c.s[i] == ' ' || c.s[i] == '\t') c.s[i++] = 0;
    if (!c.s[i]) break;
    argv[argc++] = c.s + i;
    while (c.s[i] && c.s[i] != ' ' && c.s[i] != '\t') i++;
  }
  argv[argc] = 0;
  if (!argc) strerr_dief(100, "empty QUEUE_INJECT");
  if (pipecoe(pm) < 0 || pipecoe(pe) < 0 || pipecoe(pi) < 0) strerr_diefusys(111, "pipe");
  inj_pid = fork();
  if (inj_pid < 0) strerr_diefusys(111, "fork");
  if (!inj_pid) {
    int a = fcntl(pm[0], F_DUPFD, 10), b = fcntl(pe[0], F_DUPFD, 10), d = fcntl(pi[1], F_DUPFD, 10);
    if (a < 0 || b < 0 || d < 0 || dup2(a, 0) < 0 || dup2(b, 1) < 0 || dup2(d, 3) < 0) _exit(111);
    if (setenv("QUEUE_IDFD", "3", 1) < 0) _exit(111);
    sig_restore(SIGPIPE);
    execvp(argv[0], (char *const *)argv);
    strerr_warnwusys("exec ", argv[0]);
    _exit(111);
  }
  fd_close(pm[0]);
  fd_close(pe[0]);
  fd_close(pi[1]);
  inj_msg = pm[1];
  inj_env = pe[1];
  inj_id = pi[0];
}

static int broken;
static void put(char const *s, size_t n)
{
  if (broken || !n) return;
  if (allwrite(inj_msg, s, n) != n) broken = 1;
}

static int inj_finish(stralloc *sender)
{
  stralloc env = STRALLOC_ZERO;
  char id[128];
  size_t il;
  int w;
  fd_close(inj_msg);
  if (!stralloc_catb(&env, "F", 1) || !stralloc_catb(&env, sender->s, sender->len) ||
      !stralloc_0(&env) || !stralloc_catb(&env, rcpts.s, rcpts.len) || !stralloc_0(&env))
    strerr_diefusys(111, "allocate");
  allwrite(inj_env, env.s, env.len);
  fd_close(inj_env);
  il = allread(inj_id, id, sizeof id - 1);
  fd_close(inj_id);
  if (wait_pid(inj_pid, &w) != inj_pid) strerr_diefusys(111, "wait for the injector");
  if (WIFSIGNALED(w)) strerr_dief(111, "the injector crashed");
  w = WEXITSTATUS(w);
  if (!w) {
    size_t i = 0;
    while (i < il && id[i] > 32 && id[i] < 127) i++;
    id[i] = 0;
    return 0;
  }
  {
    char n[UINT_FMT];
    n[uint_fmt(n, (unsigned int)w)] = 0;
    if ((w >= 11 && w <= 40) || w == 91) strerr_dief(100, "message refused by the queue (exit ", n, ")");
    strerr_dief(111, "temporary queue failure (exit ", n, ")");
  }
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

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  int opt_t = 0, opt_i = 0;
  char const *from = 0, *fullname = 0, *mode = "m";
  stralloc sender = STRALLOC_ZERO, mesa = STRALLOC_ZERO;
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

  if (!strcmp(mode, "p")) {
    char const *a[2] = {"queue-list", 0};
    exec_prog(a[0], a);
  }
  if (!strcmp(mode, "s")) {
    /* A local user's SMTP session: a relay client on loopback. */
    char const *a[2] = {"smtp-receive", 0};
    stralloc q = STRALLOC_ZERO;
    if (setenv("RELAYCLIENT", "", 1) < 0 || setenv("TCPREMOTEIP", "127.0.0.1", 1) < 0 ||
        setenv("TCPLOCALIP", "127.0.0.1", 1) < 0 || setenv("PROTO", "LOCAL", 1) < 0)
      strerr_diefusys(111, "setenv");
    if (!getenv("QUEUE_INJECT")) {
      if (!mailroot_path(&q, "queue")) strerr_diefusys(111, "allocate");
      if (access(q.s, W_OK) < 0 && setenv("QUEUE_INJECT", "queue-inject-ipc -c", 1) < 0)
        strerr_diefusys(111, "setenv");
    }
    exec_prog(a[0], a);
  }
  if (strcmp(mode, "m")) strerr_dief(100, "unsupported mode: -b", mode);

  {
    int r = control_readline(&mesa, "me");
    if (r < 0) strerr_diefusys(111, "read control/me");
    if (r > 0) {
      if (!stralloc_0(&mesa)) strerr_diefusys(111, "allocate");
      me = mesa.s;
    }
  }
  {
    /* bare names, for recipients and the sender, live in the default domain (a local one, so
     * that a bounce to the sender stays here instead of going out as root@HOSTNAME) */
    int r = control_defaultdomain(&defdomain);
    if (r < 0) strerr_diefusys(111, "read control/defaultdomain, control/domains or control/me");
    if (!r && !stralloc_cats(&defdomain, me)) strerr_diefusys(111, "allocate");
  }
  if (from) {
    size_t end;
    int r;
    stralloc q = STRALLOC_ZERO;
    size_t fl = strlen(from);
    if (fl && !memchr(from, '@', fl) && !memchr(from, '<', fl)) {
      /* -f root: root at the default domain */
      if (!stralloc_catb(&q, from, fl) || !stralloc_catb(&q, "@", 1) ||
          !stralloc_catb(&q, defdomain.s, defdomain.len) || !stralloc_0(&q))
        strerr_diefusys(111, "allocate");
      from = q.s;
    }
    if (!*from || !strcmp(from, "<>")) sender.len = 0;
    else if ((r = addr_parse_path(from, strlen(from), ADDR_LOOSE | ADDR_ALLOW_NULL | ADDR_UTF8,
                                  &sender, &end)) != ADDR_OK)
      strerr_dief(100, "bad sender address: ", from, ": ", addr_strerror(r));
  } else {
    char const *u = getenv("LOGNAME");
    struct passwd *pw = getpwuid(getuid());
    if (pw && pw->pw_name && *pw->pw_name) u = pw->pw_name;
    if (!u || !*u) u = getenv("USER");
    if (!u || !*u) u = "nobody";
    if (!stralloc_cats(&sender, u) || !stralloc_catb(&sender, "@", 1) ||
        !stralloc_catb(&sender, defdomain.s, defdomain.len))
      strerr_diefusys(111, "allocate");
  }
  for (; *argv; argv++) add_rcpt(*argv, strlen(*argv));

  /* Read the header (kept for -t and to add what is missing), then stream the body. */
  {
    stralloc hdr = STRALLOC_ZERO, ln = STRALLOC_ZERO;
    int has_from = 0, has_date = 0, has_msgid = 0, ended = 0, bol = 1, firstwhole = 1;
    size_t i;
    char buf[8192];
    buffer b = BUFFER_INIT(&buffer_read, 0, buf, sizeof buf);
    for (;;) {
      int r = next_piece(&b, &ln);
      if (!r) break;
      if (!opt_i && bol && r == 1 && ln.len == 2 && ln.s[0] == '.') { ended = 1; break; }
      if (bol) {
        int cont = ln.s[0] == ' ' || ln.s[0] == '\t';
        if (ln.s[0] == '\n' || (!cont && !memchr(ln.s, ':', ln.len))) {
          firstwhole = r == 1;
          break; /* the end of the header: ln is the blank line or the first body line */
        }
      }
      if (hdr.len + ln.len > HEADER_MAX) strerr_dief(100, "header too long");
      if (!stralloc_catb(&hdr, ln.s, ln.len)) strerr_diefusys(111, "allocate");
      bol = r == 1;
      ln.len = 0;
    }
    if (!bol) {
      /* input ended inside a header line: end it */
      if (!stralloc_catb(&hdr, "\n", 1)) strerr_diefusys(111, "allocate");
    }
    /* hdr holds the header lines; ln holds the first body line (or the blank line), if any */
    for (i = 0; i < hdr.len;) {
      size_t j = i, k;
      /* a field with its continuation lines */
      do {
        j += byte_chr(hdr.s + j, hdr.len - j, '\n') + 1;
      } while (j < hdr.len && (hdr.s[j] == ' ' || hdr.s[j] == '\t'));
      k = j;
      if (hdr_is(hdr.s + i, k - i, "From")) has_from = 1;
      if (hdr_is(hdr.s + i, k - i, "Date")) has_date = 1;
      if (hdr_is(hdr.s + i, k - i, "Message-ID")) has_msgid = 1;
      if (opt_t) {
        size_t c = byte_chr(hdr.s + i, k - i, ':');
        if (hdr_is(hdr.s + i, k - i, "To") || hdr_is(hdr.s + i, k - i, "Cc") ||
            hdr_is(hdr.s + i, k - i, "Bcc")) {
          stralloc v = STRALLOC_ZERO;
          size_t x;
          for (x = i + c + 1; x < k; x++) {
            char ch = hdr.s[x] == '\n' || hdr.s[x] == '\r' ? ' ' : hdr.s[x];
            if (!stralloc_catb(&v, &ch, 1)) strerr_diefusys(111, "allocate");
          }
          add_rcpt_list(v.s, v.len);
          stralloc_free(&v);
        }
      }
      i = k;
    }
    if (!nrcpt) strerr_dief(100, "no recipients");
    inj_start();
    if (!has_from) {
      stralloc f = STRALLOC_ZERO;
      if (!stralloc_cats(&f, "From: ") ||
          (fullname && (!stralloc_catb(&f, "\"", 1) || !stralloc_cats(&f, fullname) ||
                        !stralloc_cats(&f, "\" <"))) ||
          !stralloc_catb(&f, sender.s, sender.len) || (fullname && !stralloc_catb(&f, ">", 1)) ||
          !stralloc_catb(&f, "\n", 1))
        strerr_diefusys(111, "allocate");
      for (i = 6; i < f.len - 1; i++) if (f.s[i] == '\n' || f.s[i] == '\r') f.s[i] = ' ';
      put(f.s, f.len);
      stralloc_free(&f);
    }
    if (!has_date) {
      char d[80];
      time_t t = time(0);
      struct tm tm;
      if (gmtime_r(&t, &tm) && strftime(d, sizeof d, "Date: %a, %d %b %Y %H:%M:%S +0000\n", &tm))
        put(d, strlen(d));
    }
    if (!has_msgid) {
      char m[200 + UINT64_FMT * 2];
      size_t n = 0;
      memcpy(m, "Message-ID: <", 13); n = 13;
      n += uint64_fmt(m + n, (uint64_t)time(0));
      m[n++] = '.';
      n += uint64_fmt(m + n, (uint64_t)getpid());
      m[n++] = '@';
      {
        size_t ml = strlen(me);
        if (ml > 150) ml = 150;
        memcpy(m + n, me, ml);
        n += ml;
      }
      memcpy(m + n, ">\n", 2); n += 2;
      put(m, n);
    }
    /* the header, without Bcc */
    for (i = 0; i < hdr.len;) {
      size_t j = i;
      do {
        j += byte_chr(hdr.s + j, hdr.len - j, '\n') + 1;
      } while (j < hdr.len && (hdr.s[j] == ' ' || hdr.s[j] == '\t'));
      if (!hdr_is(hdr.s + i, j - i, "Bcc")) put(hdr.s + i, j - i);
      i = j;
    }
    stralloc_free(&hdr);
    if (!ended && ln.len) {
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
    stralloc_free(&ln);
  }
  return inj_finish(&sender);
}
