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

#include "qspawn.h"
#include "spawn.h"

char const *PROG = "queue-spawn";
#define USAGE "queue-spawn [ -q queueuser ] [ -l deliveryuser ] [ -r remoteuser ] prog..."
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
  { /* the environment: ours, with the delivery's own SENDER and RECIPIENT, nothing else */
    char const *mods[2];
    unsigned int n = 0, i;
    for (i = 0; r->env[i]; i++)
      if ((!strncmp(r->env[i], "SENDER=", 7) || !strncmp(r->env[i], "RECIPIENT=", 10)) && n < 2)
        mods[n++] = r->env[i];
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

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  static qspawn_req req;
  int sv[2], sfd, qrstat = 0, open_sock = 1;
  pid_t qr;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "q:l:r:", &l);
    if (opt == -1) break;
    switch (opt) {
    case 'q': resolve(l.arg, &asqueue); break;
    case 'l': resolve(l.arg, &aslocal); break;
    case 'r': resolve(l.arg, &asremote); break;
    default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (!argc) strerr_dieusage(100, USAGE);
  if (geteuid() && (asqueue.set || aslocal.set || asremote.set))
    strerr_warnw1x("not root: the queue and every delivery run under this uid");
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) strerr_diefu1sys(111, "make a socket pair");
  if (coe(sv[0]) < 0) strerr_diefu1sys(111, "set close-on-exec");
  sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "init the self-pipe");
  {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGALRM);
    if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  }
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  qr = start_queue_run(argv, sv[1]);
  close(sv[1]);
  for (;;) {
    iopause_fd x[2] = {{sfd, IOPAUSE_READ, 0}, {sv[0], IOPAUSE_READ, 0}};
    if (iopause(x, open_sock ? 2 : 1, 0, 0) < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "iopause");
    }
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
    if (open_sock && x[1].revents) {
      int r = qspawn_recv(sv[0], &req);
      if (r > 0) serve(sv[0], &req);
      else if (!r) open_sock = 0; /* queue-run is going: wait for its exit status */
      else if (errno == EPROTO) strerr_warnw1x("malformed request from queue-run, ignored");
      else if (errno != EAGAIN) strerr_diefu1sys(111, "read from queue-run");
    }
  }
}
