/* tls-serve: TLS for any UCSPI server program, on BearSSL.
 *
 * Implicit mode (default): handshake first, then run prog with its stdin and stdout on pipes
 * that are relayed to the TLS connection, and SSL_PROTOCOL, SSL_CIPHER, SSL_TLS_SNI_SERVERNAME
 * in its environment. STARTTLS mode (-S): run prog at once on the plaintext connection with
 * SSLCTLFD, SSLREADFD, SSLWRITEFD set (UCSPI-TLS, as s6-networking's s6-ucspitlsd); when prog
 * writes 'Y' (or 'y') on SSLCTLFD, do the handshake and relay.
 *
 * Two processes: the application (this process, which execs prog) and the TLS engine (a
 * child, the only one that keeps the private keys). Every keypair is loaded first (as root when
 * started as root), then the engine is forked and at once drops to TLS_UID/TLS_GID, before it
 * reads a byte from the client, and the application drops to -u/-g/-G before it runs prog.
 * See doc/tls-serve.8.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/exec.h>
#include <skalibs/setgroups.h>
#include <skalibs/sgetopt.h>
#include <skalibs/sig.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "spawn.h"
#include "tlsengine.h"
#include "tlsserver.h"

#define USAGE \
  "tls-serve [ -S ] [ -K timeout_ms ] [ -Z ] [ -u uid -g gid [ -G gid,gid... ] ] prog...\n" \
  "       tls-serve -C"
#define NGROUPS_MAX_PB 64
char const *PROG = "tls-serve";

extern char **environ;

static unsigned int kimeout = 30000; /* -K: milliseconds for the handshake */

/* Removes the engine's variables from the environment (the application must not know where
 * the key is). */
static void clean_env(void)
{
  static char const *const fixed[] = {"TLS_CERTFILE", "TLS_KEYFILE", "CERTFILE", "KEYFILE",
                                      "TLS_UID", "TLS_GID", 0};
  unsigned int i;
  int again = 1;
  for (i = 0; fixed[i]; i++) unsetenv(fixed[i]);
  while (again) {
    char **e;
    again = 0;
    for (e = environ; *e; e++) {
      if (!strncmp(*e, "CERTFILE:", 9) || !strncmp(*e, "KEYFILE:", 8)) {
        char name[300];
        char const *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        if (n >= sizeof name) n = sizeof name - 1;
        memcpy(name, *e, n);
        name[n] = 0;
        if (unsetenv(name) < 0) strerr_diefu1sys(111, "unsetenv");
        again = 1;
        break;
      }
    }
  }
}

static void drop_to(char const *what, int hasgid, gid_t gid, size_t ngids, gid_t const *gids,
                    int hasuid, uid_t uid)
{
  if (hasgid) {
    gid_t one = gid;
    if ((ngids ? skalibs_setgroups(ngids, gids) : skalibs_setgroups(1, &one)) < 0 ||
        setgid(gid) < 0)
      strerr_diefu2sys(111, "set the group ids of the ", what);
  }
  if (hasuid && setuid(uid) < 0) strerr_diefu2sys(111, "set the user id of the ", what);
}

/* The engine drops root at once, before it reads anything, if TLS_UID / TLS_GID say so (as
 * s6-tlsd-io's variables). */
static void engine_drop(void)
{
  char const *u = getenv("TLS_UID"), *g = getenv("TLS_GID");
  unsigned int uu = 0, gg = 0;
  int hu = u && *u, hg = g && *g;
  if ((hu && !uint0_scan(u, &uu)) || (hg && !uint0_scan(g, &gg)) || hu != hg)
    strerr_dief1x(100, "TLS_UID and TLS_GID must be numbers, and both set or both unset");
  drop_to("TLS engine", hg, (gid_t)gg, 0, 0, hu, (uid_t)uu);
}

/* "G1,G2,..." into gids; returns the count, or -1 on junk. */
static int scan_gids(char const *s, gid_t *gids, size_t max)
{
  size_t n = 0;
  if (!*s) return 0;
  for (;;) {
    unsigned int g;
    size_t k = uint_scan(s, &g);
    if (!k || n >= max) return -1;
    gids[n++] = (gid_t)g;
    s += k;
    if (!*s) return (int)n;
    if (*s++ != ',') return -1;
  }
}

static void put_facts(char const *s, size_t len)
{
  size_t i = 0;
  while (i < len && s[i]) {
    size_t n = strlen(s + i);
    char const *eq = memchr(s + i, '=', n);
    char name[64];
    size_t nl = eq ? (size_t)(eq - (s + i)) : n;
    if (nl < sizeof name && nl > 4 && !memcmp(s + i, "SSL_", 4)) {
      memcpy(name, s + i, nl);
      name[nl] = 0;
      if (eq ? setenv(name, eq + 1, 1) < 0 : unsetenv(name) < 0)
        strerr_diefu1sys(111, "set the SSL_* environment");
    }
    i += n + 1;
  }
}

/* The engine's side of a connection: the pipes to the application, and the control channel
 * (implicit TLS: the pipe that takes the handshake's facts; STARTTLS: the UCSPI-TLS socket). */
struct engine_fds {
  int fromapp, toapp, ctl;
  int theirs[3]; /* the application's ends, closed in the engine */
  int starttls;
};

/* UCSPI-TLS: waits for the application's 'Y' (TLS, and the facts on the control socket) or 'y'
 * (TLS, no facts); returns where the facts go, or -1. Exits when the application ends first. */
static int wait_for_starttls(int ctl)
{
  char c;
  ssize_t k;
  do k = read(ctl, &c, 1);
  while (k < 0 && errno == EINTR);
  if (k < 0) strerr_diefu1sys(111, "read from the control socket");
  if (!k) _exit(0); /* the application ended without asking for TLS */
  if (c == 'y') {
    fd_close(ctl);
    return -1;
  }
  if (c != 'Y') strerr_dief1x(100, "unknown command on the control socket");
  if (shutdown(ctl, SHUT_RD) < 0) strerr_diefu1sys(111, "shut down the control socket");
  return ctl;
}

/* The TLS engine's process (a lib/spawn spawn_call child: it keeps the keys the application
 * wipes, so it cannot exec). */
static int engine_main(void *p)
{
  struct engine_fds const *e = p;
  unsigned int i;
  int notif = e->ctl;
  engine_drop();
  for (i = 0; i < 3; i++) fd_close(e->theirs[i]);
  PROG = "tls-serve (engine)";
  if (e->starttls) notif = wait_for_starttls(e->ctl);
  tlsengine_relay(0, 1, e->fromapp, e->toapp, notif, kimeout);
}

/* Implicit TLS: waits for the handshake (its deadline is the engine's), puts its facts in the
 * environment and the engine's pipes on fds 0 and 1. */
static void after_handshake(int sync, int fromeng, int toeng)
{
  char facts[TLSSERVER_FACTS_MAX];
  size_t len = 0;
  for (;;) {
    ssize_t k;
    if (len >= sizeof facts) strerr_dief1x(111, "too much data from the TLS engine");
    k = read(sync, facts + len, sizeof facts - len);
    if (k < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "read from the TLS engine");
    }
    if (!k) break;
    len += (size_t)k;
  }
  fd_close(sync);
  if (len < 2 || facts[len - 1] || facts[len - 2]) _exit(1); /* handshake failed: logged */
  put_facts(facts, len);
  if (fd_move(0, fromeng) < 0 || fd_move(1, toeng) < 0) strerr_diefu1sys(111, "move fds");
}

/* STARTTLS: the UCSPI-TLS variables naming the application's ends. */
static void ucspi_env(int ctl, int fromeng, int toeng)
{
  char fmt[UINT_FMT];
  fmt[uint_fmt(fmt, (unsigned int)ctl)] = 0;
  if (setenv("SSLCTLFD", fmt, 1) < 0) strerr_diefu1sys(111, "setenv");
  fmt[uint_fmt(fmt, (unsigned int)fromeng)] = 0;
  if (setenv("SSLREADFD", fmt, 1) < 0) strerr_diefu1sys(111, "setenv");
  fmt[uint_fmt(fmt, (unsigned int)toeng)] = 0;
  if (setenv("SSLWRITEFD", fmt, 1) < 0) strerr_diefu1sys(111, "setenv");
}

int main(int argc, char const *const *argv)
{
  int starttls = 0, keepenv = 0, hasuid = 0, hasgid = 0, check = 0, ng = 0;
  unsigned int uid = 0, gid = 0;
  gid_t gids[NGROUPS_MAX_PB];
  subgetopt l = SUBGETOPT_ZERO;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "SK:Zzu:g:G:C", &l);
    if (opt == -1) break;
    switch (opt) {
      case 'S': starttls = 1; break;
      case 'K':
        if (!uint0_scan(l.arg, &kimeout) || kimeout > 3600000) strerr_dieusage(100, USAGE);
        break;
      case 'Z': keepenv = 1; break;
      case 'z': keepenv = 0; break;
      case 'u': if (!uint0_scan(l.arg, &uid)) strerr_dieusage(100, USAGE); hasuid = 1; break;
      case 'g': if (!uint0_scan(l.arg, &gid)) strerr_dieusage(100, USAGE); hasgid = 1; break;
      case 'G':
        ng = scan_gids(l.arg, gids, NGROUPS_MAX_PB);
        if (ng < 0) strerr_dieusage(100, USAGE);
        break;
      case 'C': check = 1; break;
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if ((!argc && !check) || hasuid != hasgid || (ng && !hasgid)) strerr_dieusage(100, USAGE);
  if (sig_ignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");

  /* Every key and certificate, now, with the privileges we were started with (root). */
  if (!tlsserver_load()) strerr_dief2x(100, "no usable certificate: ", tlsserver_error());
  if (check) { /* -C: say what was loaded, then exit */
    char const *name, *err;
    unsigned int i;
    for (i = 1; tlsserver_pairs(&name, &err, i); i++)
      if (err)
        strerr_warnw4x("SNI keypair for ", name, " refused (its clients get the default): ", err);
    return 0;
  }

  {
    int a2e[2], e2a[2], ctl[2];
    struct engine_fds e;
    if (pipe(a2e) < 0 || pipe(e2a) < 0) strerr_diefu1sys(111, "pipe");
    if (starttls ? socketpair(AF_UNIX, SOCK_STREAM, 0, ctl) < 0 : pipe(ctl) < 0)
      strerr_diefu1sys(111, starttls ? "socketpair" : "pipe");
    e.fromapp = a2e[0];
    e.toapp = e2a[1];
    e.ctl = ctl[1];
    e.theirs[0] = a2e[1];
    e.theirs[1] = e2a[0];
    e.theirs[2] = ctl[0];
    e.starttls = starttls;
    if (spawn_call(&engine_main, &e) < 0) strerr_diefu1sys(111, "fork");
    tlsserver_wipe();
    drop_to("application", hasgid, (gid_t)gid, (size_t)ng, gids, hasuid, (uid_t)uid);
    fd_close(a2e[0]);
    fd_close(e2a[1]);
    fd_close(ctl[1]);
    if (starttls) ucspi_env(ctl[0], e2a[0], a2e[1]);
    else after_handshake(ctl[0], e2a[0], a2e[1]);
  }
  if (!keepenv) clean_env();
  xexec(argv);
}
