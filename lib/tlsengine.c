/* tlsengine: see tlsengine.h */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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
static int ready; /* cc set up already (a spare does it while it waits) */

/* The engine's context, set up (and its PRNG seeded) before a client byte is there. Only ever
 * in the engine's own process, after the fork: no two engines share a PRNG state (the ECDHE
 * keys come from it). */
static void engine_init(void)
{
  if (!ready && !tlsserver_init(&cc, iobuf, sizeof iobuf)) strerr_dief1x(111, tlsserver_error());
  ready = 1;
}

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
  engine_init();
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

/* An engine waiting for a connection (a spare): its pid and the service's end of the socket
 * the connection will come on. */
struct spare {
  pid_t pid;
  int ctl;
};

static struct spare spares[TLSENGINE_SPARES_MAX];
static unsigned int nspares;

struct child {
  tlsengine_cfg const *cfg;
  int lfd, conn;
  int other; /* the service's end of a spare's socket (the spare closes it), or -1 */
};

/* The comm name (ps, /proc/PID/stat) of an engine: "tls-engine-idle" while it waits for a
 * connection (from its birth), "tls-engine" once it has one. */
static void name_as(char const *name)
{
#ifdef PR_SET_NAME
  prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
#else
  (void)name;
#endif
}

/* In a new engine: closes what belongs to the service (the listener, the self-pipe, the other
 * spares' sockets) and drops to the engine's ids. Nothing has been read yet. */
static void engine_setup(struct child const *c)
{
  unsigned int i;
  PROG = "tls-engine (engine)";
  selfpipe_finish();
  fd_close(c->lfd);
  for (i = 0; i < nspares; i++) fd_close(spares[i].ctl);
  if (c->other >= 0) fd_close(c->other);
  if (c->cfg->drop) {
    gid_t g = c->cfg->gid;
    if (skalibs_setgroups(1, &g) < 0 || setgid(c->cfg->gid) < 0)
      strerr_diefu1sys(111, "set the group ids of the TLS engine");
    if (setuid(c->cfg->uid) < 0) strerr_diefu1sys(111, "set the user id of the TLS engine");
  }
  if (sig_ignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
}

/* The hand-over on conn, then the relay. */
static void engine_run(tlsengine_cfg const *cfg, int conn) __attribute__((noreturn));
static void engine_run(tlsengine_cfg const *cfg, int conn)
{
  int fds[3], w;
  char y;
  tain deadline;
  tain_now_set_stopwatch_g();
  tain_addsec_g(&deadline, TLSENGINE_HANDOVER_TIMEOUT);
  if (!fdpass_recv(conn, &y, fds, 3, &deadline))
    strerr_diefu1sys(111, "receive the connection from the protocol program");
  if (y != 'Y') strerr_dief1x(100, "unknown hand-over command");
  /* the relay closes its two application fds apart: give it two */
  w = dup(fds[2]);
  if (w < 0) strerr_diefu1sys(111, "dup");
  tlsengine_relay(fds[0], fds[1], fds[2], w, conn, cfg->hsms);
}

/* An engine forked for one connection (no spare was waiting). */
static int engine_child(void *p)
{
  struct child const *c = p;
  engine_setup(c);
  engine_run(c->cfg, c->conn);
}

/* A spare: dropped at once, then waits (without a time limit) for one connection from the
 * service on c->conn; EOF there (the service recycles it, or is gone) ends it quietly. */
static int spare_child(void *p)
{
  struct child const *c = p;
  int conn;
  char y;
  engine_setup(c);
  /* what does not depend on the client is done now, off the handshake's path: the context
   * and its PRNG (the record buffers are left untouched: 44 KB more per idle spare to save
   * a few page faults was not worth it) */
  engine_init();
  if (!fdpass_recv(c->conn, &y, &conn, 1, &tain_infinite)) {
    if (errno == EPIPE) _exit(0);
    strerr_diefu1sys(111, "receive a connection from the service");
  }
  fd_close(c->conn);
  name_as("tls-engine");
  engine_run(c->cfg, conn);
}

/* Forks one spare. 1 if it was started. */
static int spare_start(tlsengine_cfg const *cfg, int lfd)
{
  int sp[2];
  struct child c = {cfg, lfd, -1, -1};
  pid_t pid;
  if (nspares >= TLSENGINE_SPARES_MAX) return 0;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
    strerr_warnwu1sys("create a socket pair for a spare engine");
    return 0;
  }
  c.conn = sp[1];
  c.other = sp[0];
  /* the spare is born with its idle name (a child named tls-engine always holds a
   * connection): the service wears it for the time of the fork */
  name_as("tls-engine-idle");
  pid = spawn_call(&spare_child, &c);
  name_as("tls-engine");
  fd_close(sp[1]);
  if (pid < 0) {
    strerr_warnwu1sys("fork a spare engine");
    fd_close(sp[0]);
    return 0;
  }
  spares[nspares].pid = pid;
  spares[nspares++].ctl = sp[0];
  return 1;
}

/* Lets the spare i go: it is no longer waiting (it took a connection, died, or is recycled). */
static void spare_drop(unsigned int i)
{
  fd_close(spares[i].ctl);
  spares[i] = spares[--nspares];
}

/* A spare that exited: 1 if pid was one (then it is gone from the list). */
static int spare_reaped(pid_t pid)
{
  unsigned int i;
  for (i = 0; i < nspares; i++)
    if (spares[i].pid == pid) {
      spare_drop(i);
      return 1;
    }
  return 0;
}

/* Hands conn to a waiting spare. 1 if one took it; every spare that could not is dropped (it
 * exits on its own: it counts as running until reaped). */
static int spare_give(int conn, unsigned int *running)
{
  while (nspares) {
    unsigned int i = nspares - 1;
    tain deadline;
    tain_now_g();
    tain_add_g(&deadline, &tain_zero); /* an empty socket: the send never waits */
    if (fdpass_send(spares[i].ctl, 'C', &conn, 1, &deadline)) {
      spare_drop(i);
      (*running)++;
      return 1;
    }
    kill(spares[i].pid, SIGKILL); /* it is going anyway (EPIPE: it died) */
    spare_drop(i);
    (*running)++;
  }
  return 0;
}

/* Every spare holds the keys it was forked with: after a reload they go, and new ones come. */
static void spares_recycle(unsigned int *running)
{
  while (nspares) {
    spare_drop(nspares - 1); /* EOF on its socket: it exits */
    (*running)++;
  }
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

/* A connection: checks, reloads the keys when a file changed (the spares then go), gives it to
 * a spare, or forks its engine when none waits. */
static void take(tlsengine_cfg const *cfg, int lfd, int fd, int *usable, unsigned int *running)
{
  struct child c = {cfg, lfd, fd, -1};
  uid_t who = (uid_t)-1;
  if (!allowed(cfg, fd, &who)) {
    refuse(fd, "uid not allowed", who);
    return;
  }
  if (tlsserver_changed()) {
    spares_recycle(running);
    *usable = tlsserver_load();
    if (*usable) strerr_warni1x("certificate or key changed: keypairs loaded again");
    else strerr_warnw2x("keypairs changed but unusable, STARTTLS refused until fixed: ",
                        tlsserver_error());
  }
  if (!*usable) {
    refuse(fd, "no usable certificate", who);
    return;
  }
  if (!spare_give(fd, running)) {
    if (spawn_call(&engine_child, &c) < 0) strerr_warnwu1sys("fork an engine");
    else (*running)++;
  }
  fd_close(fd);
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

/* Spares to start now: up to cfg->spares waiting, engines and spares within maxconn. */
static int spares_wanted(tlsengine_cfg const *cfg, unsigned int running, int usable)
{
  return usable && nspares < cfg->spares && running + nspares < cfg->maxconn;
}

/* Reaps the engines that exited (SIGCHLD). */
static void reap(unsigned int *running)
{
  for (;;) {
    int st;
    pid_t p = waitpid(-1, &st, WNOHANG);
    if (p <= 0) break;
    if (!spare_reaped(p) && *running) (*running)--;
  }
}

int tlsengine_serve(tlsengine_cfg const *cfg0)
{
  unsigned int running = 0; /* engines that hold (or held) a connection, not yet reaped */
  int usable = 1, sfd, lfd;
  sigset_t set;
  tlsengine_cfg c = *cfg0, *cfg = &c; /* notif is used once */
  /* a notification fd that is not open would be reused by the self-pipe below, closed by the
   * readiness write, and the loop would spin on a dead fd */
  if (cfg->notif >= 0 && fcntl(cfg->notif, F_GETFD) < 0)
    strerr_dief1x(100, "the notification fd is not open");
  if (c.spares > TLSENGINE_SPARES_MAX) c.spares = TLSENGINE_SPARES_MAX;
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
    /* spares are started when nothing else is to be done: a connection never waits for one */
    int refill = spares_wanted(cfg, running, usable);
    tain deadline = tain_infinite;
    int r;
    if (refill) {
      tain_now_g();
      tain_add_g(&deadline, &tain_zero);
    }
    r = iopause_g(x, running < cfg->maxconn ? 2 : 1, &deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "iopause");
    }
    if (!r) {
      if (refill && !spare_start(cfg, lfd)) {
        /* cannot fork now (logged): try again in a second, not in a busy loop */
        tain_now_g();
        tain_addsec_g(&deadline, 1);
        iopause_g(x, 0, &deadline);
      }
      continue;
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
        reap(&running);
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
      take(cfg, lfd, fd, &usable, &running);
    }
  }
}
