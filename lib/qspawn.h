/* qspawn: how queue-run starts a delivery (deliver-maildir, smtp-send) and learns how it
 * ended. Two ways behind one interface:
 *
 *  - direct (QUEUE_SPAWNFD unset): lib/spawn (posix_spawn), under queue-run's own uid; an exit is
 *    learned from SIGCHLD and waitpid. What runs when queue-run is started by hand, by the
 *    tests, or by a service that is not root.
 *  - through queue-spawn (QUEUE_SPAWNFD=N, a SOCK_SEQPACKET socket to the root spawner, in
 *    the shape of qmail-lspawn/qmail-rspawn): each request is one record carrying the
 *    message's open descriptor and the write end of the report pipe (SCM_RIGHTS, two fds in
 *    one record); queue-spawn forks, sets the uid (delivery uid for a local delivery, remote
 *    uid for smtp-send) and execs, and sends one record back when the child exits. Kill
 *    requests go the same way (queue-run may not signal another uid's processes).
 *
 * Records, queue-run to queue-spawn (at most QSPAWN_REQ_MAX bytes):
 *   KIND ID "\0" NENV "\0" ENV... ARGV...   KIND 'L' (local) or 'R' (remote); ID decimal;
 *                                          NENV strings "NAME=value\0", then argv strings
 *                                          "\0"-terminated; two fds: message, report
 *   "K" ID "\0" SIG "\0"                     send signal SIG to the child of request ID
 * queue-spawn to queue-run:
 *   "X" ID "\0" WSTAT "\0"                   the child of request ID ended (waitpid status)
 * A local child has fd 0 = message, fd 2 = report, fd 1 = /dev/null; a remote child fd 0 =
 * message, fd 1 = report, fd 2 = the spawner's (the log). A child that cannot be started
 * ends with exit 111 and "unable to run PROG: REASON" in its report.
 */
#ifndef PILLARBOX_QSPAWN_H
#define PILLARBOX_QSPAWN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <skalibs/stralloc.h>

#define QSPAWN_LOCAL 'L'
#define QSPAWN_REMOTE 'R'
#define QSPAWN_KILL 'K'
#define QSPAWN_REQ_MAX 65536 /* bytes in one request record */
#define QSPAWN_ARGS_MAX 512  /* argv entries in a request */
#define QSPAWN_ENV_MAX 8     /* environment additions in a request */
#define QSPAWN_LOCAL_PROG "deliver-maildir"
#define QSPAWN_REMOTE_PROG "smtp-send"

/* ---- queue-run's side ---- */

typedef struct qspawn_s qspawn;
struct qspawn_s {
  int fd;          /* the socket to queue-spawn, or -1: direct */
  uint32_t nextid; /* request ids */
};

/* Reads QUEUE_SPAWNFD (unset: direct). 1 ok, 0 junk in it (errno EINVAL). */
int qspawn_init(qspawn *sp);

/* Starts argv (argv[0] is the program, found through PATH) of kind QSPAWN_LOCAL or
 * QSPAWN_REMOTE, with fd 0 = msgfd and env[0..nenv) ("NAME=value") added to its
 * environment. The read end of its report pipe (non-blocking, close-on-exec) goes to *rfd,
 * the handle that names it in qspawn_kill and qspawn_reap to *h.
 * Returns 1; 0 if it could not be started (errno; nothing to reap, *rfd not set). */
int qspawn_start(qspawn *sp, char kind, char const *const *argv, char const *const *env,
                 unsigned int nenv, int msgfd, int *rfd, uint32_t *h);

/* The two deliveries: deliver-maildir MAILDIR with SENDER and RECIPIENT (the account
 * address) in its environment, and with key (not NULL) DELIVERY_KEY=key and
 * DELIVERY_ATTEMPT=attempt (doc/deliver-maildir.8: a retry never delivers twice); smtp-send
 * DOMAIN SENDER RCPT... (SENDER "" becomes "<>"). As qspawn_start. */
int qspawn_local(qspawn *sp, int msgfd, char const *maildir, char const *sender,
                 char const *rcpt, char const *key, unsigned int attempt, int *rfd, uint32_t *h);
int qspawn_remote(qspawn *sp, int msgfd, char const *domain, char const *sender,
                  char const *const *rcpts, size_t n, int *rfd, uint32_t *h);

/* Sends sig to the child named h. 1, or 0 (errno). */
int qspawn_kill(qspawn *sp, uint32_t h, int sig);

/* Collects one ended child: 1 (*h, *wstat set), 0 none now, -1 the spawner is gone (EOF or
 * a broken record: queue-run must stop). Call it after SIGCHLD (direct) or when sp->fd is
 * readable (spawner) until it returns 0. */
int qspawn_reap(qspawn *sp, uint32_t *h, int *wstat);

/* A child as its parent sees it */
typedef struct qspawn_child_s qspawn_child;
struct qspawn_child_s {
  uint32_t h;      /* qspawn's handle */
  int fd;          /* the read end of its report pipe; -1 at end of file */
  int exited;      /* qspawn_reap said it ended */
  int wstat;       /* ...with this wait status */
  int timedout;    /* it was killed at killat */
  uint64_t killat; /* when it is killed if still running (seconds since the epoch) */
  stralloc out;    /* its report */
};

/* Fills c for a started child (handle h, report fd rfd). rfd -1: it could not be started
 * (errno): c is an ended child, exit 111, report "unable to run PROG: REASON". 1, or 0 on
 * allocation failure. */
int qspawn_child_init(qspawn_child *c, uint32_t h, int rfd, char const *prog, uint64_t killat);

/* An ended child: reads the rest of its report and closes the pipe (a grandchild that holds
 * it open is not waited for). 1, or 0 on allocation failure. */
int qspawn_child_drain(qspawn_child *c, size_t max);

/* Reads what is available on the report pipe *fd into out (kept up to max bytes, the rest
 * read and dropped); at end of file or error closes it and sets *fd to -1. 1, or 0 on
 * allocation failure. */
int qspawn_readout(int *fd, stralloc *out, size_t max);

/* A local delivery's report: the last non-empty line of out, without "PROG: fatal: ". */
void qspawn_lastline(stralloc const *out, char const **s, size_t *len);

/* smtp-send's report (doc/hacking.md): one line per recipient, in argument order,
 * K "\t" RCPT "\t" REMOTE-MTA "\t" DIAGNOSTIC "\n" with K one of D, T, P. Takes the next
 * line at *p (moving *p past it): 1 if it is the one for rcpt (f[0..4), fl[0..4) the fields),
 * else 0 (no line, or another recipient's, or malformed: no report for rcpt). */
int qspawn_report_line(stralloc const *out, size_t *p, char const *rcpt, char const **f,
                       size_t *fl);

/* ---- queue-spawn's side ---- */

typedef struct qspawn_req_s qspawn_req;
struct qspawn_req_s {
  char kind;
  uint32_t id;
  int sig;             /* QSPAWN_KILL */
  int fd[2];           /* message, report (-1 if none came) */
  char const *env[QSPAWN_ENV_MAX + 1];
  char const *argv[QSPAWN_ARGS_MAX + 1];
  size_t len;          /* bytes of the record in buf (to pass it on as it came) */
  char buf[QSPAWN_REQ_MAX];
};

/* Receives one request record from fd. 1 (r filled; the caller closes r->fd[]), 0 EOF,
 * -1 error (errno; EPROTO for a malformed record, whose fds are closed). */
int qspawn_recv(int fd, qspawn_req *r);

/* Sends one record s[0..len) with nfds (at most 2) descriptors, waiting while the socket is
 * full. 1, or 0 (errno). */
int qspawn_send(int fd, char const *s, size_t len, int const *fds, unsigned int nfds);

/* Sends the end of request id. 1, or 0 (errno). */
int qspawn_send_exit(int fd, uint32_t id, int wstat);

#endif
