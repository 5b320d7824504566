/* queue-inject-ipc: the local injection socket, both ends.
 *
 * Server, -l SOCKET (the inject service, as the queue user): listens itself with a pool of
 * long-lived workers, each serving one client after the other (no process per message).
 * Server, no option (under s6-ipcserver or any UCSPI server): serves the one client on fd 0/1.
 * Either way the server reads one message and commits it to the queue itself (lib/queue,
 * the same intake and limits as queue-inject: no program is started per message), after a
 * trace line naming the client's uid and gid as the kernel gave them (SO_PEERCRED, or
 * IPCREMOTEEUID and IPCREMOTEEGID from s6-ipcserver):
 * "Received: by ME (pillarbox local injection, uid N, gid G); DATE".
 * With arguments (queue-inject-ipc PROG...), PROG is run instead with the qmail-queue
 * interface: a chain of hooks in front of queue-inject, which gets the session facts.
 * Client (-c [SOCKET]): the qmail-queue interface (message on fd 0, envelope on fd 1, queue
 * id on $QUEUE_IDFD) for callers that cannot write the queue; forwards over the socket.
 *
 * The framing on the socket (client to server): optionally "S" and one netstring (at most
 * 4096 bytes) of session facts, lines "name=value\n" (service, ip, helo, user, tls, relay);
 * the message as netstrings "LEN:bytes," of at most 65536 bytes each, an empty netstring "0:,"
 * to end it, then the envelope in one netstring (at most 1 MiB). Server to client: one line
 * "CODE ID\n", CODE being a qmail-queue exit code and ID the queue id (maybe empty). A
 * connection closed before the envelope commits nothing. The client side lives in lib/inject.
 *
 * The facts are believed only from a trusted peer: its uid equal to our own euid, or
 * listed in $INJECT_TRUSTED_UIDS (comma-separated). Then a chain gets them as
 * INJECT_SERVICE, INJECT_REMOTEIP, INJECT_HELO, INJECT_AUTHUSER, INJECT_TLS, INJECT_RELAY, and
 * no trace line is added (the network service wrote its own Received:). From anybody else
 * they are ignored (and logged) and the local injection trace line is written.
 */
#define _GNU_SOURCE /* struct ucred, SO_PEERCRED, accept4 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/buffer.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/tai.h>
#include <skalibs/sgetopt.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"
#include "groupsync.h"
#include "inject.h"
#include "queue.h"
#include "spawn.h"

char const *PROG = "queue-inject-ipc";
#define USAGE \
  "queue-inject-ipc [ -c [ socket ] | -l socket [ -1 ] [ -m mode ] [ -n workers ] | prog... ]"

#define CHUNK 65536
#define ENV_MAX (1024 * 1024)
#define TIMEOUT 600
#define POOL_MAX 1000

static char buf[CHUNK];

static int readall(int fd, char *s, size_t n)
{
  return allread(fd, s, n) == n;
}

/* Reads "LEN:" from fd (first: a byte already read, or -1); returns LEN or -1. */
static long read_nslen(int fd, long max, int first)
{
  unsigned long n = 0;
  unsigned int digits = 0;
  for (;;) {
    char c;
    if (first >= 0) { c = (char)first; first = -1; }
    else if (fd_read(fd, &c, 1) != 1) return -1;
    if (c == ':') break;
    if (c < '0' || c > '9' || ++digits > 9) return -1;
    n = n * 10 + (unsigned long)(c - '0');
  }
  if (!digits || n > (unsigned long)max) return -1;
  return (long)n;
}

/* The client's uid and gid as decimal strings, "" when unknown: from s6-ipcserver
 * (IPCREMOTEEUID, IPCREMOTEEGID) or, with -l, from the kernel (SO_PEERCRED). */
static char peer_uid[UINT_FMT], peer_gid[UINT_FMT];

static void peer_set(char *to, unsigned int u, int known)
{
  to[known ? uint_fmt(to, u) : 0] = 0;
}

static void peer_from_env(char *to, char const *name)
{
  char const *x = getenv(name);
  unsigned int u;
  size_t n;
  to[0] = 0;
  if (x && *x && (n = uint_scan(x, &u)) && !x[n]) peer_set(to, u, 1);
}

static int cat_id(stralloc *sa, char const *id)
{
  return stralloc_cats(sa, *id ? id : "unknown");
}

/* The trace line: who injected (the peer's credentials, from the kernel through s6-ipcserver,
 * not from anything the client says), where and when. */
static int trace_line(stralloc *sa)
{
  stralloc me = STRALLOC_ZERO;
  char date[64];
  time_t t = time(0);
  struct tm tm;
  int r = control_readline(&me, "me"), ok;
  if (r < 0) return 0;
  if (!gmtime_r(&t, &tm) || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm))
    return 0;
  sa->len = 0;
  ok = stralloc_cats(sa, "Received: ") &&
       (!r || (stralloc_cats(sa, "by ") && stralloc_catb(sa, me.s, me.len) &&
               stralloc_cats(sa, " "))) &&
       stralloc_cats(sa, "(pillarbox local injection, uid ") && cat_id(sa, peer_uid) &&
       stralloc_cats(sa, ", gid ") && cat_id(sa, peer_gid) &&
       stralloc_cats(sa, ");\n\t") && stralloc_cats(sa, date) && stralloc_cats(sa, "\n");
  stralloc_free(&me);
  if (ok) {
    size_t i;
    for (i = 0; i < sa->len - 1; i++) /* control/me is one line, but keep the header one field */
      if (sa->s[i] == '\n' && sa->s[i + 1] != '\t') sa->s[i] = ' ';
  }
  return ok;
}

static int trusted(void)
{
  char const *x = peer_uid, *t = getenv("INJECT_TRUSTED_UIDS");
  unsigned int u, v;
  size_t n;
  if (!x || !(n = uint_scan(x, &u)) || x[n]) return 0;
  if (u == (unsigned int)geteuid()) return 1;
  while (t && *t) {
    n = uint_scan(t, &v);
    if (!n) break;
    if (v == u) return 1;
    t += n;
    if (*t == ',') t++;
  }
  return 0;
}

/* Exports the facts s[0..n) ("name=value\n" lines) for queue-inject. */
static void export_facts(char *s, size_t n)
{
  static char const *const names[][2] = {
    {"service", "INJECT_SERVICE"}, {"ip", "INJECT_REMOTEIP"}, {"helo", "INJECT_HELO"},
    {"user", "INJECT_AUTHUSER"}, {"tls", "INJECT_TLS"}, {"relay", "INJECT_RELAY"}};
  size_t i = 0;
  while (i < n) {
    size_t e = i, k;
    while (e < n && s[e] != '\n') e++;
    s[e] = 0;
    for (k = 0; k < sizeof names / sizeof names[0]; k++) {
      size_t l = strlen(names[k][0]);
      if (!strncmp(s + i, names[k][0], l) && s[i + l] == '=' &&
          setenv(names[k][1], s + i + l + 1, 1) < 0)
        strerr_diefusys(111, "setenv");
    }
    i = e + 1;
  }
}

/* With a chain: run argv with the message (qmail-queue interface), as before lib/queue
 * could commit here. */
static int chain_server(char const *const *argv)
{
  int pm[2], pe[2], pi[2], w, first = -1, facts = 0, v2 = 0;
  char early[64];
  size_t el = 0;
  pid_t pid;
  stralloc env = STRALLOC_ZERO;
  char line[64 + UINT_FMT];
  size_t ll = 0;
  alarm(TIMEOUT);
  {
    char c;
    if (fd_read(0, &c, 1) != 1)
      strerr_dief(100, "client went away or broke the protocol; nothing queued");
    if (c == 'S') {
      v2 = 1;
      long n = read_nslen(0, INJECT_FACTS_MAX, -1);
      char f[INJECT_FACTS_MAX + 1], z;
      if (n < 0 || !readall(0, f, (size_t)n) || fd_read(0, &z, 1) != 1 || z != ',')
        strerr_dief(100, "client went away or broke the protocol; nothing queued");
      if (trusted()) {
        export_facts(f, (size_t)n);
        facts = 1;
      } else
        strerr_warnw("ignoring session facts from an untrusted uid ",
                     *peer_uid ? peer_uid : "unknown");
    } else first = (unsigned char)c;
  }
  if (facts) env.len = 0;
  else if (!trace_line(&env)) strerr_diefusys(111, "make the Received: line");
  if (pipecoe(pm) < 0 || pipecoe(pe) < 0 || pipecoe(pi) < 0) strerr_diefusys(111, "pipe");
  {
    spawn_fd map[3] = {{0, pm[0]}, {1, pe[0]}, {3, pi[1]}};
    char const *mods[1] = {"QUEUE_IDFD=3"};
    char const *envp[SPAWN_ENVMAX];
    if (spawn_env(envp, SPAWN_ENVMAX, mods, 1) < 0) strerr_diefusys(111, "build the environment");
    pid = spawn(argv, envp, map, 3);
    if (pid < 0) strerr_diefu2sys(111, "spawn ", argv[0]);
  }
  fd_close(pm[0]);
  fd_close(pe[0]);
  fd_close(pi[1]);
  if (v2) {
    /* a client that sent facts gets the queue id at once ("I" ID "\n"): queue-inject tells it
     * before it reads the message */
    char line[sizeof early + 2];
    size_t i;
    tain d;
    tain_now_set_stopwatch_g();
    tain_addsec_g(&d, 5); /* a hook in front of queue-inject may tell it only at the end */
    while (el < sizeof early - 1) {
      iopause_fd x = {pi[0], IOPAUSE_READ, 0};
      if (iopause_g(&x, 1, &d) <= 0 || fd_read(pi[0], early + el, 1) != 1 || early[el] == '\n')
        break;
      el++;
    }
    for (i = 0; i < el && early[i] > 32 && early[i] < 127; i++)
      ;
    el = i;
    line[0] = 'I';
    memcpy(line + 1, early, el);
    line[el + 1] = '\n';
    if (allwrite(1, line, el + 2) != el + 2) goto abort;
  }
  if (allwrite(pm[1], env.s, env.len) != env.len && errno != EPIPE) goto abort;
  env.len = 0;
  for (;;) {
    long n = read_nslen(0, CHUNK, first);
    char c;
    first = -1;
    if (n < 0 || !readall(0, buf, (size_t)n) || fd_read(0, &c, 1) != 1 || c != ',') goto abort;
    if (!n) break;
    if (allwrite(pm[1], buf, (size_t)n) != (size_t)n) {
      if (errno != EPIPE) goto abort;
    }
  }
  fd_close(pm[1]);
  {
    long n = read_nslen(0, ENV_MAX, -1);
    char c;
    if (n < 0 || !stralloc_ready(&env, (size_t)n) || !readall(0, env.s, (size_t)n) ||
        fd_read(0, &c, 1) != 1 || c != ',')
      goto abort;
    env.len = (size_t)n;
  }
  allwrite(pe[1], env.s, env.len);
  fd_close(pe[1]);
  {
    char id[64];
    size_t il = allread(pi[0], id, sizeof id - 1), i = 0;
    if (!il && el) memcpy(id, early, il = el); /* told early, not again */
    while (i < il && id[i] > 32 && id[i] < 127) i++;
    il = i;
    fd_close(pi[0]);
    if (wait_pid(pid, &w) != pid) strerr_diefu2sys(111, "wait for ", argv[0]);
    ll = uint_fmt(line, WIFEXITED(w) ? (unsigned int)WEXITSTATUS(w) : 81u);
    line[ll++] = ' ';
    memcpy(line + ll, id, il);
    ll += il;
    line[ll++] = '\n';
  }
  if (allwrite(1, line, ll) != ll) strerr_diefusys(111, "write to client");
  return 0;
abort:
  fd_close(pm[1]);
  fd_close(pe[1]);
  kill(pid, SIGTERM);
  wait_pid(pid, &w);
  strerr_dief(100, "client went away or broke the protocol; nothing queued");
}


/* ---- in-process: lib/queue commits the message here ---- */

static char inbuf[CHUNK + 64];
static buffer in;

static void broken(void) gccattr_noreturn;
static void broken(void)
{
  strerr_dief(100, "client went away or broke the protocol; nothing queued");
}

static void get(char *s, size_t n)
{
  if (buffer_get(&in, s, n) != (ssize_t)n) broken();
}

/* "LEN:" from the buffered input; first: a byte already read, or -1. LEN, or dies. */
static size_t get_nslen(size_t max, int first)
{
  size_t n = 0;
  unsigned int digits = 0;
  for (;;) {
    char c;
    if (first >= 0) { c = (char)first; first = -1; }
    else get(&c, 1);
    if (c == ':') break;
    if (c < '0' || c > '9' || ++digits > 9) broken();
    n = n * 10 + (size_t)(c - '0');
  }
  if (!digits || n > max) broken();
  return n;
}

static void get_comma(void)
{
  char c;
  get(&c, 1);
  if (c != ',') broken();
}

/* Logs why the message was not queued (the client gets the code). */
static void say(int code, char const *qdir)
{
  char fmt[UINT_FMT];
  fmt[uint_fmt(fmt, (unsigned int)code)] = 0;
  switch (code) {
    case QX_REFUSED: strerr_warnw2x("message refused (databytes or recipients), code ", fmt); break;
    case QX_ADDRLONG: strerr_warnw1x("address too long"); break;
    case QX_ENVELOPE: strerr_warnw1x("envelope format error"); break;
    case QX_NOMEM: strerr_warnw1x("out of memory"); break;
    default: strerr_warnwu4sys("queue the message in ", qdir, ", code ", fmt);
  }
}

static groupsync gsync = GROUPSYNC_ZERO; /* the pool's table, made before the workers */
static queue_limits limits; /* control/'s intake limits, kept by a pool worker (held) */
static int held;

/* One client: its message from fd into the queue, the answer on ofd. Dies on a broken
 * client (nothing queued; with -l its worker is replaced). */
static void server(int fd, int ofd)
{
  stralloc qdir = STRALLOC_ZERO, env = STRALLOC_ZERO, id = STRALLOC_ZERO;
  queue_tx tx = QUEUE_TX_ZERO;
  queue_in q = QUEUE_IN_ZERO;
  char const *bad = 0;
  int first = -1, facts = 0, v2 = 0, code;
  char c;
  buffer_init(&in, &buffer_read, fd, inbuf, sizeof inbuf);
  alarm(TIMEOUT);
  get(&c, 1);
  if (c == 'S') {
    char f[INJECT_FACTS_MAX];
    size_t n = get_nslen(INJECT_FACTS_MAX, -1);
    v2 = 1;
    get(f, n);
    get_comma();
    /* nothing here reads the facts: believed, they only spare the trace line */
    if (trusted()) facts = 1;
    else
      strerr_warnw2x("ignoring session facts from an untrusted uid ",
                     *peer_uid ? peer_uid : "unknown");
  } else first = (unsigned char)c;
  if (!facts && !trace_line(&env)) strerr_diefusys(111, "make the Received: line");
  if (!stralloc_cats(&qdir, mailroot()) || !stralloc_cats(&qdir, "/queue") || !stralloc_0(&qdir))
    strerr_diefusys(111, "allocate");
  /* a pool worker keeps the limits until control/ changes; a one-client server reads them */
  code = queue_limits_read(&limits, held, &bad);
  if (!code) queue_in_start(&q, qdir.s, &limits);
  if (code) {
    if (errno) strerr_warnwu3sys("read ", "control/", bad);
    else strerr_warnw3x("control/", bad, ": not a number");
  } else code = queue_tx_begin(qdir.s, &tx);
  if (v2) {
    /* the client that sent facts is told the id at once, as queue-inject tells QUEUE_IDFD */
    stralloc line = STRALLOC_ZERO;
    if (!stralloc_catb(&line, "I", 1) || (!code && !stralloc_catb(&line, tx.id.s, tx.id.len - 1)) ||
        !stralloc_catb(&line, "\n", 1))
      strerr_diefusys(111, "allocate");
    if (allwrite(ofd, line.s, line.len) != line.len) broken();
    stralloc_free(&line);
  }
  if (!code && env.len) code = queue_in_add(&q, env.s, env.len);
  for (;;) {
    size_t n = get_nslen(CHUNK, first);
    first = -1;
    get(buf, n);
    get_comma();
    if (!n) break;
    if (!code) code = queue_in_add(&q, buf, n); /* after an error: read on, keep nothing */
  }
  {
    size_t n = get_nslen(ENV_MAX, -1);
    if (!stralloc_ready(&env, n)) strerr_diefusys(111, "allocate");
    get(env.s, n);
    env.len = n;
    get_comma();
  }
  if (!code) code = queue_in_commit(&q, &tx, env.s, env.len, 0);
  if (code) say(code, qdir.s);
  queue_in_free(&q);
  {
    char fmt[UINT_FMT];
    if (!stralloc_catb(&id, fmt, uint_fmt(fmt, (unsigned int)code)) ||
        !stralloc_catb(&id, " ", 1) || (tx.id.len && !stralloc_catb(&id, tx.id.s, tx.id.len - 1)) ||
        !stralloc_catb(&id, "\n", 1))
      strerr_diefusys(111, "allocate");
    if (allwrite(ofd, id.s, id.len) != id.len) strerr_diefusys(111, "write to client");
  }
  alarm(0);
  stralloc_free(&qdir);
  stralloc_free(&env);
  stralloc_free(&id);
  stralloc_free(&tx.id);
}

/* ---- -l: a pool of long-lived workers on our own socket ---- */

static pid_t workers[POOL_MAX];
static unsigned int nworkers;
static pid_t pool_pid;

static void term(int sig)
{
  unsigned int i;
  (void)sig;
  for (i = 0; i < nworkers; i++)
    if (workers[i] > 0) kill(workers[i], SIGTERM);
  _exit(0);
}

/* A worker takes one client after the other: no process is started per message. */
static void worker(int ls) gccattr_noreturn;
static void worker(int ls)
{
  if (sig_restore(SIGTERM) < 0) strerr_diefusys(111, "restore SIGTERM");
  /* a pool whose parent was killed outright must not keep serving an old socket */
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0) strerr_diefusys(111, "set the parent-death signal");
  if (getppid() != pool_pid) _exit(0);
  held = 1;
  queue_hold_open(); /* one queue, message after message: mess/ and the trigger stay open */
  if (gsync.t) queue_groupsync(&gsync); /* and one fsync of mess/ for the pool's renames */
  for (;;) {
    struct ucred cr;
    socklen_t crl = sizeof cr;
    int fd = accept4(ls, 0, 0, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      strerr_diefusys(111, "accept");
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0) {
      strerr_warnwusys("read the client's credentials");
      fd_close(fd);
      continue;
    }
    peer_set(peer_uid, (unsigned int)cr.uid, 1);
    peer_set(peer_gid, (unsigned int)cr.gid, 1);
    server(fd, fd);
    fd_close(fd);
  }
}

/* A worker is this program, already set up, not a new one: spawn_call, not spawn. */
static int worker_main(void *ls)
{
  worker(*(int const *)ls);
  return 111;
}

static pid_t start_worker(int ls)
{
  pid_t pid = spawn_call(&worker_main, &ls);
  if (pid < 0) strerr_warnwusys("fork a worker");
  return pid;
}

static int pool(char const *path, unsigned int mode, unsigned int n, int notify)
{
  struct sockaddr_un sun;
  int ls;
  unsigned int i;
  if (strlen(path) >= sizeof sun.sun_path) strerr_dief2x(100, "socket path too long: ", path);
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, strlen(path));
  pool_pid = getpid();
  ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) strerr_diefusys(111, "make a socket");
  if (bind(ls, (struct sockaddr *)&sun, sizeof sun) < 0) strerr_diefu2sys(111, "bind ", path);
  if (chmod(path, mode) < 0) strerr_diefu2sys(111, "chmod ", path);
  if (listen(ls, 256) < 0) strerr_diefu2sys(111, "listen on ", path);
  if (sig_catch(SIGTERM, &term) < 0) strerr_diefusys(111, "catch SIGTERM");
  {
    int g = groupsync_make();
    if (g < 0 || !groupsync_init(&gsync, g))
      strerr_warnwusys("make the table of shared fsyncs (each worker fsyncs mess/ itself)");
    if (g >= 0) close(g);
  }
  for (i = 0; i < n; i++) workers[nworkers++] = start_worker(ls);
  if (notify) { /* readiness, as s6-ipcserver -1: a newline on fd 1 once we listen */
    if (allwrite(1, "\n", 1) != 1) strerr_warnwusys("write the readiness line");
    fd_close(1);
  }
  for (;;) {
    int w;
    pid_t pid = wait(&w);
    if (pid < 0) {
      if (errno == EINTR) continue;
      if (errno != ECHILD) strerr_diefusys(111, "wait");
      sleep(1); /* every fork failed: try again */
    }
    for (i = 0; i < nworkers; i++)
      if (workers[i] == pid || workers[i] < 0) {
        /* a worker that died (a client that broke off, a timeout) is replaced */
        workers[i] = start_worker(ls);
        if (workers[i] < 0) sleep(1);
        break;
      }
  }
}

static int client(char const *path)
{
  injector j;
  stralloc env = STRALLOC_ZERO, id = STRALLOC_ZERO;
  int code;
  if (!inject_start_socket(&j, path, 0, TIMEOUT)) {
    strerr_warnwusys("connect to ", path);
    return 71; /* qmail-queue: temporary, unable to reach the queue */
  }
  for (;;) {
    ssize_t r = fd_read(0, buf, sizeof buf);
    if (r < 0) { strerr_warnwusys("read the message"); inject_abort(&j); return 54; }
    if (!r) break;
    inject_write(&j, buf, (size_t)r);
  }
  for (;;) {
    ssize_t r = fd_read(1, buf, sizeof buf);
    if (r < 0) { strerr_warnwusys("read the envelope"); inject_abort(&j); return 54; }
    if (!r) break;
    if (env.len + (size_t)r > ENV_MAX) { inject_abort(&j); return 91; }
    if (!stralloc_catb(&env, buf, (size_t)r)) { inject_abort(&j); return 51; }
  }
  code = inject_commit(&j, env.s, env.len, &id);
  if (code < 0 || code == 111) {
    strerr_warnw("no answer from ", path);
    return 81;
  }
  if (!code && id.len) {
    char const *idfd = getenv("QUEUE_IDFD");
    unsigned int fd;
    if (idfd && uint0_scan(idfd, &fd) && stralloc_catb(&id, "\n", 1))
      allwrite((int)fd, id.s, id.len);
  }
  return code;
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  int cl = 0, notify = 0;
  char const *listen_path = 0;
  unsigned int mode = 0777, n = 40;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "cl:m:n:1", &l);
    if (opt == -1) break;
    switch (opt) {
      case 'c': cl = 1; break;
      case 'l': listen_path = l.arg; break;
      case 'm': if (!uint0_oscan(l.arg, &mode) || mode > 07777) strerr_dieusage(100, USAGE); break;
      case 'n':
        if (!uint0_scan(l.arg, &n) || !n || n > POOL_MAX) strerr_dieusage(100, USAGE);
        break;
      case '1': notify = 1; break;
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (sig_altignore(SIGPIPE) < 0) strerr_diefusys(111, "ignore SIGPIPE");
  if (cl) {
    stralloc p = STRALLOC_ZERO;
    if (argc) return client(argv[0]);
    if (!mailroot_path(&p, "queue/inject.sock")) strerr_diefusys(111, "allocate");
    return client(p.s);
  }
  if (listen_path) {
    if (argc) strerr_dieusage(100, USAGE);
    return pool(listen_path, mode, n, notify);
  }
  peer_from_env(peer_uid, "IPCREMOTEEUID");
  peer_from_env(peer_gid, "IPCREMOTEEGID");
  if (argc) return chain_server(argv);
  server(0, 1);
  return 0;
}
