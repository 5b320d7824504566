/* imap-serve: the IMAP not-authenticated state, for one connection (UCSPI).
 *
 * Greeting, CAPABILITY, STARTTLS (UCSPI-TLS), LOGIN, AUTHENTICATE PLAIN/LOGIN (SASL-IR), ID,
 * NOOP, LOGOUT (lib/imapserv). A login runs PROG... (default: auth-check imap-maildir; in the
 * services: login-handoff imap) with the credentials on fd 3 and the login's tag in IMAP_TAG;
 * the session program answers that tag and serves the mailbox. This process never opens a
 * mailbox; the mailbox process never saw the network before the login.
 *
 * As a worker of tcp-pool (lib/tcppool) it serves one connection after another: a login that
 * runs its session goes back to accept() (login-handoff then logs the logout and holds the
 * per-address slot), and nothing of one connection reaches the next (imapserv_forget()).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include "control.h"
#include "imapserv.h"
#include "tcppool.h"
#include "ucspitls.h"

char const *PROG = "imap-serve";
#define USAGE "imap-serve [-t timeout] [-d faildelay] [prog...]"

static char const *const defargv[] = {"auth-check", "imap-maildir", 0};
static imapserv_cfg cfg = {.timeout = 180, .faildelay = 2, .progargv = defargv};
static int pooled;        /* a tcp-pool worker: a session's end goes back to accept() */
static sigjmp_buf next;

/* One connection, on fds 0 and 1 with its UCSPI environment: what it may change is read
 * again for each (control/, the rules' variables). */
static void session(void) gccattr_noreturn;
static void session(void)
{
  static stralloc me = STRALLOC_ZERO, sa = STRALLOC_ZERO;
  char const *x;
  int r;
  /* plaintext login: the environment decides, else control/imap-allow-plaintext (as POP3) */
  x = getenv("IMAP_ALLOW_PLAINTEXT_AUTH");
  if (x) cfg.allow_plain = !strcmp(x, "1");
  else {
    sa.len = 0;
    r = control_readline(&sa, "imap-allow-plaintext");
    if (r < 0) strerr_diefu1sys(111, "read control/imap-allow-plaintext");
    cfg.allow_plain = r == 1 && sa.len == 1 && sa.s[0] == '1';
  }
  /* implicit TLS (imaps) through the engine service: before a byte is said (ucspitls.h) */
  if (!ucspitls_implicit_session(pooled)) siglongjmp(next, 1);
  cfg.ip = getenv("TCPREMOTEIP");
  me.len = 0;
  if (control_readline(&me, "me") != 1 || !stralloc_0(&me)) {
    me.len = 0;
    if (!stralloc_cats(&me, "pillarbox") || !stralloc_0(&me)) strerr_diefu1sys(111, "allocate");
  }
  cfg.me = me.s;
  imapserv_run(&cfg);
}

int main(int argc, char const *const *argv)
{
  static char const *defauth[3];
  subgetopt l = SUBGETOPT_ZERO;
  char const *x;
  unsigned long u;
  int opt, r;

  r = control_readuint("imap-login-timeout", 180, &u);
  if (r == 0 || (r == 1 && (!u || u > 86400)))
    strerr_dief1x(100, "control/imap-login-timeout must be a number of seconds (1..86400)");
  if (r == 1) cfg.timeout = (unsigned int)u;
  x = getenv("IMAP_LOGIN_TIMEOUT");
  if (x && (!uint0_scan(x, &cfg.timeout) || !cfg.timeout || cfg.timeout > 86400))
    strerr_dief1x(100, "IMAP_LOGIN_TIMEOUT must be a number of seconds (1..86400)");
  x = getenv("IMAP_FAIL_DELAY");
  if (x && !uint0_scan(x, &cfg.faildelay))
    strerr_dief1x(100, "IMAP_FAIL_DELAY must be a number of seconds");
  while ((opt = subgetopt_r(argc, argv, "t:d:", &l)) != -1) {
    switch (opt) {
      case 't':
        if (!uint0_scan(l.arg, &cfg.timeout) || !cfg.timeout || cfg.timeout > 86400)
          strerr_dieusage(100, USAGE);
        break;
      case 'd':
        if (!uint0_scan(l.arg, &cfg.faildelay)) strerr_dieusage(100, USAGE);
        break;
      default: strerr_dieusage(100, USAGE);
    }
  }
  argv += l.ind;
  argc -= l.ind;
  if (argc) cfg.progargv = argv;
  else if ((x = getenv("AUTH_CHECK")) && *x) {
    defauth[0] = x;
    defauth[1] = "imap-maildir";
    defauth[2] = 0;
    cfg.progargv = defauth;
  }
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) strerr_diefu1sys(111, "ignore SIGPIPE");
  if (!tcppool_worker()) session();
  pooled = 1;
  imapserv_keepalive(&next);
  while (tcppool_next()) {
    if (!sigsetjmp(next, 0)) session();
    imapserv_forget();
    tcppool_done();
  }
  return 0;
}
