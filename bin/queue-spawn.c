/* queue-spawn: the root spawner of the queue service, in the shape of qmail-lspawn and
 * qmail-rspawn (doc/queue-spawn.8).
 *
 * Started by s6 as root, it makes a socket pair, runs PROG (queue-run) under the queue uid
 * with QUEUE_SPAWNFD naming its end, and then does nothing but serve its requests (lib/qspawn
 * has the record format): fork, set the delivery uid (deliver-maildir) or the remote uid
 * (smtp-send), exec with the message and the report pipe queue-run sent (SCM_RIGHTS), and
 * report each child's wait status back. It reads no file of the queue, no mailbox, no
 * control file. A child is started by lib/spawn's spawn_as (vfork: the spawner is small, but a
 * fork still copies its page tables), which sets its uid before it execs. Signals TERM, INT,
 * HUP, ALRM go to queue-run; when queue-run exits, queue-spawn exits with its code. Not root:
 * no uid changes, everything runs as the caller.
 */
#define _GNU_SOURCE /* getgrouplist */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/selfpipe.h>
#include <skalibs/sgetopt.h>
#include <skalibs/sig.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "deliver.h"
#include "groupsync.h"
#include "qspawn.h"
#include "spawn.h"

char const *PROG = "queue-spawn";
#define USAGE "queue-spawn [ -P ] [ -q queueuser ] [ -l deliveryuser ] [ -r remoteuser ] prog..."
#define GROUPS_MAX 64

typedef struct ident_s ident;
struct ident_s {
  int set;
  spawn_id id;
  gid_t groups[GROUPS_MAX];
};

static ident asqueue, aslocal, asremote;

/* "NAME" (passwd lookup, once, here at start) or "UID:GID" */
static void resolve(char const *spec, ident *id)
{
  unsigned int u, g;
  size_t k = uint_scan(spec, &u);
  if (k && spec[k] == ':' && uint0_scan(spec + k + 1, &g)) {
    id->id.uid = (uid_t)u;
    id->id.gid = (gid_t)g;
    id->groups[0] = id->id.gid;
    id->id.ngroups = 1;
  } else {
    int n = GROUPS_MAX;
    struct passwd *pw;
    errno = 0;
    pw = getpwnam(spec);
    if (!pw) {
      if (errno) strerr_diefu2sys(111, "look up user ", spec);
      strerr_dief2x(100, "unknown user: ", spec);
    }
    id->id.uid = pw->pw_uid;
    id->id.gid = pw->pw_gid;
    if (getgrouplist(pw->pw_name, pw->pw_gid, id->groups, &n) < 0)
      strerr_dief2x(100, "too many groups for user ", spec);
    id->id.ngroups = (size_t)n;
  }
  id->id.groups = id->groups;
  id->set = 1;
}

/* who a child becomes: nobody else when not set, or when we are not root */
static spawn_id const *as(ident const *id)
{
  return id->set && !geteuid() ? &id->id : 0;
}

typedef struct kid_s kid;
struct kid_s {
  pid_t pid;
  uint32_t id;
};
static kid *kids;
static unsigned int nkids, kidcap;

/* ---- the local delivery workers: deliver-maildir -W under the delivery uid, each taking
 * one request at a time over a socket pair (lib/deliver), so a delivery starts no process.
 * A worker's answer is passed on to queue-run as a child's end would be; a worker that dies
 * with a request in hand ends that request with its own wait status (queue-run retries it,
 * and the delivery key keeps the retry from delivering twice). ---- */

typedef struct worker_s worker;
struct worker_s {
  pid_t pid;
  int fd;      /* our end of its socket; -1 once it went away (its pid is still to reap) */
  int busy;    /* a request is in its hands */
  uint32_t id; /* ...this one */
  unsigned long uses; /* requests answered: at DELIVER_MAXUSE it is let go (EOF) */
};
static worker *wk;
static unsigned int nwk, wkcap;
static int pool = 1; /* -P: a process per delivery, as before the workers */
static int qsock;    /* the socket to queue-run */
static int gsfd = -1; /* lib/groupsync's table, shared by the workers (we never map it) */

static int envok(char const *s)
{
  return !strncmp(s, "SENDER=", 7) || !strncmp(s, "RECIPIENT=", 10) ||
         !strncmp(s, "DELIVERY_KEY=", 13) || !strncmp(s, "DELIVERY_ATTEMPT=", 17);
}

/* a new idle worker: its index, or -1 */
static int worker_start(void)
{
  static char const *const argv[] = {QSPAWN_LOCAL_PROG, "-W", 0};
  static char const *const argvg[] = {QSPAWN_LOCAL_PROG, "-W", "-g", "3", 0};
  int sv[2];
  pid_t pid;
  if (nwk == wkcap) {
    unsigned int c = wkcap ? wkcap * 2 : 16;
    worker *n = realloc(wk, c * sizeof *n);
    if (!n) return -1;
    wk = n;
    wkcap = c;
  }
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -1;
  {
    /* fd 2: ours, the log; fd 3: the workers' table of shared fsyncs of new/ */
    spawn_fd map[3] = {{0, sv[1]}, {1, SPAWN_DEVNULL}, {3, gsfd}};
    pid = spawn_as(gsfd >= 0 ? argvg : argv, 0, map, gsfd >= 0 ? 3 : 2, as(&aslocal));
  }
  close(sv[1]);
  if (pid < 0 || ndelay_on(sv[0]) < 0) {
    int e = errno;
    close(sv[0]);
    errno = e;
    if (pid < 0) strerr_warnwu2sys("start a worker ", QSPAWN_LOCAL_PROG);
    return -1;
  }
  wk[nwk].pid = pid;
  wk[nwk].fd = sv[0];
  wk[nwk].busy = 0;
  wk[nwk].uses = 0;
  return (int)nwk++;
}

static void worker_gone(unsigned int i)
{
  if (wk[i].fd >= 0) close(wk[i].fd);
  wk[i].fd = -1;
}

/* hands r to an idle worker (a new one if none is idle): 1, or 0 (then spawn a process) */
static int to_worker(qspawn_req *r)
{
  unsigned int tries;
  for (tries = 0; tries < 2; tries++) {
    int k = -1;
    unsigned int i;
    for (i = 0; i < nwk; i++)
      if (wk[i].fd >= 0 && !wk[i].busy) {
        k = (int)i;
        break;
      }
    if (k < 0 && (k = worker_start()) < 0) return 0;
    if (qspawn_send(wk[k].fd, r->buf, r->len, r->fd, 2)) {
      wk[k].busy = 1;
      wk[k].id = r->id;
      close(r->fd[0]);
      close(r->fd[1]);
      return 1;
    }
    worker_gone((unsigned int)k); /* it died: its end is reaped on SIGCHLD */
  }
  return 0;
}

/* reads what worker i answered; passes each end on to queue-run */
static void worker_read(unsigned int i)
{
  qspawn w = {wk[i].fd, 0};
  uint32_t id;
  int st, r;
  while ((r = qspawn_reap(&w, &id, &st)) > 0) {
    if (!wk[i].busy || id != wk[i].id) {
      strerr_warnw1x("a worker answered a request it did not have, ignored");
      continue;
    }
    wk[i].busy = 0;
    if (!qspawn_send_exit(qsock, id, st) && errno != EPIPE)
      strerr_warnwu1sys("write to queue-run");
    if (++wk[i].uses >= DELIVER_MAXUSE) {
      worker_gone(i); /* it exits at EOF; a fresh one takes its place when needed */
      return;
    }
  }
  if (r < 0) worker_gone(i); /* EOF: it is going (max requests served) */
}

/* pid ended: 1 if it was a worker (its request, if any, ends with the worker's status) */
static int worker_reaped(pid_t pid, int w)
{
  unsigned int i;
  for (i = 0; i < nwk; i++)
    if (wk[i].pid == pid) {
      if (wk[i].fd >= 0) worker_read(i); /* an answer sent just before it went */
      /* a worker only exits at EOF; one that ended holding a request did not deliver it */
      if (wk[i].busy && WIFEXITED(w) && !WEXITSTATUS(w)) w = 111 << 8;
      if (wk[i].busy && !qspawn_send_exit(qsock, wk[i].id, w) && errno != EPIPE)
        strerr_warnwu1sys("write to queue-run");
      worker_gone(i);
      wk[i] = wk[--nwk];
      return 1;
    }
  return 0;
}

static void worker_kill(uint32_t id, int sig)
{
  unsigned int i;
  for (i = 0; i < nwk; i++)
    if (wk[i].busy && wk[i].id == id) kill(wk[i].pid, sig);
}

static void fdwrite(int fd, char const *a, char const *b, char const *c)
{
  if (write(fd, a, strlen(a)) < 0 || write(fd, b, strlen(b)) < 0 || write(fd, c, strlen(c)) < 0)
    return;
}

static void serve(int sock, qspawn_req *r)
{
  static char const *envp[SPAWN_ENVMAX + 1];
  char const *prog;
  pid_t pid;
  unsigned int i;
  if (r->kind == QSPAWN_KILL) {
    for (i = 0; i < nkids; i++)
      if (kids[i].id == r->id) kill(kids[i].pid, r->sig);
    worker_kill(r->id, r->sig);
    return;
  }
  prog = r->kind == QSPAWN_LOCAL ? QSPAWN_LOCAL_PROG : QSPAWN_REMOTE_PROG;
  if (strcmp(r->argv[0], prog)) { /* the spawner runs these two programs and nothing else */
    fdwrite(r->fd[1], "queue-spawn: refused to run ", r->argv[0], "\n");
    close(r->fd[0]);
    close(r->fd[1]);
    if (!qspawn_send_exit(sock, r->id, 100 << 8)) strerr_diefu1sys(111, "write to queue-run");
    return;
  }
  if (nkids == kidcap) {
    unsigned int c = kidcap ? kidcap * 2 : 64;
    kid *n = realloc(kids, c * sizeof *n);
    if (!n) strerr_diefu1sys(111, "allocate");
    kids = n;
    kidcap = c;
  }
  if (r->kind == QSPAWN_LOCAL && pool && to_worker(r)) return;
  { /* the environment: ours, with the delivery's own variables, nothing else */
    char const *mods[4];
    unsigned int n = 0, i;
    for (i = 0; r->env[i]; i++)
      if (envok(r->env[i]) && n < 4) mods[n++] = r->env[i];
    if (spawn_env(envp, SPAWN_ENVMAX + 1, mods, n) < 0) envp[0] = 0;
  }
  { /* a local child: fd 0 the message, 1 /dev/null, 2 the report; a remote one: 0 the
     * message, 1 the report, 2 ours (the log) */
    int local = r->kind == QSPAWN_LOCAL;
    spawn_fd map[3] = {{0, r->fd[0]}, {local ? 2 : 1, r->fd[1]}, {1, SPAWN_DEVNULL}};
    pid = spawn_as(r->argv, envp, map, local ? 3 : 2, as(local ? &aslocal : &asremote));
    if (pid < 0) {
      fdwrite(r->fd[1], "unable to run ", prog, ": ");
      fdwrite(r->fd[1], strerror(errno), "\n", "");
    }
  }
  close(r->fd[0]);
  close(r->fd[1]);
  if (pid < 0) {
    if (!qspawn_send_exit(sock, r->id, 111 << 8)) strerr_diefu1sys(111, "write to queue-run");
    return;
  }
  kids[nkids].pid = pid;
  kids[nkids++].id = r->id;
}

/* reaps children: the deliveries' ends go to queue-run; 1 when queue-run itself ended */
static int reap(int sock, pid_t qr, int *qrstat)
{
  int w, done = 0;
  pid_t pid;
  while ((pid = wait_nohang(&w)) > 0) {
    unsigned int i;
    if (pid == qr) {
      *qrstat = w;
      done = 1;
      continue;
    }
    if (worker_reaped(pid, w)) continue;
    for (i = 0; i < nkids; i++)
      if (kids[i].pid == pid) {
        if (!qspawn_send_exit(sock, kids[i].id, w) && errno != EPIPE)
          strerr_warnwu1sys("write to queue-run");
        kids[i] = kids[--nkids];
        break;
      }
  }
  return done;
}

/* queue-run (argv) under the queue uid, with QUEUE_SPAWNFD naming its end of the socket */
static pid_t start_queue_run(char const *const *argv, int theirs)
{
  static char const *envp[SPAWN_ENVMAX + 1];
  char var[sizeof "QUEUE_SPAWNFD=" + UINT_FMT] = "QUEUE_SPAWNFD=";
  char const *mods[1] = {var};
  spawn_fd map[1] = {{theirs, theirs}};
  pid_t pid;
  var[14 + uint_fmt(var + 14, (unsigned int)theirs)] = 0;
  if (spawn_env(envp, SPAWN_ENVMAX + 1, mods, 1) < 0) strerr_diefu1sys(111, "set QUEUE_SPAWNFD");
  pid = spawn_as(argv, envp, map, 1, as(&asqueue));
  if (pid < 0) strerr_diefu2sys(111, "run ", argv[0]);
  return pid;
}

static int setup_signals(void)
{
  sigset_t set;
  int sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "init the self-pipe");
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGALRM);
  if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  return sfd;
}

/* the self-pipe, queue-run's socket (while open) and each worker's: x[0..n) */
static unsigned int pollset(iopause_fd **x, int sfd, int open_sock)
{
  static unsigned int cap;
  unsigned int n = 0, i;
  if (cap < nwk + 2) {
    iopause_fd *nx = realloc(*x, (nwk + 2) * sizeof *nx);
    if (!nx) strerr_diefu1sys(111, "allocate");
    *x = nx;
    cap = nwk + 2;
  }
  (*x)[n].fd = sfd, (*x)[n++].events = IOPAUSE_READ;
  (*x)[n].fd = qsock, (*x)[n++].events = open_sock ? IOPAUSE_READ : 0;
  for (i = 0; i < nwk; i++) {
    (*x)[n].fd = wk[i].fd;
    (*x)[n++].events = wk[i].fd >= 0 ? IOPAUSE_READ : 0;
  }
  return n;
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  static qspawn_req req;
  static iopause_fd *x = 0; /* static: still reachable when main returns */
  int sv[2], sfd, qrstat = 0, open_sock = 1;
  pid_t qr;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "q:l:r:P", &l);
    if (opt == -1) break;
    switch (opt) {
    case 'q': resolve(l.arg, &asqueue); break;
    case 'l': resolve(l.arg, &aslocal); break;
    case 'r': resolve(l.arg, &asremote); break;
    case 'P': pool = 0; break;
    default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (!argc) strerr_dieusage(100, USAGE);
  if (geteuid() && (asqueue.set || aslocal.set || asremote.set))
    strerr_warnw1x("not root: the queue and every delivery run under this uid");
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) strerr_diefu1sys(111, "make a socket pair");
  if (coe(sv[0]) < 0 || ndelay_on(sv[0]) < 0) strerr_diefu1sys(111, "set up the socket");
  qsock = sv[0];
  sfd = setup_signals();
  if (pool && (gsfd = groupsync_make()) < 0)
    strerr_warnwusys("make the table of shared fsyncs (each worker fsyncs new/ itself)");
  qr = start_queue_run(argv, sv[1]);
  close(sv[1]);
  for (;;) {
    unsigned int n = pollset(&x, sfd, open_sock), i;
    if (iopause(x, n, 0, 0) < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "iopause");
    }
    for (i = 2; i < n; i++) /* workers' answers first: their ends before any SIGCHLD */
      if (x[i].revents && i - 2 < nwk && wk[i - 2].fd == x[i].fd) worker_read(i - 2);
    if (x[0].revents)
      for (;;) {
        int sig = selfpipe_read();
        if (sig <= 0) break;
        if (sig == SIGCHLD) {
          if (reap(sv[0], qr, &qrstat))
            return WIFEXITED(qrstat) ? WEXITSTATUS(qrstat) : 111;
        } else
          kill(qr, sig);
      }
    while (open_sock && x[1].revents) { /* every request waiting, then wait again */
      int r = qspawn_recv(sv[0], &req);
      if (r > 0) serve(sv[0], &req);
      else if (!r) open_sock = 0; /* queue-run is going: wait for its exit status */
      else if (errno == EPROTO) strerr_warnw1x("malformed request from queue-run, ignored");
      else if (errno == EAGAIN) break;
      else strerr_diefu1sys(111, "read from queue-run");
    }
  }
}
