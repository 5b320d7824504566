/* tlsengine: see tlsengine.h */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bearssl.h>
#include <skalibs/buffer.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/posixplz.h>
#include <skalibs/selfpipe.h>
#include <skalibs/setgroups.h>
#include <skalibs/sig.h>
#include <skalibs/socket.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "fdpass.h"
#include "spawn.h"
#include "tlsengine.h"
#include "tlsserver.h"

extern char const *PROG;

static br_ssl_server_context cc;
/* Full duplex buffers, full size: 16 KB records both ways (BearSSL 0.6 garbled outgoing
 * data in tests with a smaller output part, and deadlocked in half-duplex mode under
 * simultaneous traffic, so neither is offered). */
static unsigned char iobuf[BR_SSL_BUFSIZE_BIDI];

/* The facts go to notif once the handshake is done; then notif is closed. */
static int onhs(br_ssl_server_context *c, void *p)
{
  int *notif = p;
  if (*notif >= 0) {
    char facts[TLSSERVER_FACTS_MAX];
    size_t n = tlsserver_facts(c, facts, sizeof facts), w = 0;
    while (w < n) {
      ssize_t k = write(*notif, facts + w, n - w);
      if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        break; /* the application went away; the relay will notice */
      }
      w += (size_t)k;
    }
    fd_close(*notif);
    *notif = -1;
  }
  return 1;
}

void tlsengine_relay(int netr, int netw, int appr, int appw, int notif, unsigned int hsms)
{
  tain deadline;
  int r;
  if (!tlsserver_init(&cc, iobuf, sizeof iobuf)) strerr_dief1x(111, tlsserver_error());
  tain_now_set_stopwatch_g();
  if (hsms) tain_from_millisecs(&deadline, (int)hsms);
  else deadline = tain_infinite_relative;
  tain_add_g(&deadline, &deadline);
  r = tlsserver_run(&cc, netr, netw, appr, appw, &deadline, &onhs, &notif);
  if (r == 1) {
    char const *ip = getenv("TCPREMOTEIP");
    strerr_warnw4x(tlsserver_error(), " (peer ", ip ? ip : "unknown", ")");
    _exit(1);
  }
  if (r == 2) strerr_diefu1sys(111, "relay the TLS connection");
  fd_shutdown(netw, 1); /* void in skalibs: the peer may have gone already */
  _exit(0);
}

/* ---- the service ---- */

struct child {
  tlsengine_cfg const *cfg;
  int lfd, conn;
};

/* One engine: drop, take the hand-over, relay. Nothing is read before the drop. */
static int engine_child(void *p)
{
  struct child const *c = p;
  int fds[3], w;
  char y;
  tain deadline;
  PROG = "tls-engine (engine)";
  selfpipe_finish();
  fd_close(c->lfd);
  if (c->cfg->drop) {
    gid_t g = c->cfg->gid;
    if (skalibs_setgroups(1, &g) < 0 || setgid(c->cfg->gid) < 0)
      strerr_diefu1sys(111, "set the group ids of the TLS engine");
    if (setuid(c->cfg->uid) < 0) strerr_diefu1sys(111, "set the user id of the TLS engine");
  }
  if (sig_ignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  tain_now_set_stopwatch_g();
  tain_addsec_g(&deadline, TLSENGINE_HANDOVER_TIMEOUT);
  if (!fdpass_recv(c->conn, &y, fds, 3, &deadline))
    strerr_diefu1sys(111, "receive the connection from the protocol program");
  if (y != 'Y') strerr_dief1x(100, "unknown hand-over command");
  /* the relay closes its two application fds apart: give it two */
  w = dup(fds[2]);
  if (w < 0) strerr_diefu1sys(111, "dup");
  tlsengine_relay(fds[0], fds[1], fds[2], w, c->conn, c->cfg->hsms);
}

static int allowed(tlsengine_cfg const *cfg, int fd, uid_t *who)
{
  uid_t u;
  gid_t g;
  unsigned int i;
  if (getpeereid(fd, &u, &g) < 0) return 0;
  *who = u;
  if (!cfg->nallow || !u || u == getuid()) return 1;
  for (i = 0; i < cfg->nallow; i++)
    if (cfg->allow[i] == u) return 1;
  return 0;
}

static void refuse(int fd, char const *why, uid_t u)
{
  char fmt[UINT_FMT];
  fmt[uint_fmt(fmt, (unsigned int)u)] = 0;
  strerr_warnw4x("connection refused (uid ", fmt, "): ", why);
  fd_close(fd);
}

/* A connection: checks, reloads the keys when a file changed, forks its engine. 1 if an
 * engine was started. */
static int take(tlsengine_cfg const *cfg, int lfd, int fd, int *usable)
{
  struct child c = {cfg, lfd, fd};
  uid_t who = (uid_t)-1;
  if (!allowed(cfg, fd, &who)) {
    refuse(fd, "uid not allowed", who);
    return 0;
  }
  if (tlsserver_changed()) {
    *usable = tlsserver_load();
    if (*usable) strerr_warni1x("certificate or key changed: keypairs loaded again");
    else strerr_warnw2x("keypairs changed but unusable, STARTTLS refused until fixed: ",
                        tlsserver_error());
  }
  if (!*usable) {
    refuse(fd, "no usable certificate", who);
    return 0;
  }
  if (spawn_call(&engine_child, &c) < 0) {
    strerr_warnwu1sys("fork an engine");
    fd_close(fd);
    return 0;
  }
  fd_close(fd);
  return 1;
}

static int listen_on(char const *path)
{
  int lfd = ipc_stream_nbcoe();
  mode_t m;
  if (lfd < 0) strerr_diefu1sys(111, "create a socket");
  if (unlink(path) < 0 && errno != ENOENT) strerr_diefu2sys(111, "remove ", path);
  /* who may connect is the directory's business: the socket itself is open to all */
  m = umask(0);
  if (ipc_bind(lfd, path) < 0) strerr_diefu2sys(111, "bind to ", path);
  umask(m);
  if (ipc_listen(lfd, 128) < 0) strerr_diefu2sys(111, "listen on ", path);
  return lfd;
}

int tlsengine_serve(tlsengine_cfg const *cfg0)
{
  unsigned int running = 0;
  int usable = 1, sfd, lfd;
  sigset_t set;
  tlsengine_cfg c = *cfg0, *cfg = &c; /* notif is used once */
  /* a notification fd that is not open would be reused by the self-pipe below, closed by the
   * readiness write, and the loop would spin on a dead fd */
  if (cfg->notif >= 0 && fcntl(cfg->notif, F_GETFD) < 0)
    strerr_dief1x(100, "the notification fd is not open");
  sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "create the self-pipe");
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  if (sig_ignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  lfd = listen_on(cfg->path);
  strerr_warni2x("listening on ", cfg->path);
  if (cfg->notif >= 0) {
    fd_write(cfg->notif, "\n", 1);
    fd_close(cfg->notif);
    c.notif = -1;
  }
  tain_now_set_stopwatch_g();
  for (;;) {
    iopause_fd x[2] = {{.fd = sfd, .events = IOPAUSE_READ}, {.fd = lfd, .events = IOPAUSE_READ}};
    int r = iopause_g(x, running < cfg->maxconn ? 2 : 1, &tain_infinite);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "iopause");
    }
    if ((x[0].revents & IOPAUSE_EXCEPT) && !(x[0].revents & IOPAUSE_READ))
      strerr_dief1x(111, "the self-pipe is gone");
    if (x[0].revents & IOPAUSE_READ) {
      int sig;
      while ((sig = selfpipe_read()) > 0) {
        if (sig == SIGTERM) {
          unlink(cfg->path);
          return 0;
        }
        for (;;) {
          int st;
          pid_t p = waitpid(-1, &st, WNOHANG);
          if (p <= 0) break;
          if (running) running--;
        }
      }
      if (sig < 0) strerr_diefu1sys(111, "read the self-pipe");
    }
    if (running < cfg->maxconn && (x[1].revents & IOPAUSE_READ)) {
      int fd = ipc_accept_nbcoe(lfd, 0, 0, 0);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          strerr_warnwu1sys("accept");
        continue;
      }
      running += (unsigned int)take(cfg, lfd, fd, &usable);
    }
  }
}
