/* smtp-receive: the SMTP / ESMTP server for one connection (UCSPI: session on fd 0/1).
 *
 * Every message is streamed into the injector named by $QUEUE_INJECT (default queue-inject)
 * while it arrives; the envelope is written on the injector's fd 1 only when the data is
 * complete and valid, so a refused or interrupted message is never committed. The reply to
 * DATA / BDAT LAST comes after the injector has exited. See doc/smtp-receive.8, doc/smtp.md.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/bytestr.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "addr.h"
#include "control.h"
#include "lookup.h"
#include "queue.h"
#include "authfail.h"
#include "checkpw.h"
#include "sasl.h"
#include "smtp.h"
#include "ucspitls.h"

char const *PROG = "smtp-receive";
#define USAGE "smtp-receive (no arguments; UCSPI session on fd 0/1)"

#define INBUF 4096
#define ARGV_MAX 32
#define ID_MAX 128

/* Configuration */
static char const *me = "localhost";
static stralloc mesa = STRALLOC_ZERO;
static stralloc firstdomain = STRALLOC_ZERO;
static unsigned long linemax, databytes, rcptmax, errmax, timeout, sessionmax, hoplimit;
static char const *remoteip = "unknown", *remotehost = 0;
static int relayclient;

/* I/O */
static int infd = 0, outfd = 1;
static char inbuf[INBUF];
static size_t inpos, inlen;
static stralloc out = STRALLOC_ZERO;
static tain session_end;

/* Session state */
static stralloc helo = STRALLOC_ZERO;
static int seen_helo, esmtp, in_mail;
static smtp_mailparams mailp;
static stralloc sender = STRALLOC_ZERO;
static stralloc rcpts = STRALLOC_ZERO; /* NUL-terminated, each "T" addr */
static unsigned long nrcpt;
static unsigned long nerrors, nmessages;
static stralloc line = STRALLOC_ZERO;
static stralloc tmp = STRALLOC_ZERO;
static stralloc targets = STRALLOC_ZERO;

/* TLS and AUTH state */
typedef struct smtpauth_state_s smtpauth_state;
struct smtpauth_state_s {
  int ctlfd;        /* SSLCTLFD, or -1: STARTTLS not available */
  int tls;          /* the session is inside TLS */
  int required;     /* SMTPAUTH set: submission, AUTH (and TLS) required for MAIL */
  int plainok;      /* AUTH allowed without TLS (SMTPAUTH_PLAINTEXT set) */
  unsigned int failures;
  stralloc user;    /* authenticated account, empty if none */
  stralloc cipher;  /* SSL_PROTOCOL SSL_CIPHER, for Received: */
};
static smtpauth_state authst = {-1, 0, 0, 0, 0, STRALLOC_ZERO, STRALLOC_ZERO};
static int smtpauth_init(smtpauth_state *);
static int smtpauth_starttls_offered(smtpauth_state const *);
static int smtpauth_auth_offered(smtpauth_state const *);
static int smtpauth_mail_refused(smtpauth_state *, stralloc *);
static int smtpauth_sender_ok(smtpauth_state *, char const *, size_t);
static int smtpauth_starttls(smtpauth_state *, stralloc *, size_t, int *, int *);
static void smtpauth_auth(smtpauth_state *, stralloc *, char const *, size_t);

static void logsession(char const *why)
{
  char n1[ULONG_FMT], n2[ULONG_FMT];
  n1[ulong_fmt(n1, nmessages)] = 0;
  n2[ulong_fmt(n2, nerrors)] = 0;
  strerr_warni("session ip=", remoteip, " helo=", helo.len ? helo.s : "-", " messages=", n1,
               " errors=", n2, " end=", why);
}

static void quit(int code, char const *why) gccattr_noreturn;

/* Computes the deadline for the next I/O: now + timeout, but never past the session's end. */
static void io_deadline(tain *d)
{
  tain_now_g();
  tain_addsec_g(d, (int)timeout);
  if (tain_less(&session_end, d)) *d = session_end;
}

static int flush_out(void)
{
  size_t w = 0;
  while (w < out.len) {
    iopause_fd x = {outfd, IOPAUSE_WRITE, 0};
    tain d;
    ssize_t r;
    io_deadline(&d);
    r = iopause_g(&x, 1, &d);
    if (r < 0) return 0;
    if (!r) { out.len = 0; quit(111, "write timeout"); }
    r = write(outfd, out.s + w, out.len - w);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      out.len = 0;
      return 0;
    }
    w += (size_t)r;
  }
  out.len = 0;
  return 1;
}

static void quit(int code, char const *why)
{
  if (out.len) flush_out();
  logsession(why);
  _exit(code);
}

static void reply(unsigned int code, char const *ecode, char const *text)
{
  if (!smtp_reply(&out, code, ecode, text, 0)) quit(111, "out of memory");
  if (code >= 400 && code != 452 && code != 354) nerrors++;
  if (out.len >= INBUF) {
    if (!flush_out()) quit(111, "write error");
  }
}

static void reply_more(unsigned int code, char const *ecode, char const *text)
{
  if (!smtp_reply(&out, code, ecode, text, 1)) quit(111, "out of memory");
}

static void die_421(char const *ecode, char const *text, char const *why) gccattr_noreturn;
static void die_421(char const *ecode, char const *text, char const *why)
{
  smtp_reply(&out, 421, ecode, text, 0);
  quit(0, why);
}

/* Refills inbuf from the client. Returns the number of bytes now available; on EOF it
 * returns 0. Times out with 421. Replies are flushed before waiting. */
static size_t fill(void)
{
  if (inpos < inlen) return inlen - inpos;
  inpos = inlen = 0;
  if (out.len && !flush_out()) quit(111, "write error");
  for (;;) {
    iopause_fd x = {infd, IOPAUSE_READ, 0};
    tain d;
    ssize_t r;
    io_deadline(&d);
    r = iopause_g(&x, 1, &d);
    if (r < 0) quit(111, "iopause error");
    if (!r) {
      if (!tain_future(&session_end))
        die_421("4.4.2", "session time limit reached, closing", "session time limit");
      die_421("4.4.2", "idle timeout, closing", "timeout");
    }
    r = read(infd, inbuf, INBUF);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return 0;
    }
    inlen = (size_t)r;
    return inlen;
  }
}

/* Reads one command line into `line` (without CR LF). Returns 1, 0 on EOF, -1 if the line
 * was longer than linemax (it has been skipped up to its LF). */
static int getline_cmd(void)
{
  int toolong = 0;
  line.len = 0;
  for (;;) {
    size_t n = fill(), i;
    char *p;
    if (!n) return 0;
    p = inbuf + inpos;
    i = 0;
    while (i < n && p[i] != '\n') i++;
    if (!toolong) {
      if (line.len + i > linemax) toolong = 1;
      else if (!stralloc_catb(&line, p, i)) quit(111, "out of memory");
    }
    if (i < n) {
      inpos += i + 1;
      if (toolong) return -1;
      if (line.len && line.s[line.len - 1] == '\r') line.len--;
      if (!stralloc_0(&line)) quit(111, "out of memory");
      line.len--;
      return 1;
    }
    inpos += n;
  }
}

/* The transaction */
static void reset_transaction(void)
{
  in_mail = 0;
  sender.len = 0;
  rcpts.len = 0;
  nrcpt = 0;
  memset(&mailp, 0, sizeof mailp);
}

static void reset_session(void)
{
  reset_transaction();
  seen_helo = 0;
  esmtp = 0;
  helo.len = 0;
}

/* The injector */
typedef struct injector_s injector;
struct injector_s {
  pid_t pid;
  int msgfd;   /* its fd 0 */
  int envfd;   /* its fd 1 */
  int idfd;    /* its fd 3 (QUEUE_IDFD) */
  int msgw, envw; /* read ends of the message and envelope pipes, kept to see what was unread */
  int broken;  /* it stopped reading, or exited, before it had everything */
  int pidfd;     /* becomes readable when it exits (-1: not available, see inj_readid) */
  int idclosed;   /* EOF seen on idfd */
  int reaped, wstat;
  char id[ID_MAX];
  size_t idlen;
  unsigned long long size; /* bytes of message written (or that would have been) */
  int toobig;
  smtp_data dm;
  smtp_hops hops; /* the client's Received: fields */
};

static void inj_close(injector *j)
{
  if (j->msgfd >= 0) fd_close(j->msgfd);
  if (j->envfd >= 0) fd_close(j->envfd);
  if (j->idfd >= 0) fd_close(j->idfd);
  if (j->msgw >= 0) fd_close(j->msgw);
  if (j->envw >= 0) fd_close(j->envw);
  if (j->pidfd >= 0) fd_close(j->pidfd);
  j->msgfd = j->envfd = j->idfd = j->msgw = j->envw = j->pidfd = -1;
}

static int move_high(int fd)
{
  int r = fcntl(fd, F_DUPFD, 10);
  return r;
}

static int inj_start(injector *j)
{
  int pm[2], pe[2], pi[2];
  char const *cmd = getenv("QUEUE_INJECT");
  stralloc *cmdsa = &tmp;
  char const *argv[ARGV_MAX + 1];
  unsigned int argc = 0;
  size_t i;
  memset(j, 0, sizeof *j);
  j->msgfd = j->envfd = j->idfd = j->msgw = j->envw = j->pidfd = -1;
  smtp_hops_init(&j->hops);
  if (!cmd || !*cmd) cmd = "queue-inject";
  cmdsa->len = 0;
  if (!stralloc_cats(cmdsa, cmd) || !stralloc_0(cmdsa)) return 0;
  for (i = 0; i < cmdsa->len && argc < ARGV_MAX;) {
    while (i < cmdsa->len && (cmdsa->s[i] == ' ' || cmdsa->s[i] == '\t' || cmdsa->s[i] == '\n'))
      cmdsa->s[i++] = 0;
    if (i >= cmdsa->len - 1) break;
    argv[argc++] = cmdsa->s + i;
    while (i < cmdsa->len && cmdsa->s[i] && cmdsa->s[i] != ' ' && cmdsa->s[i] != '\t' &&
           cmdsa->s[i] != '\n')
      i++;
  }
  argv[argc] = 0;
  if (!argc) return 0;
  if (pipecoe(pm) < 0) return 0;
  if (pipecoe(pe) < 0) { fd_close(pm[0]); fd_close(pm[1]); return 0; }
  if (pipecoe(pi) < 0) {
    fd_close(pm[0]); fd_close(pm[1]); fd_close(pe[0]); fd_close(pe[1]);
    return 0;
  }
  j->pid = fork();
  if (j->pid < 0) {
    fd_close(pm[0]); fd_close(pm[1]); fd_close(pe[0]); fd_close(pe[1]);
    fd_close(pi[0]); fd_close(pi[1]);
    return 0;
  }
  if (!j->pid) {
    int a = move_high(pm[0]), b = move_high(pe[0]), c = move_high(pi[1]);
    if (a < 0 || b < 0 || c < 0 || dup2(a, 0) < 0 || dup2(b, 1) < 0 || dup2(c, 3) < 0)
      _exit(111);
    if (setenv("QUEUE_IDFD", "3", 1) < 0) _exit(111);
    sig_restore(SIGPIPE);
    execvp(argv[0], (char *const *)argv);
    strerr_warnwusys("exec ", argv[0]);
    _exit(errno == ENOENT ? 100 : 111);
  }
  /* The read ends stay open here (close-on-exec): after the injector's exit, what is left
   * in a pipe is what it never read. */
  j->msgw = pm[0];
  j->envw = pe[0];
  j->pidfd = pidfd_open(j->pid, 0); /* close-on-exec; without it, EOF on fd 3 tells */
  fd_close(pi[1]);
  j->msgfd = pm[1];
  j->envfd = pe[1];
  j->idfd = pi[0];
  if (ndelay_on(j->msgfd) < 0 || ndelay_on(j->envfd) < 0 || ndelay_on(j->idfd) < 0) return 0;
  return 1;
}

/* Reads what the injector wrote on its fd 3 (the queue id, bounded). On EOF, every holder of
 * fd 3 is gone: if the injector has exited, it is reaped and marked broken (it cannot have
 * taken what was not yet written). */
static void inj_readid(injector *j, int during_write)
{
  for (;;) {
    char buf[ID_MAX];
    ssize_t r = read(j->idfd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      r = 0;
    }
    if (!r) {
      j->idclosed = 1;
      if (during_write && !j->reaped) {
        pid_t p = waitpid(j->pid, &j->wstat, WNOHANG);
        if (p == j->pid) { j->reaped = 1; j->broken = 1; }
      }
      return;
    }
    if (j->idlen + (size_t)r <= ID_MAX) {
      memcpy(j->id + j->idlen, buf, (size_t)r);
      j->idlen += (size_t)r;
    }
  }
}

/* Writes s[0..n) to the injector's fd with the session's deadlines; marks it broken if it
 * stopped reading. */
static void inj_write(injector *j, int fd, char const *s, size_t n)
{
  size_t w = 0;
  while (!j->broken && w < n) {
    /* The injector's exit is watched too: the read ends kept here mean that writing to a
     * pipe nobody else reads gives no EPIPE. */
    iopause_fd x[3] = {{fd, IOPAUSE_WRITE, 0}, {j->idfd, IOPAUSE_READ, 0}, {j->pidfd, IOPAUSE_READ, 0}};
    unsigned int nx = 1, ix = 0, ip = 0;
    tain d;
    ssize_t r;
    if (!j->idclosed) x[ix = nx++] = (iopause_fd){j->idfd, IOPAUSE_READ, 0};
    if (j->pidfd >= 0 && !j->reaped) x[ip = nx++] = (iopause_fd){j->pidfd, IOPAUSE_READ, 0};
    io_deadline(&d);
    r = iopause_g(x, nx, &d);
    if (r < 0) quit(111, "iopause error");
    if (!r) { j->broken = 1; break; }
    if (ix && x[ix].revents) inj_readid(j, 1);
    if (ip && x[ip].revents && waitpid(j->pid, &j->wstat, WNOHANG) == j->pid) {
      j->reaped = 1;
      j->broken = 1;
    }
    if (j->broken) break;
    if (!x[0].revents) continue;
    r = write(fd, s + w, n - w);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      j->broken = 1;
      break;
    }
    w += (size_t)r;
  }
}

static void inj_message(injector *j, char const *s, size_t n)
{
  j->size += n;
  if (j->size > databytes) j->toobig = 1;
  if (j->toobig) return;
  inj_write(j, j->msgfd, s, n);
}

/* Abandons the message: closes the pipes without an envelope, kills and reaps. */
static void inj_abort(injector *j)
{
  int w;
  inj_close(j);
  if (j->pid > 0 && !j->reaped) {
    kill(j->pid, SIGTERM);
    wait_pid(j->pid, &w);
  }
  j->pid = 0;
}

/* Bytes left unread in a pipe whose read end fd is (-1 if it cannot be told). */
static long unread(int fd)
{
  int n = 0;
  if (fd < 0 || ioctl(fd, FIONREAD, &n) < 0) return -1;
  return n;
}

/* Commits: writes the envelope, waits for the injector's exit. Returns its exit code (or
 * 111 on trouble) and fills id with the queue id if one came. Returns INJ_UNREAD when the
 * injector claimed success (exit 0) without having taken the whole message and the whole
 * envelope: it exited early, stopped reading, or left bytes in a pipe. A refusal (any other
 * code) is reported as it is, as qmail-smtpd does: a refusal needs no complete message. */
#define INJ_UNREAD (-1)
static int inj_commit(injector *j, stralloc *id)
{
  int w;
  long left;
  fd_close(j->msgfd);
  j->msgfd = -1;
  if (!j->broken) {
    tmp.len = 0;
    if (!stralloc_catb(&tmp, "F", 1) || !stralloc_catb(&tmp, sender.s, sender.len) ||
        !stralloc_0(&tmp) || !stralloc_catb(&tmp, rcpts.s, rcpts.len) || !stralloc_0(&tmp))
      quit(111, "out of memory");
    inj_write(j, j->envfd, tmp.s, tmp.len);
  }
  fd_close(j->envfd);
  j->envfd = -1;
  /* Wait for EOF on the id pipe: every holder of it has exited. */
  if (!j->idclosed) {
    tain d;
    tain_now_g();
    tain_addsec_g(&d, (int)(timeout > 60 ? timeout : 60) * 4);
    while (!j->idclosed) {
      iopause_fd x = {j->idfd, IOPAUSE_READ, 0};
      ssize_t r = iopause_g(&x, 1, &d);
      if (r < 0) quit(111, "iopause error");
      if (!r) {
        inj_abort(j);
        return 111;
      }
      inj_readid(j, 0);
    }
  }
  if (!j->reaped) {
    if (wait_pid(j->pid, &w) != j->pid) { inj_abort(j); return 111; }
    j->reaped = 1;
    j->wstat = w;
  }
  w = j->wstat;
  /* what the injector left unread in the pipes (read ends still open here) */
  left = unread(j->msgw);
  if (!left) left = unread(j->envw);
  inj_close(j);
  j->pid = 0;
  id->len = 0;
  {
    size_t i = 0;
    while (i < j->idlen && j->id[i] > 32 && j->id[i] < 127) i++;
    if (!stralloc_catb(id, j->id, i)) quit(111, "out of memory");
  }
  if (WIFSIGNALED(w)) return 111;
  if (!WEXITSTATUS(w) && (j->broken || left)) return INJ_UNREAD;
  return WEXITSTATUS(w);
}

static void fmt_date(char *buf, size_t n)
{
  time_t t = time(0);
  struct tm tm;
  if (!gmtime_r(&t, &tm) || !strftime(buf, n, "%a, %d %b %Y %H:%M:%S +0000", &tm)) buf[0] = 0;
}

/* Appends s[0..n) to sa, keeping only harmless bytes (for the Received: line). */
static int cat_safe(stralloc *sa, char const *s, size_t n, size_t max)
{
  size_t i;
  if (n > max) n = max;
  for (i = 0; i < n; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
    if (!stralloc_catb(sa, ok ? &c : "?", 1)) return 0;
  }
  return 1;
}

static void write_received(injector *j)
{
  char date[64];
  stralloc *r = &tmp;
  /* RFC 3848 and RFC 6531 protocol names: [UTF8]SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA */
  char const *proto = !esmtp ? "SMTP"
                      : mailp.smtputf8 ? (authst.user.len ? (authst.tls ? "UTF8SMTPSA" : "UTF8SMTPA")
                                                          : (authst.tls ? "UTF8SMTPS" : "UTF8SMTP"))
                      : (authst.user.len ? (authst.tls ? "ESMTPSA" : "ESMTPA")
                                         : (authst.tls ? "ESMTPS" : "ESMTP"));
  fmt_date(date, sizeof date);
  r->len = 0;
  if (!stralloc_cats(r, "Received: from ") || !cat_safe(r, helo.s, helo.len, 64) ||
      !stralloc_cats(r, " (") ||
      (remotehost && !cat_safe(r, remotehost, strlen(remotehost), 64)) ||
      (remotehost && !stralloc_cats(r, " ")) || !stralloc_cats(r, "[") ||
      !cat_safe(r, remoteip, strlen(remoteip), 64) || !stralloc_cats(r, "])\n\tby ") ||
      !stralloc_cats(r, me) || !stralloc_cats(r, " (pillarbox) with ") ||
      !stralloc_cats(r, proto))
    quit(111, "out of memory");
  if (authst.tls && authst.cipher.len) {
    if (!stralloc_cats(r, "\n\t(") || !cat_safe(r, authst.cipher.s, authst.cipher.len, 64) ||
        !stralloc_cats(r, ")"))
      quit(111, "out of memory");
  }
  if (nrcpt == 1) {
    if (!stralloc_cats(r, "\n\tfor <") || !stralloc_catb(r, rcpts.s + 1, rcpts.len - 2) ||
        !stralloc_cats(r, ">"))
      quit(111, "out of memory");
  }
  if (!stralloc_cats(r, "; ") || !stralloc_cats(r, date) || !stralloc_cats(r, "\n"))
    quit(111, "out of memory");
  inj_message(j, r->s, r->len);
}

static void log_message(char const *result, unsigned long long size, char const *id)
{
  char n1[ULONG_FMT], n2[UINT64_FMT];
  n1[ulong_fmt(n1, nrcpt)] = 0;
  n2[uint64_fmt(n2, size)] = 0;
  sender.s[sender.len] = 0;
  strerr_warni("message ip=", remoteip, " from=<", sender.s, "> rcpts=", n1, " size=", n2,
               " result=", result, id && *id ? " id=" : "", id ? id : "");
}

/* Maps the end of a message to its reply and log line. */
static void finish_message(injector *j, unsigned int dataflags)
{
  stralloc id = STRALLOC_ZERO;
  if (j->toobig) {
    inj_abort(j);
    log_message("552", j->size, 0);
    reply(552, "5.3.4", "message too big");
  } else if (dataflags) {
    inj_abort(j);
    log_message("550-bare-cr-lf", j->size, 0);
    reply(550, "5.6.0", "bare CR or LF in message (RFC 5321 2.3.8), message refused");
  } else if (j->hops.count >= hoplimit) {
    /* with the Received: line added here it would be over the limit */
    inj_abort(j);
    log_message("554-too-many-hops", j->size, 0);
    reply(554, "5.4.6", "too many hops, mail loop");
  } else {
    int e = inj_commit(j, &id);
    if (!stralloc_0(&id)) quit(111, "out of memory");
    if (!e) {
      stralloc *t = &tmp;
      nmessages++;
      log_message("250", j->size, id.s);
      t->len = 0;
      if (!stralloc_cats(t, id.len > 1 ? "Ok: queued as " : "Ok: queued") ||
          !stralloc_cats(t, id.s) || !stralloc_0(t))
        quit(111, "out of memory");
      reply(250, "2.0.0", t->s);
    } else if (e == INJ_UNREAD) {
      log_message("451-injector-did-not-read", j->size, 0);
      reply(451, "4.3.0", "temporary queue failure, try again later");
    } else if ((e >= 11 && e <= 40) || e == 91) {
      char n[UINT_FMT];
      n[uint_fmt(n, (unsigned int)e)] = 0;
      log_message(n, j->size, 0);
      reply(554, "5.3.0", "message refused by the queue");
    } else {
      char n[UINT_FMT];
      n[uint_fmt(n, (unsigned int)e)] = 0;
      log_message(n, j->size, 0);
      reply(451, "4.3.0", "temporary queue failure, try again later");
    }
  }
  stralloc_free(&id);
  reset_transaction();
}

/* DATA */
static void do_data(smtp_cmd const *c)
{
  injector j;
  int started;
  if (c->arglen) { reply(501, "5.5.4", "DATA takes no argument"); return; }
  if (!in_mail) { reply(503, "5.5.1", "MAIL first"); return; }
  if (!nrcpt) { reply(503, "5.5.1", "no valid recipients"); return; }
  started = inj_start(&j);
  if (!started) {
    inj_abort(&j);
    reply(451, "4.3.0", "unable to start the queue, try again later");
    return;
  }
  reply(354, 0, "End data with <CR><LF>.<CR><LF>");
  write_received(&j);
  smtp_data_init(&j.dm, 0);
  for (;;) {
    char obuf[INBUF + 2];
    size_t n = fill(), used, olen;
    int done;
    if (!n) {
      inj_abort(&j);
      log_message("disconnected", j.size, 0);
      quit(0, "disconnected in DATA");
    }
    used = smtp_data_scan(&j.dm, inbuf + inpos, n, obuf, &olen, &done);
    inpos += used;
    smtp_hops_scan(&j.hops, obuf, olen);
    inj_message(&j, obuf, olen);
    if (done) break;
  }
  finish_message(&j, j.dm.flags);
}

/* BDAT */
static injector bj;
static int bdat_active, bdat_failed;

static void do_bdat(smtp_cmd const *c)
{
  unsigned long long n, left;
  int last;
  if (!smtp_parse_bdat(c->arg, c->arglen, ~0ULL >> 1, &n, &last))
    die_421("4.5.4", "BDAT syntax error, closing", "bad BDAT");
  if (!bdat_active) {
    bdat_failed = 0;
    if (!in_mail || !nrcpt) bdat_failed = 503;
    else if (!inj_start(&bj)) { inj_abort(&bj); bdat_failed = 451; }
    else write_received(&bj);
    smtp_data_init(&bj.dm, 1);
    bdat_active = 1;
  }
  left = n;
  while (left) {
    char obuf[INBUF + 2];
    size_t avail = fill(), take, olen;
    int done;
    if (!avail) {
      if (!bdat_failed) inj_abort(&bj);
      quit(0, "disconnected in BDAT");
    }
    take = avail < left ? avail : (size_t)left;
    if (!bdat_failed) {
      smtp_data_scan(&bj.dm, inbuf + inpos, take, obuf, &olen, &done);
      smtp_hops_scan(&bj.hops, obuf, olen);
      inj_message(&bj, obuf, olen);
    }
    inpos += take;
    left -= take;
  }
  if (!bdat_failed && bj.toobig) {
    inj_abort(&bj);
    bdat_failed = 552;
    log_message("552", bj.size, 0);
  }
  if (last) {
    bdat_active = 0;
    if (bdat_failed == 503) { reply(503, "5.5.1", "MAIL and RCPT first"); return; }
    if (bdat_failed == 451) { reply(451, "4.3.0", "unable to start the queue"); return; }
    if (bdat_failed == 552) {
      reply(552, "5.3.4", "message too big");
      reset_transaction();
      return;
    }
    {
      char o[2];
      size_t k = smtp_data_finish(&bj.dm, o);
      smtp_hops_scan(&bj.hops, o, k);
      inj_message(&bj, o, k);
    }
    finish_message(&bj, bj.dm.flags);
    return;
  }
  switch (bdat_failed) {
    case 503: reply(503, "5.5.1", "MAIL and RCPT first"); break;
    case 451: reply(451, "4.3.0", "unable to start the queue"); break;
    case 552: reply(552, "5.3.4", "message too big"); break;
    default: {
      char num[UINT64_FMT + 32];
      size_t k = uint64_fmt(num, n);
      memcpy(num + k, " octets received", 17);
      reply(250, "2.0.0", num);
    }
  }
}

static void bdat_abandon(void)
{
  if (bdat_active) {
    if (!bdat_failed) inj_abort(&bj);
    bdat_active = 0;
  }
}

/* EHLO / HELO */
static void do_helo(smtp_cmd const *c, int ext)
{
  char num[ULONG_FMT + 8];
  if (!c->arglen) { reply(501, "5.5.4", ext ? "EHLO needs a domain" : "HELO needs a domain"); return; }
  bdat_abandon();
  reset_transaction();
  helo.len = 0;
  if (!stralloc_catb(&helo, c->arg, c->arglen > 255 ? 255 : c->arglen) || !stralloc_0(&helo))
    quit(111, "out of memory");
  helo.len--;
  seen_helo = 1;
  esmtp = ext;
  if (!ext) {
    tmp.len = 0;
    if (!stralloc_cats(&tmp, me) || !stralloc_0(&tmp)) quit(111, "out of memory");
    reply(250, 0, tmp.s);
    return;
  }
  tmp.len = 0;
  if (!stralloc_cats(&tmp, me) || !stralloc_cats(&tmp, " greets ") ||
      !cat_safe(&tmp, c->arg, c->arglen, 64) || !stralloc_0(&tmp))
    quit(111, "out of memory");
  reply_more(250, 0, tmp.s);
  reply_more(250, 0, "PIPELINING");
  memcpy(num, "SIZE ", 5);
  num[5 + ulong_fmt(num + 5, databytes)] = 0;
  reply_more(250, 0, num);
  reply_more(250, 0, "8BITMIME");
  reply_more(250, 0, "SMTPUTF8");
  reply_more(250, 0, "CHUNKING");
  if (smtpauth_starttls_offered(&authst)) reply_more(250, 0, "STARTTLS");
  if (smtpauth_auth_offered(&authst)) reply_more(250, 0, "AUTH PLAIN LOGIN");
  reply(250, 0, "ENHANCEDSTATUSCODES");
}

static void do_mail(smtp_cmd const *c)
{
  int r;
  if (!seen_helo) { reply(503, "5.5.1", "say EHLO first"); return; }
  if (in_mail) { reply(503, "5.5.1", "nested MAIL command"); return; }
  if (smtpauth_mail_refused(&authst, &out)) { nerrors++; return; }
  r = smtp_parse_mail(c->arg, c->arglen, &sender, &mailp);
  switch (r) {
    case SMTP_OK: break;
    case SMTP_EADDR: reply(501, "5.1.7", addr_strerror(mailp.addrerr)); return;
    case SMTP_EPARAM: reply(555, "5.5.4", "unsupported parameter"); return;
    case SMTP_EPARAMVAL: reply(501, "5.5.4", "bad parameter value"); return;
    case SMTP_ENOMEM: quit(111, "out of memory");
    default: reply(501, "5.5.4", "syntax: MAIL FROM:<address>"); return;
  }
  if (!esmtp && (mailp.has_size || mailp.body || mailp.smtputf8)) {
    reply(555, "5.5.4", "parameters need EHLO");
    sender.len = 0;
    return;
  }
  if (mailp.has_size && mailp.size > databytes) {
    reply(552, "5.3.4", "message size exceeds fixed maximum message size");
    sender.len = 0;
    return;
  }
  if (!smtpauth_sender_ok(&authst, sender.s, sender.len)) {
    reply(553, "5.7.1", "sender address not owned by the authenticated user");
    sender.len = 0;
    return;
  }
  if (!stralloc_0(&sender)) quit(111, "out of memory");
  sender.len--;
  in_mail = 1;
  reply(250, "2.1.0", "Ok");
}

static void do_rcpt(smtp_cmd const *c)
{
  smtp_mailparams p;
  int r;
  if (!in_mail) { reply(503, "5.5.1", "MAIL first"); return; }
  r = smtp_parse_rcpt(c->arg, c->arglen, mailp.smtputf8 ? ADDR_UTF8 : 0, &tmp, &p);
  switch (r) {
    case SMTP_OK: break;
    case SMTP_EADDR: reply(501, "5.1.3", addr_strerror(p.addrerr)); return;
    case SMTP_EPARAM: reply(555, "5.5.4", "unsupported parameter"); return;
    case SMTP_EPARAMVAL: reply(501, "5.5.4", "bad parameter value"); return;
    case SMTP_ENOMEM: quit(111, "out of memory");
    default: reply(501, "5.5.4", "syntax: RCPT TO:<address>"); return;
  }
  if (p.postmaster) {
    if (!firstdomain.len) { reply(550, "5.1.1", "no postmaster here"); return; }
    if (!stralloc_catb(&tmp, "@", 1) || !stralloc_catb(&tmp, firstdomain.s, firstdomain.len))
      quit(111, "out of memory");
  }
  if (nrcpt >= rcptmax) { reply(452, "4.5.3", "too many recipients"); return; }
  {
    stralloc folded = STRALLOC_ZERO;
    if (!addr_fold(tmp.s, tmp.len, &folded)) quit(111, "out of memory");
    targets.len = 0;
    r = lookup_resolve(folded.s, folded.len, &targets);
    stralloc_free(&folded);
  }
  switch (r) {
    case LOOKUP_FOUND: break;
    case LOOKUP_UNKNOWN: reply(550, "5.1.1", "no such user here"); return;
    case LOOKUP_REMOTE:
      if (relayclient || authst.user.len) break;
      reply(554, "5.7.1", "relay access denied");
      return;
    case LOOKUP_ELOOP: reply(550, "5.4.6", "alias loop or expansion too large"); return;
    default: reply(451, "4.3.0", "temporary lookup failure, try again later"); return;
  }
  {
    /* The same recipient twice is one recipient (one delivery). A local domain's lookups fold
     * case, so there Joe and joe are one mailbox; a remote local part is the remote host's to
     * interpret (RFC 5321 2.4), so only the same bytes (domain in any case) are the same. */
    size_t i;
    for (i = 0; i < rcpts.len; i += strlen(rcpts.s + i) + 1)
      if (smtp_rcpt_same(rcpts.s + i + 1, strlen(rcpts.s + i + 1), tmp.s, tmp.len,
                         r == LOOKUP_FOUND)) {
        reply(250, "2.1.5", "Ok (duplicate)");
        return;
      }
  }
  if (!stralloc_catb(&rcpts, "T", 1) || !stralloc_catb(&rcpts, tmp.s, tmp.len) ||
      !stralloc_0(&rcpts))
    quit(111, "out of memory");
  nrcpt++;
  reply(250, "2.1.5", "Ok");
}

static void do_help(void)
{
  reply_more(214, "2.0.0", "pillarbox SMTP: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY");
  reply(214, "2.0.0", "see RFC 5321");
}

/* STARTTLS and AUTH */
static void coe_env(char const *name)
{
  char const *x = getenv(name);
  unsigned int fd;
  if (x && *x && uint0_scan(x, &fd)) coe((int)fd);
}

static int tls_facts(smtpauth_state *a)
{
  char const *x = getenv("SSL_PROTOCOL");
  a->cipher.len = 0;
  if (!x || !*x) return 1;
  a->tls = 1;
  if (!stralloc_cats(&a->cipher, x)) return 0;
  x = getenv("SSL_CIPHER");
  if (x && *x && (!stralloc_catb(&a->cipher, " ", 1) || !stralloc_cats(&a->cipher, x))) return 0;
  return 1;
}

static int smtpauth_init(smtpauth_state *a)
{
  if (ucspitls_available()) {
    char const *x = getenv("SSLCTLFD");
    unsigned int fd;
    if (uint0_scan(x, &fd)) a->ctlfd = (int)fd;
    coe_env("SSLCTLFD");
    coe_env("SSLREADFD");
    coe_env("SSLWRITEFD");
  }
  if (!tls_facts(a)) return 0;
  a->required = !!getenv("SMTPAUTH");
  /* AUTH without TLS: only when explicitly allowed, and only for a loopback peer */
  a->plainok = getenv("SMTPAUTH_PLAINTEXT") &&
               (!strncmp(remoteip, "127.", 4) || !strcmp(remoteip, "::1") ||
                !strncmp(remoteip, "::ffff:127.", 11));
  return 1;
}

static int smtpauth_starttls_offered(smtpauth_state const *a)
{
  return a->ctlfd >= 0 && !a->tls;
}

static int smtpauth_auth_offered(smtpauth_state const *a)
{
  return !a->user.len && (a->tls || a->plainok);
}

/* Submission policy: 1 (and a reply) if MAIL/DATA must be refused now. */
static int smtpauth_mail_refused(smtpauth_state *a, stralloc *o)
{
  (void)o;
  if (!a->required) return 0;
  if (!a->tls && !a->plainok) {
    reply(530, "5.7.0", "must issue a STARTTLS command first");
    nerrors--;
    return 1;
  }
  if (!a->user.len) {
    reply(530, "5.7.0", "authentication required");
    nerrors--;
    return 1;
  }
  return 0;
}

/* An authenticated user may only send as one of its own addresses: the account itself, or an
 * address (alias, +tag) that resolves to it. The null sender is allowed. */
static int smtpauth_sender_ok(smtpauth_state *a, char const *s, size_t n)
{
  stralloc f = STRALLOC_ZERO;
  size_t i;
  int r, ok = 0;
  if (!a->user.len || !n) return 1;
  if (!addr_fold(s, n, &f)) quit(111, "out of memory");
  if (f.len == a->user.len && !memcmp(f.s, a->user.s, f.len)) { stralloc_free(&f); return 1; }
  targets.len = 0;
  r = lookup_resolve(f.s, f.len, &targets);
  stralloc_free(&f);
  if (r != LOOKUP_FOUND) return 0;
  for (i = 0; i < targets.len; i += strlen(targets.s + i) + 1) {
    if (targets.s[i] == 'L' && strlen(targets.s + i + 1) == a->user.len &&
        !strncasecmp(targets.s + i + 1, a->user.s, a->user.len))
      ok = 1;
  }
  return ok;
}

/* 1: TLS started (the caller resets the session), 0: refused with a reply, -1: broken. */
static int smtpauth_starttls(smtpauth_state *a, stralloc *o, size_t arglen, int *in, int *outp)
{
  int rfd, wfd;
  (void)o;
  if (arglen) { reply(501, "5.5.4", "STARTTLS takes no argument"); nerrors--; return 0; }
  if (a->tls) { reply(554, "5.5.1", "TLS already active"); nerrors--; return 0; }
  if (a->ctlfd < 0) { reply(502, "5.5.1", "STARTTLS not available"); nerrors--; return 0; }
  {
    /* Is the sidecar still there? A closed control socket reads as EOF at once. */
    iopause_fd x = {a->ctlfd, IOPAUSE_READ, 0};
    tain d;
    tain_now_g();
    d = STAMP;
    if (fcntl(a->ctlfd, F_GETFD) < 0 || iopause_g(&x, 1, &d) != 0) {
      a->ctlfd = -1;
      reply(454, "4.7.0", "TLS not available due to temporary reason");
      nerrors--;
      return 0;
    }
  }
  reply(220, "2.0.0", "Ready to start TLS");
  if (out.len && !flush_out()) quit(111, "write error");
  if (!ucspitls_start(&rfd, &wfd)) {
    a->ctlfd = -1;
    return -1;
  }
  a->ctlfd = -1;
  if (ndelay_on(rfd) < 0 || ndelay_on(wfd) < 0) quit(111, "set TLS fds non-blocking");
  coe(rfd);
  coe(wfd);
  *in = rfd;
  *outp = wfd;
  if (!tls_facts(a)) quit(111, "out of memory");
  a->tls = 1;
  a->user.len = 0;
  return 1;
}

static unsigned long authdelay;

static void auth_failed(smtpauth_state *a, unsigned int code, char const *ecode, char const *t)
{
  if (authfail_record(remoteip) < 0) strerr_warnwusys("record a failed login");
  a->failures++;
  strerr_warni("auth failed ip=", remoteip);
  reply(code, ecode, t);
  if (a->failures >= 3) die_421("4.7.0", "too many failed logins, closing", "auth failures");
  if (out.len && !flush_out()) quit(111, "write error");
  if (authdelay) sleep((unsigned int)(authdelay * a->failures));
}

/* Reads one SASL client response line into a decoded buffer. Returns the decoded length, or
 * -1 after a reply was given. */
static ssize_t auth_response(char *dec, size_t decmax, char const *ir, size_t irlen)
{
  size_t dl;
  int r;
  if (!ir) {
    r = getline_cmd();
    if (!r) quit(0, "disconnected in AUTH");
    if (r < 0 || line.len > SASL_RESPONSE_MAX) {
      reply(500, "5.5.6", "authentication exchange line too long");
      return -1;
    }
    ir = line.s;
    irlen = line.len;
  }
  if (sasl_is_cancel(ir, irlen)) { reply(501, "5.7.0", "authentication cancelled"); return -1; }
  if (irlen == 1 && ir[0] == '=') return 0;
  r = sasl_b64_decode(ir, irlen, dec, decmax, &dl);
  if (r == SASL_ETOOLONG) { reply(500, "5.5.6", "authentication exchange too long"); return -1; }
  if (r != SASL_OK) { reply(501, "5.5.2", "bad base64"); return -1; }
  return (ssize_t)dl;
}

static void smtpauth_auth(smtpauth_state *a, stralloc *o, char const *arg, size_t arglen)
{
  char const *ir;
  size_t irlen;
  char dec[SASL_DECODED_MAX + 1], udec[SASL_FIELD_MAX + 1];
  char const *user, *pass;
  size_t ulen, plen;
  ssize_t n;
  int mech, r;
  (void)o;
  if (a->user.len) { reply(503, "5.5.1", "already authenticated"); return; }
  if (!a->tls && !a->plainok) { reply(530, "5.7.0", "must issue a STARTTLS command first"); return; }
  r = authfail_blocked(remoteip);
  if (r < 0) strerr_warnwusys("read the failed login table");
  if (r > 0) { reply(454, "4.7.0", "too many failed logins from your address, try later"); return; }
  mech = sasl_parse_auth(arg, arglen, &ir, &irlen);
  if (mech < 0) { reply(501, "5.5.4", "syntax: AUTH mechanism [initial-response]"); return; }
  if (mech == SASL_MECH_PLAIN) {
    sasl_plain p;
    if (!ir) reply(334, 0, "");
    n = auth_response(dec, SASL_DECODED_MAX, ir, irlen);
    if (n < 0) return;
    r = sasl_plain_parse(dec, (size_t)n, &p);
    if (r == SASL_EAUTHZ) { auth_failed(a, 535, "5.7.8", "authentication credentials invalid"); return; }
    if (r == SASL_ETOOLONG) { reply(500, "5.5.6", "authentication exchange too long"); return; }
    if (r != SASL_OK) { reply(501, "5.5.2", "malformed PLAIN response"); return; }
    user = p.authcid; ulen = p.authcidlen; pass = p.passwd; plen = p.passwdlen;
  } else if (mech == SASL_MECH_LOGIN) {
    if (!ir) reply(334, 0, sasl_login_prompt(0));
    n = auth_response(udec, SASL_FIELD_MAX, ir, irlen);
    if (n < 0) return;
    if (sasl_login_field(udec, (size_t)n) != SASL_OK) { reply(501, "5.5.2", "bad user name"); return; }
    ulen = (size_t)n;
    user = udec;
    reply(334, 0, sasl_login_prompt(1));
    n = auth_response(dec, SASL_FIELD_MAX, 0, 0);
    if (n < 0) return;
    if (sasl_login_field(dec, (size_t)n) != SASL_OK) { reply(501, "5.5.2", "bad password"); return; }
    pass = dec; plen = (size_t)n;
  } else {
    reply(504, "5.5.4", "mechanism not supported");
    return;
  }
  r = checkpw(user, ulen, pass, plen);
  if (r == CHECKPW_OK) {
    account acc = ACCOUNT_ZERO;
    a->user.len = 0;
    if (lookup_account_nohash(user, ulen, &acc) > 0 && acc.address.len > 1) {
      if (!addr_fold(acc.address.s, acc.address.len - 1, &a->user)) quit(111, "out of memory");
    } else if (!addr_fold(user, ulen, &a->user)) quit(111, "out of memory");
    account_free(&acc);
    if (!stralloc_0(&a->user)) quit(111, "out of memory");
    a->user.len--;
    strerr_warni("auth ok ip=", remoteip, " user=", a->user.s);
    reply(235, "2.7.0", "authentication successful");
  } else if (r == CHECKPW_BAD) {
    auth_failed(a, 535, "5.7.8", "authentication credentials invalid");
  } else {
    reply(454, "4.7.0", "temporary authentication failure");
  }
  byte_zzero(dec, sizeof dec);
}

static unsigned long getcontrol(char const *name, unsigned long def)
{
  return control_uint(name, def);
}

int main(int argc, char const *const *argv)
{
  char const *x;
  (void)argv;
  if (argc > 1) strerr_dieusage(100, USAGE);
  if (sig_altignore(SIGPIPE) < 0) strerr_diefusys(111, "ignore SIGPIPE");

  {
    int r = control_readline(&mesa, "me");
    if (r < 0) strerr_diefusys(111, "read control/me");
    if (r > 0) {
      if (!stralloc_0(&mesa)) strerr_diefusys(111, "allocate");
      me = mesa.s;
    } else if ((x = getenv("TCPLOCALHOST")) && *x) me = x;
    r = control_readline(&firstdomain, "domains");
    if (r < 0) strerr_diefusys(111, "read control/domains");
  }
  linemax = getcontrol("smtp-linemax", 2048);
  /* the same default as queue-inject's, and 0 means that default there too */
  databytes = getcontrol("databytes", QUEUE_DATABYTES);
  if (!databytes) databytes = QUEUE_DATABYTES;
  hoplimit = getcontrol("hop-limit", 100);
  if (!hoplimit) hoplimit = 100;
  rcptmax = getcontrol("smtp-rcptmax", 100);
  errmax = getcontrol("smtp-errmax", 20);
  timeout = getcontrol("smtp-timeout", 300);
  sessionmax = getcontrol("smtp-sessionmax", 3600);
  authdelay = getcontrol("smtp-authdelay", 1);
  if (linemax < 512) linemax = 512;
  if (linemax > 65536) linemax = 65536;
  if (!timeout) timeout = 1;
  if (timeout > 86400) timeout = 86400;
  if (!sessionmax || sessionmax > 86400 * 7) sessionmax = 86400 * 7;
  if (!rcptmax) rcptmax = 1;

  x = getenv("TCPREMOTEIP");
  if (x && *x) remoteip = x;
  x = getenv("TCPREMOTEHOST");
  if (x && *x) remotehost = x;
  relayclient = !!getenv("RELAYCLIENT");
  if (!smtpauth_init(&authst)) strerr_diefusys(111, "set up TLS/AUTH state");

  tain_now_set_stopwatch_g();
  tain_addsec_g(&session_end, (int)sessionmax);
  if (ndelay_on(infd) < 0 || ndelay_on(outfd) < 0) strerr_diefusys(111, "set fd 0/1 non-blocking");

  tmp.len = 0;
  if (!stralloc_cats(&tmp, me) || !stralloc_cats(&tmp, " ESMTP pillarbox") || !stralloc_0(&tmp))
    strerr_diefusys(111, "allocate");
  reply(220, 0, tmp.s);

  for (;;) {
    smtp_cmd c;
    int r;
    if (nerrors > errmax) die_421("4.7.0", "too many errors, closing", "too many errors");
    r = getline_cmd();
    if (!r) quit(0, "disconnected");
    if (r < 0) { reply(500, "5.5.2", "line too long"); continue; }
    if (!smtp_parse_cmd(line.s, line.len, &c)) {
      reply(501, "5.5.2", "control characters in command");
      continue;
    }
    if (bdat_active && c.verb != SMTP_V_BDAT && c.verb != SMTP_V_NOOP) {
      bdat_abandon();
      reset_transaction();
      if (c.verb != SMTP_V_RSET && c.verb != SMTP_V_QUIT && c.verb != SMTP_V_EHLO &&
          c.verb != SMTP_V_HELO) {
        reply(503, "5.5.1", "BDAT transaction abandoned");
        continue;
      }
    }
    switch (c.verb) {
      case SMTP_V_EHLO: do_helo(&c, 1); break;
      case SMTP_V_HELO: do_helo(&c, 0); break;
      case SMTP_V_MAIL: do_mail(&c); break;
      case SMTP_V_RCPT: do_rcpt(&c); break;
      case SMTP_V_DATA:
        if (smtpauth_mail_refused(&authst, &out)) { nerrors++; break; }
        do_data(&c);
        break;
      case SMTP_V_BDAT: do_bdat(&c); break;
      case SMTP_V_RSET:
        if (c.arglen) { reply(501, "5.5.4", "RSET takes no argument"); break; }
        reset_transaction();
        reply(250, "2.0.0", "Ok");
        break;
      case SMTP_V_NOOP: reply(250, "2.0.0", "Ok"); break;
      case SMTP_V_QUIT:
        reply(221, "2.0.0", "Bye");
        quit(0, "quit");
      case SMTP_V_VRFY:
        reply(252, "2.5.0", "cannot VRFY user, but will accept message and attempt delivery");
        break;
      case SMTP_V_EXPN: reply(502, "5.5.1", "EXPN not implemented"); break;
      case SMTP_V_HELP: do_help(); break;
      case SMTP_V_STARTTLS: {
        int rr;
        if (in_mail) { reply(503, "5.5.1", "STARTTLS inside a transaction"); break; }
        rr = smtpauth_starttls(&authst, &out, c.arglen, &infd, &outfd);
        if (rr == 1) {
          /* RFC 3207 4.2: forget what was pipelined in clear and everything known */
          inpos = inlen = 0;
          reset_session();
        } else if (rr < 0) quit(0, "TLS failed");
        else nerrors++;
        if (out.len && !flush_out()) quit(111, "write error");
        break;
      }
      case SMTP_V_AUTH:
        if (in_mail) { reply(503, "5.5.1", "AUTH inside a transaction"); break; }
        if (!seen_helo) { reply(503, "5.5.1", "say EHLO first"); break; }
        smtpauth_auth(&authst, &out, c.arg, c.arglen);
        break;
      default: reply(500, "5.5.1", "command unrecognized"); break;
    }
  }
}
