/* pop3-serve: the POP3 AUTHORIZATION state, for one connection (UCSPI).
 *
 * Talks to the network before login: greeting, CAPA, STLS (UCSPI-TLS), USER/PASS, AUTH PLAIN,
 * QUIT. A login runs PROG... (default: auth-check pop3-maildir) as a child with the
 * credentials on fd 3 (checkpassword) and the session on fd 0/1; the post-login program tells
 * us it runs by writing one byte on $POP3_NOTIFYFD, and from then on it answers the client
 * while we wait for it. This process never opens a mailbox; the mailbox process never saw the
 * network before the login.
 *
 * As a worker of tcp-pool (lib/tcppool) it serves one connection after another: once a login
 * runs its session it does not wait for it but goes back to accept(); its login program
 * (login-handoff) then logs the logout and holds the per-address slot (checkpw.h). Nothing of
 * one connection reaches the next (forget()).
 */
#include <errno.h>
#include <setjmp.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/gccattributes.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>
#include "authfail.h"
#include "checkpw.h"
#include "connlimit.h"
#include "control.h"
#include "ipkey.h"
#include "pop3.h"
#include "pop3io.h"
#include "sasl.h"
#include "saslserv.h"
#include "spawn.h"
#include "tcppool.h"
#include "timedio.h"
#include "ucspitls.h"

char const *PROG = "pop3-serve";
#define USAGE "pop3-serve [-t timeout] [-d faildelay] [prog...]"

#define FAILS_PER_CONNECTION 3 /* failed logins before we hang up */
#define BAD_COMMANDS_MAX 20    /* refused commands before login before we hang up (as SMTP) */
#define AUTH_WAIT 30           /* seconds auth-check may take to decide */

static unsigned int timeout = 600;
static unsigned int faildelay = 2;
static int in_tls;
static int allow_plain;   /* plaintext login explicitly allowed on loopback */
static char const *ip;    /* $TCPREMOTEIP */
static unsigned int fails;
static unsigned int bad_commands;
static char user[POP3_ARG_MAX + 1];
static size_t userlen;
static int haveuser;
static char const *const *progargv;
static connlimit slot = CONNLIMIT_ZERO;
static int pooled;        /* a tcp-pool worker: a session's end goes back to accept() */
static sigjmp_buf next;

static void leave(int) gccattr_noreturn;
static void die_io(void) gccattr_noreturn;
static void bye(int) gccattr_noreturn;

/* Every exit: the connection slot is given back (its file removed) first. A pool worker
 * whose session ended (0) or timed out (99) takes the next connection instead. */
static void leave(int code)
{
  connlimit_release(&slot);
  if (pooled && (code == 0 || code == 99)) siglongjmp(next, 1);
  _exit(code);
}

static void die_io(void)
{
  leave(errno == ETIMEDOUT ? 99 : 0);
}

static void put(char const *s)
{
  if (!pop3io_puts(s)) die_io();
}

static void bye(int code)
{
  pop3io_flush();
  leave(code);
}

static int loopback(char const *a)
{
  if (!a) return 0;
  return !strncmp(a, "127.", 4) || !strcmp(a, "::1") || !strncmp(a, "::ffff:127.", 11);
}

/* Login commands are accepted inside TLS, or in plaintext on loopback when allowed. */
static int login_allowed(void)
{
  return in_tls || (allow_plain && loopback(ip));
}

static void capa(void)
{
  put("+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
      "PIPELINING\r\n");
  if (!in_tls && ucspitls_available()) put("STLS\r\n");
  if (login_allowed()) put("USER\r\nSASL " SASLSERV_MECHS "\r\n");
  put("IMPLEMENTATION pillarbox\r\n.\r\n");
}

/* A refused command before login: answered, and counted; too many end the connection (a
 * client that is not speaking POP3, or probing). */
static void bad(char const *reply)
{
  put(reply);
  if (++bad_commands >= BAD_COMMANDS_MAX) {
    put("-ERR too many bad commands, closing\r\n");
    strerr_warni2x("too many bad commands before login from ", ip ? ip : "unknown");
    bye(0);
  }
}

/* Counts a login attempt before its password is checked (lib/authfail), so that parallel
 * guesses from one address all count and none is checked past the limit. Returns only when the
 * check may go on. */
static void attempt(void)
{
  int r = authfail_attempt(ip);
  if (r < 0) strerr_warnwu1sys("record a login attempt");
  if (!r) {
    put("-ERR [AUTH] too many failed logins from your address, try later\r\n");
    bye(0);
  }
}

/* The attempt was not a wrong password (a good one, or no decision): take it back. */
static void forgive(void)
{
  if (authfail_forgive(ip) < 0) strerr_warnwu1sys("record a login that did not fail");
}

/* A failed login (already counted by attempt()). */
static void failed(char const *reply, char const *u, size_t ulen)
{
  int r;
  strerr_warni4x("failed login for ", checkpw_logname(u, ulen), " from ", ip ? ip : "unknown");
  fails++;
  if (faildelay) sleep(faildelay);
  put(reply);
  r = authfail_blocked(ip);
  if (r < 0) strerr_warnwu1sys("read the failed-login table");
  if (r == 1 || fails >= FAILS_PER_CONNECTION) {
    put("-ERR [AUTH] too many failed logins, closing\r\n");
    bye(0);
  }
}

/* Runs the login. Returns only when it failed (the reply is given). */
static void login(char const *u, size_t ulen, char const *pw, size_t pwlen)
{
  char creds[2 * SASL_FIELD_MAX + 8];
  size_t credlen;
  int credfd, notifyfd, code, r;
  pid_t pid;
  haveuser = 0;
  attempt();
  credlen = sasl_checkpassword_input(creds, sizeof creds, u, ulen, pw, pwlen);
  if (!credlen) {
    failed("-ERR [AUTH] invalid user name or password\r\n", u, ulen);
    return;
  }
  if (!pop3io_flush()) die_io();
  {
    /* The post-login program: the credentials on fd 3, the notification pipe on fd 4
     * (POP3_NOTIFYFD), the pipelined rest of the input in POP3_INPUT, hex-encoded so that
     * every byte, a NUL too, crosses the exec. */
    static char input[sizeof "POP3_INPUT=" + 2 * POP3IO_IBUF];
    char const *mods[4] = {"POP3_NOTIFYFD=4", "POP3_INPUT"};
    char const *rest;
    if (pop3io_pending(&rest)) {
      memcpy(input, "POP3_INPUT=", 11);
      pop3io_pending_hex(input + 11);
      mods[1] = input;
    }
    checkpw_detach_mods(mods + 2, pooled, checkpw_logname(u, ulen), ip ? ip : "unknown",
                        slot.fd >= 0 ? slot.path : 0);
    pid = checkpw_start(progargv, mods, 4, &credfd, &notifyfd, pooled ? slot.fd : -1);
  }
  if (pid < 0) {
    memset(creds, 0, sizeof creds);
    forgive();
    put("-ERR [SYS/TEMP] unable to check the password, try later\r\n");
    return;
  }
  checkpw_send(credfd, creds, credlen);
  r = checkpw_wait_notify(notifyfd, AUTH_WAIT);
  if (r < 0) kill(pid, SIGKILL);
  if (r == 1) {
    strerr_warni4x("login ", checkpw_logname(u, ulen), " from ", ip ? ip : "unknown");
    forgive();
    if (pooled) { /* login-handoff waits, logs the logout and holds the slot: next client */
      fd_close(notifyfd);
      connlimit_pass(&slot);
      leave(0);
    }
    /* the session runs: wait as login-wait, which logs the logout (or in place, below) */
    checkpw_waiter_child(pid, slot.fd, slot.path, checkpw_logname(u, ulen), ip ? ip : "unknown");
  }
  code = checkpw_reap(pid, "auth-check");
  fd_close(notifyfd);
  if (r == 1) { /* the session took place */
    char fmt[UINT_FMT];
    fmt[uint_fmt(fmt, (unsigned int)code)] = 0;
    strerr_warni6x("logout ", checkpw_logname(u, ulen), " from ", ip ? ip : "unknown", " status ",
                   code == 256 ? "killed" : fmt);
    leave(code == 256 ? 111 : code);
  }
  if (code != 1) forgive();
  if (r < 0) {
    put("-ERR [SYS/TEMP] password check timed out, try later\r\n");
    return;
  }
  switch (code) {
    case 0: /* a post-login program that does not notify: it had the session */
      strerr_warni4x("login and logout ", checkpw_logname(u, ulen), " from ", ip ? ip : "unknown");
      leave(0);
    case 1: failed("-ERR [AUTH] invalid user name or password\r\n", u, ulen); return;
    case 2: put("-ERR [SYS/PERM] login misconfigured\r\n"); return;
    default: put("-ERR [SYS/TEMP] unable to check the password, try later\r\n"); return;
  }
}

static int ieq(char const *s, size_t len, char const *word)
{
  size_t i;
  if (len != strlen(word)) return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    if (c >= 'a' && c <= 'z') c = (char)(c - 32);
    if (c != word[i]) return 0;
  }
  return 1;
}

/* Sends a SASL challenge and reads the client's response line into *resp. Returns 1, or a
 * SASLSERV_E* error (the line too long). */
static int sasl_step(char const *challenge, char const **resp, size_t *resplen)
{
  char *line;
  size_t len;
  int r;
  put("+ ");
  put(challenge);
  put("\r\n");
  r = pop3io_getline(&line, &len, POP3IO_IBUF);
  if (r == POP3IO_TIMEOUT) bye(99);
  if (r != 1) bye(0);
  if (len > POP3IO_IBUF) return SASLSERV_ETOOLONG;
  if (len && line[len - 1] == '\n') len--;
  if (len && line[len - 1] == '\r') len--;
  *resp = line;
  *resplen = len;
  return 1;
}

static char const *sasl_reply(int r)
{
  switch (r) {
    case SASLSERV_ECANCEL: return "-ERR authentication cancelled\r\n";
    case SASLSERV_EBASE64: return "-ERR invalid base64 in the SASL response\r\n";
    case SASLSERV_ETOOLONG: return "-ERR authentication exchange too long\r\n";
    case SASLSERV_EMECH: return "-ERR unsupported authentication mechanism\r\n";
    case SASLSERV_ESYNTAX: return "-ERR syntax error\r\n";
    default: return "-ERR malformed SASL response\r\n";
  }
}

/* AUTH: the SASL dialogue is lib/saslserv's, as for SMTP and IMAP. */
static void auth(pop3_cmd const *c)
{
  saslserv s;
  char const *ch, *resp;
  size_t resplen;
  int r;
  if (!c->argc) {
    put("+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
    return;
  }
  if (!ieq(c->arg[0], c->arglen[0], "PLAIN") && !ieq(c->arg[0], c->arglen[0], "LOGIN")) {
    put(sasl_reply(SASLSERV_EMECH));
    return;
  }
  if (!login_allowed()) {
    put("-ERR [AUTH] authentication requires TLS: use STLS first\r\n");
    return;
  }
  /* the arguments are consecutive in the command line: "MECH [initial-response]" */
  r = saslserv_start(&s, c->arg[0],
                     (size_t)(c->arg[c->argc - 1] + c->arglen[c->argc - 1] - c->arg[0]), &ch);
  while (r == SASLSERV_CHALLENGE) {
    r = sasl_step(ch, &resp, &resplen);
    if (r == 1) r = saslserv_step(&s, resp, resplen, &ch);
  }
  if (r == SASLSERV_DONE) login(s.user, s.userlen, s.pass, s.passlen);
  else if (r == SASLSERV_EAUTHZ) {
    attempt();
    failed("-ERR [AUTH] not allowed to log in as someone else\r\n", s.user, s.userlen);
  } else
    put(sasl_reply(r));
  saslserv_wipe(&s);
}

/* The per-address connection cap (control/pop3-peermax, default 10; 0: none), counted apart
 * from SMTP's in MAILROOT/run/slots/pop3. */
static void take_slot(void)
{
  unsigned long max = control_uint("pop3-peermax", 10);
  int r;
  if (!max || !ip || !*ip) return;
  if (max > 100000) max = 100000;
  r = connlimit_take(&slot, "pop3", ip, (unsigned int)max, ipkey_v6prefix(), 0);
  if (r < 0) strerr_warnwu1sys("take a connection slot (running without the per-address cap)");
  if (!r) {
    strerr_warni2x("too many connections from ", ip);
    put("-ERR [SYS/TEMP] too many connections from your address, try later\r\n");
    bye(0);
  }
}

static void stls(void)
{
  if (in_tls) {
    put("-ERR already in TLS\r\n");
    return;
  }
  if (!ucspitls_available()) {
    put("-ERR STLS not available\r\n");
    return;
  }
  if (!ucspitls_ready(ucspitls_setup())) { /* the engine service is unreachable */
    put("-ERR [SYS/TEMP] TLS not available now\r\n");
    return;
  }
  put("+OK begin TLS negotiation\r\n");
  if (!pop3io_flush()) die_io();
  pop3io_discard(); /* whatever was pipelined in plaintext is dropped (RFC 2595 4) */
  if (!ucspitls_start_stdio()) strerr_diefu1sys(111, "start TLS");
  if (!pop3io_init(0, 1, timeout)) strerr_diefu1sys(111, "set up the TLS fds");
  in_tls = 1;
  haveuser = 0;
  userlen = 0;
}

/* Once per process: the options, the timeout, the login program. */
static void configure(int argc, char const *const *argv)
{
  static char const *const defargv[] = {"auth-check", "pop3-maildir", 0};
  static char const *defauth[3];
  char const *x;
  {
    subgetopt l = SUBGETOPT_ZERO;
    int opt;
    unsigned long u;
    int r = control_readuint("pop3-timeout", 600, &u);
    if (r == 0 || (r == 1 && (!u || u > 86400)))
      strerr_dief1x(100, "control/pop3-timeout must be a number of seconds (1..86400)");
    if (r == 1) timeout = (unsigned int)u;
    x = getenv("POP3_TIMEOUT");
    if (x && (!uint0_scan(x, &timeout) || !timeout))
      strerr_dief1x(100, "POP3_TIMEOUT must be a positive number of seconds");
    x = getenv("POP3_FAIL_DELAY");
    if (x && !uint0_scan(x, &faildelay))
      strerr_dief1x(100, "POP3_FAIL_DELAY must be a number of seconds");
    while ((opt = subgetopt_r(argc, argv, "t:d:", &l)) != -1) {
      switch (opt) {
        case 't':
          if (!uint0_scan(l.arg, &timeout) || !timeout) strerr_dieusage(100, USAGE);
          break;
        case 'd':
          if (!uint0_scan(l.arg, &faildelay)) strerr_dieusage(100, USAGE);
          break;
        default: strerr_dieusage(100, USAGE);
      }
    }
    argv += l.ind;
    argc -= l.ind;
  }
  if (argc) progargv = argv;
  else {
    x = getenv("AUTH_CHECK");
    if (x && *x) {
      defauth[0] = x;
      defauth[1] = "pop3-maildir";
      defauth[2] = 0;
      progargv = defauth;
    } else
      progargv = defargv;
  }
  {
    char tbuf[UINT_FMT];
    tbuf[uint_fmt(tbuf, timeout)] = 0;
    if (setenv("POP3_TIMEOUT", tbuf, 1) < 0) strerr_diefu1sys(111, "setenv");
  }
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) strerr_diefu1sys(111, "ignore SIGPIPE");
}

/* One connection, on fds 0 and 1 with its UCSPI environment; ends by leave(). */
static void session(void) gccattr_noreturn;
static void session(void)
{
  static stralloc me = STRALLOC_ZERO;
  char const *x = getenv("POP3_ALLOW_PLAINTEXT_AUTH");
  if (x) allow_plain = !strcmp(x, "1");
  else {
    stralloc sa = STRALLOC_ZERO;
    int r = control_readline(&sa, "pop3-allow-plaintext");
    if (r < 0) strerr_diefu1sys(111, "read control/pop3-allow-plaintext");
    allow_plain = r == 1 && sa.len == 1 && sa.s[0] == '1';
    stralloc_free(&sa);
  }
  /* implicit TLS (pop3s) through the engine service: before a byte is said (ucspitls.h) */
  if (!ucspitls_implicit_session(pooled)) leave(0);
  ip = getenv("TCPREMOTEIP");
  in_tls = !!getenv("SSL_PROTOCOL");
  me.len = 0;
  if (control_readline(&me, "me") != 1 || !stralloc_0(&me)) {
    me.len = 0;
    if (!stralloc_cats(&me, "pillarbox") || !stralloc_0(&me)) strerr_diefu1sys(111, "allocate");
  }
  if (!pop3io_init(0, 1, timeout)) strerr_diefu1sys(111, "set up the session fds");
  take_slot();
  put("+OK ");
  put(me.s);
  put(" POP3 server ready\r\n");
  for (;;) {
    char *line;
    size_t len;
    pop3_cmd c;
    int r = pop3io_getcmd(&line, &len);
    if (r == POP3IO_TIMEOUT) leave(99);
    if (r != 1) leave(0);
    r = pop3_parse(line, len, &c);
    if (r < 0) {
      bad(pop3_parse_reply(r));
      continue;
    }
    switch (c.cmd) {
      case POP3_CAPA: capa(); break;
      case POP3_QUIT: put("+OK bye\r\n"); bye(0);
      case POP3_STLS: stls(); break;
      case POP3_USER:
        if (!login_allowed()) {
          bad("-ERR [AUTH] plaintext login disallowed without TLS: use STLS first\r\n");
          break;
        }
        memcpy(user, c.arg[0], c.arglen[0]);
        userlen = c.arglen[0];
        haveuser = 1;
        put("+OK send PASS\r\n");
        break;
      case POP3_PASS:
        if (!login_allowed()) {
          bad("-ERR [AUTH] plaintext login disallowed without TLS: use STLS first\r\n");
          break;
        }
        if (!haveuser) {
          bad("-ERR USER first\r\n");
          break;
        }
        login(user, userlen, c.arg[0], c.arglen[0]);
        break;
      case POP3_AUTH: auth(&c); break;
      case POP3_APOP: bad("-ERR APOP not supported\r\n"); break;
      default: bad("-ERR not logged in\r\n"); break;
    }
  }
}

/* Between two connections of a pool worker: nothing of the last one is left (the failed
 * logins, TLS, USER, the buffers, the slot, an engine connection left open; the
 * environment is tcppool's, rebuilt); the login programs of sessions that ended are reaped. */
static void forget(void)
{
  in_tls = 0;
  ip = 0;
  fails = bad_commands = 0;
  haveuser = 0;
  userlen = 0;
  memset(user, 0, sizeof user);
  connlimit_release(&slot);
  pop3io_forget();
  ucspitls_reset();
  while (waitpid(-1, 0, WNOHANG) > 0) ;
  tcppool_done();
}

int main(int argc, char const *const *argv)
{
  configure(argc, argv);
  if (!tcppool_worker()) session();
  pooled = 1;
  while (tcppool_next()) {
    if (!sigsetjmp(next, 0)) session();
    forget();
  }
  return 0;
}
