/* tcppool: a TCP service served by a pool of long-lived workers, not by a process per
 * connection (tcp-pool(8) is the pool's program; smtp-receive is its first worker).
 *
 * The pool (tcppool_listen, tcppool_run) binds the port (as root, before it drops to the
 * service's uid), then keeps workers: each is the service's program, started with spawn()
 * (lib/spawn), with the listening socket on fd 3, a status pipe on fd 4, fds 0 and 1 on
 * /dev/null, and TCPPOOL_* in its environment (TCPPOOL_FD, TCPPOOL_STATUS, TCPPOOL_MAXUSE,
 * TCPPOOL_IDLE, TCPPOOL_RULES, TCPPOOL_LOCALHOST). The workers accept() themselves, one
 * connection at a time: the kernel gives each connection to one blocked worker (no fork, no
 * exec per connection). The pool starts `prefork` workers, one more whenever none is idle,
 * never more than `max` (so at most max sessions at once; the others wait in the listen
 * backlog, as under tcpserver -c), and replaces the ones that end. A worker ends after
 * `maxuse` connections, after `idle` seconds without one, on any error of its program, and
 * when the pool is gone; SIGTERM to the pool is passed to every worker, and a worker then
 * finishes the session it holds (if any) and exits, its copy of the listening socket closed
 * at once so that a restarted service can bind again.
 *
 * The worker's side (tcppool_worker, tcppool_next, tcppool_done) gives the program what
 * tcpserver -R -H gives it, per connection: the connection on fds 0 and 1; PROTO,
 * TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST (TCPPOOL_LOCALHOST, as tcpserver -l), TCPREMOTEIP,
 * TCPREMOTEPORT and their TCP6* twins, TCPREMOTEHOST and TCPREMOTEINFO unset (an
 * IPv4-mapped address is given as IPv4, as tcpserver does); and tcprules(1)'s access
 * database (TCPPOOL_RULES, a path relative to MAILROOT, read through lib/cdbfile at each
 * connection, so a rebuilt database applies at once): the rules for TCPREMOTEIP, for each of
 * its prefixes that ends with '.' or ':', then for "" (the first found wins; no
 * info@ and =host rules, as with -R -H); 'D' refuses the connection (closed before a byte is
 * written, logged "tcp-rules deny ip=... port=..."), "+NAME=VALUE" sets a variable. A missing
 * database allows everything; an unreadable one refuses the connection (as tcpserver).
 * The environment of every connection is rebuilt from the one the worker started with: what
 * a session set or unset (SSL_*, TLS_ENGINE after STARTTLS, the rules' variables) does not
 * reach the next one. The program must reset its own state between sessions.
 */
#ifndef PILLARBOX_TCPPOOL_H
#define PILLARBOX_TCPPOOL_H

#include <stdint.h>
#include <skalibs/gccattributes.h>

#define TCPPOOL_LISTENFD 3 /* the worker's fd of the listening socket */
#define TCPPOOL_STATUSFD 4 /* the worker's end of the status pipe */
#define TCPPOOL_MAX 1000   /* workers at most */
#define TCPPOOL_WAKE 5     /* seconds: an idle worker wakes this often to look at the pool */

typedef struct tcppool_conf_s tcppool_conf;
struct tcppool_conf_s {
  unsigned int max;       /* workers at most: sessions at once (tcpserver -c) */
  unsigned int prefork;   /* workers kept even when idle */
  unsigned int maxuse;    /* connections a worker serves before it exits */
  unsigned int idle;      /* seconds an idle worker waits before it exits */
  char const *rules;      /* tcprules database relative to MAILROOT, or 0 */
  char const *localhost;  /* TCPLOCALHOST, or 0 */
  int verbose;            /* log the workers' starts and ends */
  char const *const *argv; /* the worker program */
};

/* A listening TCP socket on ip ("0", an IPv4 or IPv6 address) and port, close-on-exec,
 * blocking, SO_REUSEADDR, an accept timeout of TCPPOOL_WAKE. The fd, or -1 (errno). */
int tcppool_listen(char const *ip, uint16_t port, unsigned int backlog);

/* The pool on lfd: never returns (exit 0 after SIGTERM, 111 when no worker can be
 * started). */
void tcppool_run(int lfd, tcppool_conf const *c) gccattr_noreturn;

/* In the program: 1 if it runs as a pool worker (TCPPOOL_FD set; the variables are read
 * and removed, SIGTERM caught), 0 if not (a plain UCSPI run: one session on fds 0 and 1). */
int tcppool_worker(void);

/* Waits for the next connection that the rules allow and puts it on fds 0 and 1 with its
 * environment. 1, or 0 when the worker must exit (max use reached, idle, SIGTERM, the pool
 * gone, an error: logged). */
int tcppool_next(void);

/* The session is over: the connection closed (fds 0 and 1 back on /dev/null), the pool
 * told that this worker is idle again. */
void tcppool_done(void);

#endif
