/* imapserv: imap-serve's pre-login dialogue. See imapserv.h. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/bytestr.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>
#include "authfail.h"
#include "checkpw.h"
#include "connlimit.h"
#include "control.h"
#include "imapio.h"
#include "imapserv.h"
#include "ipkey.h"
#include "sasl.h"
#include "saslserv.h"
#include "spawn.h"
#include "timedio.h"
#include "ucspitls.h"

/* ---- pure helpers ---- */

char const *imapserv_capabilities(unsigned int flags)
{
#define CAPS_BASE "IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE"
  static char const *const caps[8] = {
    CAPS_BASE " LOGINDISABLED",                              /* plain, no STARTTLS */
    CAPS_BASE " LOGINDISABLED",                              /* TLS without login: unused */
    CAPS_BASE " STARTTLS LOGINDISABLED",                     /* plain, STARTTLS offered */
    CAPS_BASE " LOGINDISABLED",
    CAPS_BASE " AUTH=PLAIN AUTH=LOGIN",                      /* plaintext allowed */
    CAPS_BASE " AUTH=PLAIN AUTH=LOGIN",                      /* in TLS */
    CAPS_BASE " STARTTLS AUTH=PLAIN AUTH=LOGIN",             /* plaintext allowed, TLS too */
    CAPS_BASE " AUTH=PLAIN AUTH=LOGIN",
  };
#undef CAPS_BASE
  if (flags & IMAPSERV_TLS) flags &= ~(unsigned int)IMAPSERV_STARTTLS;
  return caps[flags & 7];
}

int imapserv_loopback(char const *a)
{
  if (!a) return 0;
  return !strncmp(a, "127.", 4) || !strcmp(a, "::1") || !strncmp(a, "::ffff:127.", 11);
}

static int field(imap_arg const *a)
{
  return imap_is_string(a) && a->len && a->len <= SASL_FIELD_MAX && !memchr(a->s, 0, a->len);
}

int imapserv_login_args(imap_cmd const *c, char const **user, size_t *ulen,
                        char const **pass, size_t *plen)
{
  if (c->nargs != 2 || !field(&c->arg[0]) || !field(&c->arg[1])) return 0;
  *user = c->arg[0].s;
  *ulen = c->arg[0].len;
  *pass = c->arg[1].s;
  *plen = c->arg[1].len;
  return 1;
}

size_t imapserv_sasl_arg(imap_cmd const *c, char *out, size_t max)
{
  size_t n;
  if (c->nargs < 1 || c->nargs > 2 || c->arg[0].type != IMAP_ATOM ||
      (c->nargs == 2 && c->arg[1].type != IMAP_ATOM))
    return 0;
  n = c->arg[0].len + (c->nargs == 2 ? 1 + c->arg[1].len : 0);
  if (!c->arg[0].len || n >= max) return 0;
  memcpy(out, c->arg[0].s, c->arg[0].len);
  if (c->nargs == 2) {
    out[c->arg[0].len] = ' ';
    memcpy(out + c->arg[0].len + 1, c->arg[1].s, c->arg[1].len);
  }
  out[n] = 0;
  return n;
}

void imapserv_hex(char *out, char const *s, size_t len)
{
  static char const hex[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < len; i++) {
    out[2 * i] = hex[(unsigned char)s[i] >> 4];
    out[2 * i + 1] = hex[(unsigned char)s[i] & 15];
  }
  out[2 * len] = 0;
}

/* ---- the dialogue ---- */

static imapserv_cfg const *cfg;
static int in_tls;
static unsigned int bad_commands, fails;
static time_t deadline;         /* the end of the pre-login dialogue */
static stralloc cmdbuf = STRALLOC_ZERO;
static imap_cmd cmd;
static char tagbuf[IMAP_TAG_MAX + 1];
static connlimit slot = CONNLIMIT_ZERO;
static sigjmp_buf *jump; /* a tcp-pool worker: where a session's end goes (imapserv_keepalive) */

static void leave(int) gccattr_noreturn;
static void bye(int) gccattr_noreturn;

/* Every exit: the connection slot is given back (its file removed) first. A pool worker
 * whose session ended (0) or timed out (99) takes the next connection instead. */
static void leave(int code)
{
  connlimit_release(&slot);
  if (jump && (code == 0 || code == 99)) {
    alarm(0);
    siglongjmp(*jump, 1);
  }
  _exit(code);
}

static void bye(int code)
{
  imapio_flush();
  leave(code);
}

static void put(char const *s)
{
  if (!imapio_puts(s)) leave(errno == ETIMEDOUT ? 99 : 0);
}

static void tagged(char const *tag, char const *status, char const *text)
{
  put(tag);
  put(" ");
  put(status);
  put(" ");
  put(text);
  put("\r\n");
}

static char const *ipname(void)
{
  return cfg->ip && *cfg->ip ? cfg->ip : "unknown";
}

/* The deadline of the whole dialogue: a client trickling bytes cannot stretch it. */
static void on_alarm(int sig)
{
  static char const m[] = "* BYE Login timeout, disconnecting.\r\n";
  (void)sig;
  (void)!write(1, m, sizeof m - 1);
  _exit(99);
}

static void arm(void)
{
  time_t now = time(0);
  if (now >= deadline) {
    put("* BYE Login timeout, disconnecting.\r\n");
    bye(99);
  }
  alarm((unsigned int)(deadline - now));
}

static int login_allowed(void)
{
  return in_tls || (cfg->allow_plain && imapserv_loopback(cfg->ip));
}

static unsigned int capflags(void)
{
  return (in_tls ? IMAPSERV_TLS : 0) | (ucspitls_available() ? IMAPSERV_STARTTLS : 0) |
         (login_allowed() ? IMAPSERV_LOGINOK : 0);
}

/* A refused command: counted; too many end the connection (not an IMAP client, or probing). */
static void count_bad(void)
{
  if (++bad_commands >= IMAPSERV_BAD_MAX) {
    put("* BYE Too many invalid commands.\r\n");
    strerr_warni2x("too many bad commands before login from ", ipname());
    bye(0);
  }
}

static void refuse(char const *tag, char const *status, char const *text)
{
  tagged(tag, status, text);
  count_bad();
}

/* A failed login (already counted by attempt()). */
static void failed(char const *tag, char const *u, size_t ulen)
{
  int r;
  strerr_warni4x("failed login for ", checkpw_logname(u, ulen), " from ", ipname());
  fails++;
  if (cfg->faildelay) sleep(cfg->faildelay);
  tagged(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed.");
  r = authfail_blocked(cfg->ip);
  if (r < 0) strerr_warnwu1sys("read the failed-login table");
  if (r == 1 || fails >= IMAPSERV_FAILS_MAX) {
    put("* BYE Too many failed logins.\r\n");
    bye(0);
  }
}

/* Counts the attempt BEFORE the check, so parallel guesses all count: 1 go on, 0 refused. */
static int attempt(char const *tag)
{
  int r = authfail_attempt(cfg->ip);
  if (r < 0) strerr_warnwu1sys("record a login attempt");
  if (r) return 1;
  tagged(tag, "NO", "[UNAVAILABLE] Too many failed logins from your address, try later.");
  put("* BYE Too many failed logins.\r\n");
  bye(0);
}

/* The attempt was not a wrong password (a good one, or no decision): take it back. */
static void forgive(void)
{
  if (authfail_forgive(cfg->ip) < 0) strerr_warnwu1sys("record a login that did not fail");
}

/* Starts the checkpassword program on the client. Returns its pid (-1 on failure) and the
 * write end of the credentials pipe and the read end of the notification pipe. */
static pid_t start_login(char const *tag, char const *u, size_t ulen, int *credfd,
                         int *notifyfd)
{
  static char input[sizeof "IMAP_INPUT=" + 2 * IMAPIO_IBUF];
  static char tagvar[sizeof "IMAP_TAG=" + IMAP_TAG_MAX];
  char const *mods[5] = {tagvar, "IMAP_NOTIFYFD=4", "IMAP_INPUT"};
  char const *rest;
  size_t n;
  memcpy(tagvar, "IMAP_TAG=", 9);
  memcpy(tagvar + 9, tag, strlen(tag) + 1);
  /* what was pipelined after the login goes to the session, every octet (NULs too) */
  n = imapio_pending(&rest);
  if (n) {
    memcpy(input, "IMAP_INPUT=", 11);
    imapserv_hex(input + 11, rest, n);
    mods[2] = input;
  }
  checkpw_detach_mods(mods + 3, !!jump, checkpw_logname(u, ulen), ipname(),
                      slot.fd >= 0 ? slot.path : 0);
  return checkpw_start(cfg->progargv, mods, 5, credfd, notifyfd, jump ? slot.fd : -1);
}

/* Runs the login. Returns only when it failed (the reply is given). */
static void login(char const *tag, char const *u, size_t ulen, char const *pw, size_t pwlen)
{
  char creds[2 * SASL_FIELD_MAX + 8];
  size_t credlen;
  int credfd, notifyfd, code, r;
  pid_t pid;
  if (!attempt(tag)) return;
  credlen = sasl_checkpassword_input(creds, sizeof creds, u, ulen, pw, pwlen);
  if (!credlen) {
    failed(tag, u, ulen);
    return;
  }
  if (!imapio_flush()) bye(0);
  alarm(0); /* the password check has its own bound, the session its own autologout */
  pid = start_login(tag, u, ulen, &credfd, &notifyfd);
  if (pid < 0) {
    byte_zzero(creds, sizeof creds);
    forgive();
    tagged(tag, "NO", "[UNAVAILABLE] Unable to check the password, try later.");
    arm();
    return;
  }
  checkpw_send(credfd, creds, credlen);
  r = checkpw_wait_notify(notifyfd, IMAPSERV_AUTH_WAIT);
  if (r < 0) kill(pid, SIGKILL);
  if (r == 1) {
    forgive();
    strerr_warni4x("login ", checkpw_logname(u, ulen), " from ", ipname());
    if (jump) { /* login-handoff waits, logs the logout and holds the slot: next client */
      fd_close(notifyfd);
      connlimit_pass(&slot);
      leave(0);
    }
    /* the session runs: wait as login-wait, which logs the logout (or in place, below) */
    checkpw_waiter_child(pid, slot.fd, slot.path, checkpw_logname(u, ulen), ipname());
  }
  code = checkpw_reap(pid, "the login program");
  fd_close(notifyfd);
  if (r == 1) { /* the session took place */
    char fmt[UINT_FMT];
    fmt[uint_fmt(fmt, (unsigned int)code)] = 0;
    strerr_warni6x("logout ", checkpw_logname(u, ulen), " from ", ipname(), " status ",
                   code == 256 ? "killed" : fmt);
    leave(code == 256 ? 111 : code);
  }
  if (code != 1) forgive();
  if (r < 0) tagged(tag, "NO", "[UNAVAILABLE] Password check timed out, try later.");
  else {
    switch (code) {
      case 0: /* a session program that does not notify: it had the session */
        strerr_warni4x("login and logout ", checkpw_logname(u, ulen), " from ", ipname());
        leave(0);
      case 1: failed(tag, u, ulen); break;
      case 2: tagged(tag, "NO", "[SERVERBUG] Login misconfigured."); break;
      default: tagged(tag, "NO", "[UNAVAILABLE] Unable to check the password, try later.");
    }
  }
  arm();
}

static void do_login(char const *tag)
{
  char const *u, *pw;
  size_t ulen, pwlen;
  if (!login_allowed()) {
    refuse(tag, "NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed on "
           "non-secure connections: use STARTTLS first.");
    return;
  }
  if (!imapserv_login_args(&cmd, &u, &ulen, &pw, &pwlen)) {
    refuse(tag, "BAD", "Error in IMAP command LOGIN: Invalid arguments.");
    return;
  }
  login(tag, u, ulen, pw, pwlen);
}

static void do_authenticate(char const *tag)
{
  char arg[SASL_RESPONSE_MAX + 64];
  stralloc line = STRALLOC_ZERO;
  char const *ch;
  saslserv s;
  size_t n = imapserv_sasl_arg(&cmd, arg, sizeof arg);
  int r;
  if (!n) {
    refuse(tag, "BAD", "Error in IMAP command AUTHENTICATE: Invalid arguments.");
    return;
  }
  if (!login_allowed()) {
    refuse(tag, "NO", "[PRIVACYREQUIRED] Authentication disallowed on non-secure "
           "connections: use STARTTLS first.");
    return;
  }
  r = saslserv_start(&s, arg, n, &ch);
  while (r == SASLSERV_CHALLENGE) {
    int g;
    put("+ ");
    put(ch);
    put("\r\n");
    g = imapio_readline(&line, SASL_RESPONSE_MAX);
    if (g == IMAPIO_TIMEOUT) {
      put("* BYE Login timeout, disconnecting.\r\n");
      bye(99);
    }
    if (g == IMAPIO_TOOLONG) {
      r = SASLSERV_ETOOLONG;
      break;
    }
    if (g != 1) leave(0);
    r = saslserv_step(&s, line.s, line.len, &ch);
    byte_zzero(line.s, line.len);
  }
  stralloc_free(&line);
  switch (r) {
    case SASLSERV_DONE: login(tag, s.user, s.userlen, s.pass, s.passlen); break;
    case SASLSERV_EAUTHZ:
      if (attempt(tag)) failed(tag, s.user, s.userlen);
      break;
    case SASLSERV_EMECH: refuse(tag, "NO", "Unsupported authentication mechanism."); break;
    case SASLSERV_ECANCEL: refuse(tag, "BAD", "Authentication aborted by client."); break;
    case SASLSERV_ETOOLONG: refuse(tag, "BAD", "Authentication response too long."); break;
    case SASLSERV_EBASE64: refuse(tag, "BAD", "Invalid base64 data in the response."); break;
    default: refuse(tag, "BAD", "Invalid authentication response.");
  }
  saslserv_wipe(&s);
}

static void do_starttls(char const *tag)
{
  if (cmd.nargs) {
    refuse(tag, "BAD", "Error in IMAP command STARTTLS: Unexpected arguments.");
    return;
  }
  if (in_tls) {
    refuse(tag, "BAD", "TLS is already active.");
    return;
  }
  if (!ucspitls_available()) {
    refuse(tag, "BAD", "TLS support is not available.");
    return;
  }
  if (!ucspitls_ready(ucspitls_setup())) { /* the engine service is unreachable */
    tagged(tag, "NO", "[UNAVAILABLE] TLS is not available now.");
    return;
  }
  tagged(tag, "OK", "Begin TLS negotiation now.");
  if (!imapio_flush()) bye(0);
  imapio_discard(); /* what was pipelined in plaintext is dropped (RFC 3501 6.2.1) */
  if (!ucspitls_start_stdio()) strerr_diefu1sys(111, "start TLS");
  if (!imapio_init(0, 1, cfg->timeout)) strerr_diefu1sys(111, "set up the TLS fds");
  in_tls = 1;
}

static void do_id(char const *tag)
{
  if (cmd.nargs < 1 || (cmd.arg[0].type != IMAP_LIST && !imap_is_nil(&cmd.arg[0])) ||
      imap_next(&cmd, 0) != cmd.nargs) {
    refuse(tag, "BAD", "Error in IMAP command ID: Invalid arguments.");
    return;
  }
  put("* ID (\"name\" \"pillarbox\")\r\n");
  tagged(tag, "OK", "ID completed.");
}

static int is(char const *word)
{
  return imap_ieq(cmd.name, cmd.namelen, word);
}

/* The commands of the authenticated and selected states. */
static int after_login(void)
{
  static char const *const names[] = {
    "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST",
    "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
    "MOVE", "UID", "IDLE", "NAMESPACE", "ENABLE", "UNSELECT", "GETQUOTA", "GETQUOTAROOT",
    "SETQUOTA", "XLIST", 0};
  unsigned int i;
  for (i = 0; names[i]; i++)
    if (is(names[i])) return 1;
  return 0;
}

static void dispatch(char const *tag)
{
  if (is("CAPABILITY")) {
    put("* CAPABILITY ");
    put(imapserv_capabilities(capflags()));
    put("\r\n");
    tagged(tag, "OK", "Pre-login capabilities listed, post-login capabilities have more.");
  } else if (is("NOOP")) tagged(tag, "OK", "NOOP completed.");
  else if (is("LOGOUT")) {
    put("* BYE Logging out\r\n");
    tagged(tag, "OK", "Logout completed.");
    bye(0);
  } else if (is("STARTTLS")) do_starttls(tag);
  else if (is("LOGIN")) do_login(tag);
  else if (is("AUTHENTICATE")) do_authenticate(tag);
  else if (is("ID")) do_id(tag);
  else if (after_login()) refuse(tag, "BAD", "Please log in first.");
  else refuse(tag, "BAD", "Error in IMAP command received by server: Unknown command.");
}

/* The per-address connection cap (control/imap-peermax, default 20: a mail client opens
 * several connections, and an office may be one address; 0: none), counted apart from SMTP's
 * and POP3's in MAILROOT/run/slots/login. The slot is held until the session ends. */
static void take_slot(void)
{
  unsigned long max = control_uint("imap-peermax", 20);
  int r;
  if (!max || !cfg->ip || !*cfg->ip) return;
  if (max > 100000) max = 100000;
  r = connlimit_take(&slot, "login", cfg->ip, (unsigned int)max, ipkey_v6prefix(), 0);
  if (r < 0) strerr_warnwu1sys("take a connection slot (running without the per-address cap)");
  if (!r) {
    strerr_warni2x("too many connections from ", cfg->ip);
    put("* BYE [UNAVAILABLE] Too many connections from your address, try later.\r\n");
    bye(0);
  }
}

/* The tag of a command that could not be read whole, for its reply ("*" when it has none). */
static char const *tag_of(char const *s, size_t len)
{
  size_t i = 0;
  while (i < len && i < IMAP_TAG_MAX && (unsigned char)s[i] > 0x20 &&
         (unsigned char)s[i] < 0x7f && !strchr("(){%*\"\\+", s[i]))
    i++;
  if (!i || i >= len || s[i] != ' ') return "*";
  memcpy(tagbuf, s, i);
  tagbuf[i] = 0;
  return tagbuf;
}

void imapserv_run(imapserv_cfg const *c)
{
  struct sigaction sa;
  cfg = c;
  in_tls = !!getenv("SSL_PROTOCOL");
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = &on_alarm;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGALRM, &sa, 0) < 0) strerr_diefu1sys(111, "catch SIGALRM");
  if (!imapio_init(0, 1, cfg->timeout)) strerr_diefu1sys(111, "set up the session fds");
  imapio_setlimits(IMAPSERV_CMD_MAX, IMAPSERV_LITERAL_MAX);
  deadline = time(0) + (time_t)cfg->timeout;
  arm();
  take_slot();
  put("* OK [CAPABILITY ");
  put(imapserv_capabilities(capflags()));
  put("] ");
  put(cfg->me);
  put(" IMAP server ready.\r\n");
  for (;;) {
    int r = imapio_readcmd(&cmdbuf, &cmd, 0);
    switch (r) {
      case 1: break;
      case IMAPIO_TIMEOUT: put("* BYE Login timeout, disconnecting.\r\n"); bye(99);
      case IMAPIO_TOOLONG:
        refuse(tag_of(cmdbuf.s, cmdbuf.len), "BAD", "Error in IMAP command: Too long.");
        continue;
      case IMAPIO_TOOBIG:
        refuse(tag_of(cmdbuf.s, cmdbuf.len), "NO", "[TOOBIG] Literal too big before login.");
        continue;
      case IMAPIO_BADLIT:
        refuse(tag_of(cmdbuf.s, cmdbuf.len), "BAD", "Error in IMAP command: Invalid literal.");
        continue;
      case IMAPIO_FATAL:
        put("* BYE [TOOBIG] Literal too big before login.\r\n");
        bye(0);
      case IMAPIO_EOF: bye(0);
      /* the client went away (a reset, or a write to a closed connection): the session is
       * over, not the program (a pool worker takes its next connection) */
      case IMAPIO_ERR: leave(errno == EPIPE || errno == ECONNRESET ? 0 : 111);
      default: leave(111);
    }
    cmd.nspool = 0;
    r = imap_parse(cmdbuf.s, cmdbuf.len, &cmd);
    if (r == IMAP_ENOTAG) {
      refuse("*", "BAD", "Error in IMAP command received by server.");
      continue;
    }
    memcpy(tagbuf, cmd.tag, cmd.taglen);
    tagbuf[cmd.taglen] = 0;
    if (r != IMAP_OK) refuse(tagbuf, "BAD", "Error in IMAP command: Invalid arguments.");
    else dispatch(tagbuf);
    if (cmdbuf.len) byte_zzero(cmdbuf.s, cmdbuf.len); /* a password may have been there */
  }
}

void imapserv_keepalive(sigjmp_buf *j)
{
  jump = j;
}

void imapserv_forget(void)
{
  alarm(0);
  in_tls = 0;
  bad_commands = fails = 0;
  if (cmdbuf.s) byte_zzero(cmdbuf.s, cmdbuf.a);
  cmdbuf.len = 0;
  memset(&cmd, 0, sizeof cmd);
  memset(tagbuf, 0, sizeof tagbuf);
  connlimit_release(&slot);
  imapio_forget();
  ucspitls_reset();
  while (waitpid(-1, 0, WNOHANG) > 0) ;
}
