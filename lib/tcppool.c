/* tcppool: see tcppool.h */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/selfpipe.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "cdbfile.h"
#include "pagedrop.h"
#include "spawn.h"
#include "tcppool.h"

extern char **environ;

/* ---- the pool ---- */

int tcppool_listen(char const *ip, uint16_t port, unsigned int backlog)
{
  struct sockaddr_storage ss;
  socklen_t len;
  struct timeval tv = {TCPPOOL_WAKE, 0};
  int one = 1, fd, e;
  memset(&ss, 0, sizeof ss);
  if (!strcmp(ip, "0")) ip = "0.0.0.0";
  if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
    ((struct sockaddr_in *)&ss)->sin_family = AF_INET;
    ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    len = sizeof(struct sockaddr_in);
  } else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
    ((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    len = sizeof(struct sockaddr_in6);
  } else return (errno = EINVAL, -1);
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
      bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, (int)backlog) < 0) {
    e = errno;
    close(fd);
    return (errno = e, -1);
  }
  return fd;
}

typedef struct worker_s worker;
struct worker_s {
  pid_t pid;
  int busy;
  tain started;
};

static worker *w;
static unsigned int nw, nbusy;
static int statr = -1;

/* NAME=VALUE (or NAME alone: unset) appended to sa, NUL-terminated. */
static int addvar(stralloc *sa, char const *name, char const *value)
{
  return stralloc_cats(sa, name) &&
         (!value || (stralloc_catb(sa, "=", 1) && stralloc_cats(sa, value))) && stralloc_0(sa);
}

static int addnum(stralloc *sa, char const *name, unsigned int u)
{
  char num[UINT_FMT];
  num[uint_fmt(num, u)] = 0;
  return addvar(sa, name, num);
}

static pid_t start_worker(int lfd, int statw, tcppool_conf const *c)
{
  static stralloc m = STRALLOC_ZERO;
  static char const *mp[6];
  char const *envp[SPAWN_ENVMAX + 1];
  spawn_fd map[4] = {{0, SPAWN_DEVNULL}, {1, SPAWN_DEVNULL}, {TCPPOOL_LISTENFD, lfd},
                     {TCPPOOL_STATUSFD, statw}};
  if (!m.len) { /* the workers' settings: the same for each, made once */
    size_t i, k = 0;
    if (!addnum(&m, "TCPPOOL_FD", TCPPOOL_LISTENFD) ||
        !addnum(&m, "TCPPOOL_STATUS", TCPPOOL_STATUSFD) ||
        !addnum(&m, "TCPPOOL_MAXUSE", c->maxuse) || !addnum(&m, "TCPPOOL_IDLE", c->idle) ||
        !addvar(&m, "TCPPOOL_RULES", c->rules) ||
        !addvar(&m, "TCPPOOL_LOCALHOST", c->localhost))
      return -1;
    for (i = 0; i < m.len && k < 6; i += strlen(m.s + i) + 1) mp[k++] = m.s + i;
  }
  if (spawn_env(envp, SPAWN_ENVMAX + 1, mp, 6) < 0) return -1;
  return spawn(c->argv, envp, map, 4);
}

static void reap(tcppool_conf const *c, tain *throttle)
{
  int wstat;
  pid_t pid;
  while ((pid = wait_nohang(&wstat)) > 0) {
    unsigned int i;
    for (i = 0; i < nw; i++)
      if (w[i].pid == pid) break;
    if (i == nw) continue;
    if (WIFSIGNALED(wstat) || WEXITSTATUS(wstat)) {
      char a[PID_FMT], b[UINT_FMT];
      a[pid_fmt(a, pid)] = 0;
      b[uint_fmt(b, WIFSIGNALED(wstat) ? (unsigned int)WTERMSIG(wstat)
                                       : (unsigned int)WEXITSTATUS(wstat))] = 0;
      strerr_warnw("worker ", a, WIFSIGNALED(wstat) ? " killed by signal " : " exited ", b,
                   w[i].busy ? " in a session" : "");
      /* one that dies as it starts (a broken program): one start a second, no storm */
      {
        tain t;
        tain_addsec(&t, &w[i].started, 1);
        if (tain_less(&STAMP, &t) && !w[i].busy) tain_addsec_g(throttle, 1);
      }
    } else if (c->verbose) {
      char a[PID_FMT];
      a[pid_fmt(a, pid)] = 0;
      strerr_warni("worker ", a, " ended");
    }
    if (w[i].busy) nbusy--;
    w[i] = w[--nw];
  }
}

/* The workers' records: 'b' or 'i' and the pid (4 octets, native order), written whole. */
static void status(void)
{
  char buf[5 * 128];
  ssize_t r = read(statr, buf, sizeof buf);
  ssize_t k;
  if (r <= 0) return;
  for (k = 0; k + 5 <= r; k += 5) {
    uint32_t pid;
    unsigned int i;
    memcpy(&pid, buf + k + 1, 4);
    for (i = 0; i < nw; i++)
      if (w[i].pid == (pid_t)pid) break;
    if (i == nw) continue;
    if (buf[k] == 'b' && !w[i].busy) { w[i].busy = 1; nbusy++; }
    else if (buf[k] == 'i' && w[i].busy) { w[i].busy = 0; nbusy--; }
  }
}

void tcppool_run(int lfd, tcppool_conf const *c)
{
  int sp[2], sfd;
  tain throttle = TAIN_ZERO;
  sigset_t set;
  w = malloc((c->max ? c->max : 1) * sizeof *w);
  if (!w) strerr_diefu1sys(111, "allocate");
  if (pipe(sp) < 0 || fcntl(sp[0], F_SETFD, FD_CLOEXEC) < 0 ||
      fcntl(sp[1], F_SETFD, FD_CLOEXEC) < 0 || ndelay_on(sp[0]) < 0)
    strerr_diefu1sys(111, "make the status pipe");
  statr = sp[0];
  sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "init the self-pipe");
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  tain_now_set_stopwatch_g();
  /* The pool runs a small loop for as long as the service: the text and data pages the
   * start-up touched (option parsing, the bind, glibc's init) are given back once; only the
   * loop's own pages come back (a static program shares its pages with nobody). */
  pagedrop_poll(0, 0, 0);
  pagedrop_stack();
  for (;;) {
    iopause_fd x[2] = {{sfd, IOPAUSE_READ, 0}, {statr, IOPAUSE_READ, 0}};
    tain deadline = TAIN_INFINITE;
    int r;
    tain_now_g();
    while (nw < c->max && (nw < c->prefork || nbusy == nw) && !tain_less(&STAMP, &throttle)) {
      pid_t pid = start_worker(lfd, sp[1], c);
      if (pid < 0) {
        if (errno == ENOENT || errno == EACCES) strerr_diefu2sys(111, "run ", c->argv[0]);
        strerr_warnwu1sys("start a worker");
        tain_addsec_g(&throttle, 1);
        break;
      }
      w[nw].pid = pid;
      w[nw].busy = 0;
      w[nw].started = STAMP;
      nw++;
    }
    if (nw < c->max && (nw < c->prefork || nbusy == nw)) deadline = throttle;
    r = iopause_g(x, 2, &deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "iopause");
    }
    if (x[1].revents) status();
    if (x[0].revents) {
      int sig;
      while ((sig = selfpipe_read()) > 0) {
        if (sig == SIGCHLD) { tain_now_g(); reap(c, &throttle); }
        else {
          unsigned int i;
          for (i = 0; i < nw; i++) kill(w[i].pid, SIGTERM);
          _exit(0);
        }
      }
    }
  }
}

/* ---- a worker ---- */

static int lfd = -1, statw = -1;
static unsigned int maxuse = 100, idle = 60, used;
static pid_t ppid;
static char const *localhost;
static cdbfile rules = CDBFILE_INIT(0);
static char const **base;        /* the environment the worker started with */
static size_t nbase;
static char const **envv;        /* a connection's environment */
static size_t envmax;
static stralloc mods = STRALLOC_ZERO;
static volatile sig_atomic_t term;

static void on_term(int sig)
{
  (void)sig;
  term = 1;
  if (lfd >= 0) close(lfd); /* a restarted pool binds the port while this session ends */
  lfd = -1;
}

static unsigned int uenv(char const *name, unsigned int def)
{
  char const *x = getenv(name);
  unsigned int u;
  return x && uint0_scan(x, &u) ? u : def;
}

int tcppool_worker(void)
{
  struct sigaction sa;
  char const *x = getenv("TCPPOOL_FD");
  unsigned int u;
  size_t i, n;
  if (!x || !uint0_scan(x, &u)) return 0;
  lfd = (int)u;
  statw = (int)uenv("TCPPOOL_STATUS", (unsigned int)-1);
  maxuse = uenv("TCPPOOL_MAXUSE", 100);
  idle = uenv("TCPPOOL_IDLE", 60);
  x = getenv("TCPPOOL_RULES");
  if (x && *x) rules.rel = x;
  x = getenv("TCPPOOL_LOCALHOST");
  localhost = x && *x ? x : 0;
  coe(lfd);
  if (statw >= 0) coe(statw);
  ppid = getppid();
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = &on_term; /* no SA_RESTART: a blocked accept() returns */
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGTERM, &sa, 0) < 0) strerr_diefu1sys(111, "catch SIGTERM");
  for (n = 0; environ[n]; n++) ;
  base = malloc((n + 1) * sizeof *base);
  if (!base) strerr_diefu1sys(111, "allocate");
  for (i = 0; i < n; i++)
    if (strncmp(environ[i], "TCPPOOL_", 8)) base[nbase++] = environ[i];
  base[nbase] = 0;
  environ = (char **)base; /* the TCPPOOL_* variables are gone for the program too */
  return 1;
}

static void report(char what)
{
  char rec[5];
  uint32_t pid = (uint32_t)getpid();
  if (statw < 0) return;
  rec[0] = what;
  memcpy(rec + 1, &pid, 4);
  if (write(statw, rec, 5) < 0) {} /* the pool gone: noticed by getppid */
}

static int addenv(char const *name, char const *value)
{
  return addvar(&mods, name, value);
}

/* The length of the name of NAME=VALUE (or NAME) at s. */
static size_t namelen(char const *s)
{
  char const *e = strchr(s, '=');
  return e ? (size_t)(e - s) : strlen(s);
}

/* environ := the base environment modified by mods (later entries win; NAME alone unsets). */
static int setenviron(void)
{
  size_t nm = 0, i, k = 0;
  for (i = 0; i < mods.len; i += strlen(mods.s + i) + 1) nm++;
  if (nbase + nm + 1 > envmax) {
    char const **v = realloc(envv, (nbase + nm + 1) * sizeof *v);
    if (!v) return 0;
    envv = v;
    envmax = nbase + nm + 1;
  }
  for (i = 0; i < nbase; i++) {
    size_t n = namelen(base[i]), j;
    int found = 0;
    for (j = 0; j < mods.len && !found; j += strlen(mods.s + j) + 1)
      found = namelen(mods.s + j) == n && !memcmp(mods.s + j, base[i], n);
    if (!found) envv[k++] = base[i];
  }
  for (i = 0; i < mods.len; i += strlen(mods.s + i) + 1) {
    size_t n = namelen(mods.s + i), j, later = 0;
    for (j = i + strlen(mods.s + i) + 1; j < mods.len && !later; j += strlen(mods.s + j) + 1)
      later = namelen(mods.s + j) == n && !memcmp(mods.s + j, mods.s + i, n);
    if (!later && mods.s[i + n] == '=') envv[k++] = mods.s + i;
  }
  envv[k] = 0;
  environ = (char **)envv;
  return 1;
}

/* The rules for ip: 1 allow (their variables added to mods), 0 deny, -1 error. */
static int apply_rules(char const *ip)
{
  char const *v = 0;
  size_t vn = 0, n = strlen(ip);
  int r = 0;
  if (!rules.rel) return 1;
  if (!cdbfile_fresh(&rules)) return -1;
  if (rules.open == CDBFILE_DENIED) return (errno = EACCES, -1);
  /* as tcpserver: the address, its prefixes that end with '.' or ':', then "" */
  r = cdbfile_get(&rules, ip, n, &v, &vn);
  for (; !r && n; n--)
    if (ip[n - 1] == '.' || ip[n - 1] == ':') r = cdbfile_get(&rules, ip, n, &v, &vn);
  if (!r) r = cdbfile_get(&rules, ip, 0, &v, &vn);
  if (r < 0) return -1;
  if (!r) return 1;
  while (vn) {
    size_t k = strnlen(v, vn);
    if (k == vn) break;
    if (v[0] == 'D') return 0;
    if (v[0] == '+' && memchr(v, '=', k) && !stralloc_catb(&mods, v + 1, k)) return -1;
    v += k + 1;
    vn -= k + 1;
  }
  return 1;
}

/* Address and port of a socket name, as tcpserver writes them: v4 ("1.2.3.4", and
 * "::ffff:1.2.3.4" for the TCP6 twin) or v6. */
static void fmtaddr(struct sockaddr_storage const *ss, char *ip, char *ip6, char *port)
{
  uint16_t p;
  if (ss->ss_family == AF_INET6) {
    struct sockaddr_in6 const *s6 = (struct sockaddr_in6 const *)ss;
    p = ntohs(s6->sin6_port);
    inet_ntop(AF_INET6, &s6->sin6_addr, ip6, INET6_ADDRSTRLEN);
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
      inet_ntop(AF_INET, s6->sin6_addr.s6_addr + 12, ip, INET6_ADDRSTRLEN);
    else strcpy(ip, ip6);
  } else {
    struct sockaddr_in const *s4 = (struct sockaddr_in const *)ss;
    p = ntohs(s4->sin_port);
    inet_ntop(AF_INET, &s4->sin_addr, ip, INET6_ADDRSTRLEN);
    strcpy(ip6, "::ffff:");
    strcat(ip6, ip);
  }
  port[uint16_fmt(port, p)] = 0;
}

/* 1 a connection on fd, 0 time to go, -1 none yet (EAGAIN, EINTR, ECONNABORTED) */
static int take(int *fd, unsigned int *idlefor)
{
  if (term || lfd < 0 || used >= maxuse) return 0;
  *fd = accept(lfd, 0, 0);
  if (*fd >= 0) return 1;
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    *idlefor += TCPPOOL_WAKE;
    if ((idle && *idlefor >= idle) || getppid() != ppid) return 0;
    return -1;
  }
  if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) return -1;
  if (!term) strerr_warnwu1sys("accept");
  return 0;
}

int tcppool_next(void)
{
  unsigned int idlefor = 0;
  for (;;) {
    struct sockaddr_storage l, r;
    socklen_t ll = sizeof l, rl = sizeof r;
    char lip[INET6_ADDRSTRLEN], lip6[INET6_ADDRSTRLEN], rip[INET6_ADDRSTRLEN],
      rip6[INET6_ADDRSTRLEN], lport[UINT16_FMT], rport[UINT16_FMT];
    struct timeval tv = {0, 0};
    int fd, k = take(&fd, &idlefor), six;
    if (!k) return 0;
    if (k < 0) continue;
    used++;
    report('b');
    if (getsockname(fd, (struct sockaddr *)&l, &ll) < 0 ||
        getpeername(fd, (struct sockaddr *)&r, &rl) < 0) {
      close(fd);
      report('i');
      continue;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* the listener's, inherited */
    fmtaddr(&l, lip, lip6, lport);
    fmtaddr(&r, rip, rip6, rport);
    six = r.ss_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&r)->sin6_addr);
    mods.len = 0;
    if (!addenv("PROTO", six ? "TCP6" : "TCP") || !addenv("TCPLOCALIP", lip) ||
        !addenv("TCPLOCALPORT", lport) || !addenv("TCPREMOTEIP", rip) ||
        !addenv("TCPREMOTEPORT", rport) || !addenv("TCP6LOCALIP", lip6) ||
        !addenv("TCP6LOCALPORT", lport) || !addenv("TCP6REMOTEIP", rip6) ||
        !addenv("TCP6REMOTEPORT", rport) || !addenv("TCPREMOTEHOST", 0) ||
        !addenv("TCPREMOTEINFO", 0) ||
        (localhost && (!addenv("TCPLOCALHOST", localhost) ||
                       !addenv("TCP6LOCALHOST", localhost))))
      strerr_diefu1sys(111, "allocate");
    k = apply_rules(rip);
    if (k <= 0) {
      if (k < 0) strerr_warnwu3sys("read ", rules.rel, " (connection refused)");
      else strerr_warni("tcp-rules deny ip=", rip, " port=", rport);
      close(fd);
      report('i');
      continue;
    }
    if (!setenviron()) strerr_diefu1sys(111, "allocate");
    if (fd_copy(0, fd) < 0 || fd_copy(1, fd) < 0) strerr_diefu1sys(111, "move the connection");
    close(fd);
    return 1;
  }
}

void tcppool_done(void)
{
  int n = open("/dev/null", O_RDWR);
  if (n < 0 || fd_copy(0, n) < 0 || fd_copy(1, n) < 0) strerr_diefu1sys(111, "open /dev/null");
  close(n);
  report('i');
}
