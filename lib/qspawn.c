/* qspawn: starting deliveries, directly or through queue-spawn. See qspawn.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/types.h>

#include "qspawn.h"
#include "spawn.h"

int qspawn_init(qspawn *sp)
{
  char const *s = getenv("QUEUE_SPAWNFD");
  unsigned int fd;
  sp->fd = -1;
  sp->nextid = 0;
  if (!s || !*s) return 1;
  if (!uint0_scan(s, &fd) || fcntl((int)fd, F_GETFD) < 0) {
    errno = EINVAL;
    return 0;
  }
  sp->fd = (int)fd;
  if (ndelay_on(sp->fd) < 0 || coe(sp->fd) < 0) return 0;
  return 1;
}

static int start_direct(char kind, char const *const *argv, char const *const *env,
                        unsigned int nenv, int msgfd, int wfd, uint32_t *h)
{
  char const *envp[SPAWN_ENVMAX + 1];
  spawn_fd map[3] = {{0, msgfd}, {kind == QSPAWN_LOCAL ? 2 : 1, wfd}, {1, SPAWN_DEVNULL}};
  pid_t pid;
  if (spawn_env(envp, SPAWN_ENVMAX + 1, env, nenv) < 0) return 0;
  pid = spawn(argv, envp, map, kind == QSPAWN_LOCAL ? 3 : 2);
  if (pid < 0) return 0;
  *h = (uint32_t)pid;
  return 1;
}

int qspawn_send(int fd, char const *s, size_t len, int const *fds, unsigned int nfds)
{
  struct iovec v = {(void *)s, len};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(2 * sizeof(int))];
  } c;
  struct msghdr m;
  ssize_t r;
  memset(&m, 0, sizeof m);
  m.msg_iov = &v;
  m.msg_iovlen = 1;
  if (nfds) {
    memset(&c, 0, sizeof c);
    m.msg_control = c.buf;
    m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    c.h.cmsg_level = SOL_SOCKET;
    c.h.cmsg_type = SCM_RIGHTS;
    c.h.cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(&c.h), fds, nfds * sizeof(int));
  }
  for (;;) {
    r = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (r >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) { /* a full socket: wait for room (the spawner is quick) */
      iopause_fd x = {fd, IOPAUSE_WRITE, 0};
      if (iopause(&x, 1, 0, 0) < 0 && errno != EINTR) return 0;
      continue;
    }
    return 0;
  }
  return (size_t)r == len;
}

static size_t catstr(char *buf, size_t n, size_t max, char const *s)
{
  size_t l = strlen(s) + 1;
  if (n + l > max) return (size_t)-1;
  memcpy(buf + n, s, l);
  return n + l;
}

int qspawn_start(qspawn *sp, char kind, char const *const *argv, char const *const *env,
                 unsigned int nenv, int msgfd, int *rfd, uint32_t *h)
{
  int p[2], ok;
  if (pipecoe(p) < 0) return 0;
  if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) { /* a new pipe end: no other status flag */
    close(p[0]);
    close(p[1]);
    return 0;
  }
  if (sp->fd < 0) ok = start_direct(kind, argv, env, nenv, msgfd, p[1], h);
  else {
    static char buf[QSPAWN_REQ_MAX];
    char fmt[UINT32_FMT];
    size_t n = 0;
    unsigned int i;
    int fds[2] = {msgfd, p[1]};
    if (!++sp->nextid) sp->nextid = 1;
    buf[n++] = kind;
    n = catstr(buf, n, sizeof buf, (fmt[uint32_fmt(fmt, sp->nextid)] = 0, fmt));
    if (n != (size_t)-1) n = catstr(buf, n, sizeof buf, (fmt[uint_fmt(fmt, nenv)] = 0, fmt));
    for (i = 0; i < nenv && n != (size_t)-1; i++) n = catstr(buf, n, sizeof buf, env[i]);
    for (i = 0; argv[i] && n != (size_t)-1; i++) n = catstr(buf, n, sizeof buf, argv[i]);
    if (n == (size_t)-1 || nenv > QSPAWN_ENV_MAX || i > QSPAWN_ARGS_MAX) {
      errno = E2BIG;
      ok = 0;
    } else
      ok = qspawn_send(sp->fd, buf, n, fds, 2);
    if (ok) *h = sp->nextid;
  }
  {
    int e = errno;
    close(p[1]);
    if (!ok) {
      close(p[0]);
      errno = e;
      return 0;
    }
  }
  *rfd = p[0];
  return 1;
}

int qspawn_local(qspawn *sp, int msgfd, char const *maildir, char const *sender,
                 char const *rcpt, char const *key, unsigned int attempt, int *rfd, uint32_t *h)
{
  char const *argv[3] = {QSPAWN_LOCAL_PROG, maildir, 0};
  stralloc e = STRALLOC_ZERO;
  char const *env[4];
  char fmt[UINT_FMT];
  unsigned int n = 0, i;
  size_t pos = 0;
  int r;
  if (!stralloc_cats(&e, "SENDER=") || !stralloc_cats(&e, sender) || !stralloc_0(&e) ||
      !stralloc_cats(&e, "RECIPIENT=") || !stralloc_cats(&e, rcpt) || !stralloc_0(&e) ||
      (key && (!stralloc_cats(&e, "DELIVERY_KEY=") || !stralloc_cats(&e, key) ||
               !stralloc_0(&e) || !stralloc_cats(&e, "DELIVERY_ATTEMPT=") ||
               !stralloc_catb(&e, fmt, uint_fmt(fmt, attempt)) || !stralloc_0(&e)))) {
    stralloc_free(&e);
    return 0;
  }
  for (i = 0; i < (key ? 4U : 2U); i++) {
    env[n++] = e.s + pos;
    pos += strlen(e.s + pos) + 1;
  }
  r = qspawn_start(sp, QSPAWN_LOCAL, argv, env, n, msgfd, rfd, h);
  stralloc_free(&e);
  return r;
}

int qspawn_remote(qspawn *sp, int msgfd, char const *domain, char const *sender,
                  char const *const *rcpts, size_t n, int *rfd, uint32_t *h)
{
  char const **argv = calloc(n + 4, sizeof *argv);
  size_t i;
  int r;
  if (!argv) return 0;
  argv[0] = QSPAWN_REMOTE_PROG;
  argv[1] = domain;
  argv[2] = *sender ? sender : "<>";
  for (i = 0; i < n; i++) argv[3 + i] = rcpts[i];
  r = qspawn_start(sp, QSPAWN_REMOTE, argv, 0, 0, msgfd, rfd, h);
  free(argv);
  return r;
}

int qspawn_kill(qspawn *sp, uint32_t h, int sig)
{
  char buf[2 + UINT32_FMT + UINT_FMT];
  size_t n = 0;
  if (sp->fd < 0) return kill((pid_t)h, sig) == 0;
  buf[n++] = QSPAWN_KILL;
  n += uint32_fmt(buf + n, h);
  buf[n++] = 0;
  n += uint_fmt(buf + n, (unsigned int)sig);
  buf[n++] = 0;
  return qspawn_send(sp->fd, buf, n, 0, 0);
}

int qspawn_reap(qspawn *sp, uint32_t *h, int *wstat)
{
  char buf[64];
  ssize_t r;
  uint32_t id;
  unsigned int w;
  size_t k;
  if (sp->fd < 0) {
    pid_t pid = wait_nohang(wstat);
    if (pid <= 0) return 0;
    *h = (uint32_t)pid;
    return 1;
  }
  do r = recv(sp->fd, buf, sizeof buf - 1, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN ? 0 : -1;
  if (!r) return -1;
  buf[r] = 0;
  if (buf[0] != 'X' || !(k = uint32_scan(buf + 1, &id)) || buf[1 + k] ||
      (size_t)r < k + 3 || !uint0_scan(buf + k + 2, &w)) {
    errno = EPROTO;
    return -1;
  }
  *h = id;
  *wstat = (int)w;
  return 1;
}

int qspawn_readout(int *fd, stralloc *out, size_t max)
{
  char buf[4096];
  for (;;) {
    ssize_t r = read(*fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return 1;
    if (r <= 0) {
      close(*fd);
      *fd = -1;
      return 1;
    }
    if (out->len + (size_t)r <= max && !stralloc_catb(out, buf, (size_t)r)) return 0;
  }
}

int qspawn_child_init(qspawn_child *c, uint32_t h, int rfd, char const *prog, uint64_t killat)
{
  char const *e = rfd < 0 ? strerror(errno) : 0;
  c->h = h;
  c->fd = rfd;
  c->exited = rfd < 0;
  c->wstat = rfd < 0 ? 111 << 8 : 0;
  c->timedout = 0;
  c->killat = killat;
  c->out.len = 0;
  return !e || (stralloc_cats(&c->out, "unable to run ") && stralloc_cats(&c->out, prog) &&
                stralloc_cats(&c->out, ": ") && stralloc_cats(&c->out, e));
}

int qspawn_child_drain(qspawn_child *c, size_t max)
{
  if (c->fd >= 0 && !qspawn_readout(&c->fd, &c->out, max)) return 0;
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  return 1;
}

void qspawn_lastline(stralloc const *out, char const **s, size_t *len)
{
  size_t e = out->len, b;
  char const *c;
  while (e && (out->s[e - 1] == '\n' || out->s[e - 1] == '\r' || out->s[e - 1] == ' ')) e--;
  for (b = e; b && out->s[b - 1] != '\n'; b--)
    ;
  *s = out->s ? out->s + b : "";
  *len = e - b;
  c = *len ? memchr(*s, ':', *len) : 0;
  if (c && *len > (size_t)(c - *s) + 9 && !strncmp(c, ": fatal: ", 9)) {
    *len -= (size_t)(c + 9 - *s);
    *s = c + 9;
  }
}

int qspawn_report_line(stralloc const *out, size_t *p, char const *rcpt, char const **f,
                       size_t *fl)
{
  char const *line, *nl;
  size_t e, q = 0, nf = 0;
  if (*p >= out->len || !(nl = memchr(out->s + *p, '\n', out->len - *p))) return 0;
  line = out->s + *p;
  e = (size_t)(nl - line);
  *p += e + 1;
  while (nf < 4) {
    char const *tab = nf < 3 ? memchr(line + q, '\t', e - q) : 0;
    size_t end = tab ? (size_t)(tab - line) : e;
    f[nf] = line + q;
    fl[nf++] = end - q;
    if (!tab) break;
    q = end + 1;
  }
  return nf == 4 && fl[0] == 1 && (f[0][0] == 'D' || f[0][0] == 'T' || f[0][0] == 'P') &&
         fl[1] == strlen(rcpt) && !memcmp(f[1], rcpt, fl[1]);
}

/* ---- queue-spawn's side ---- */

static void closefds(qspawn_req *r)
{
  if (r->fd[0] >= 0) close(r->fd[0]);
  if (r->fd[1] >= 0) close(r->fd[1]);
  r->fd[0] = r->fd[1] = -1;
}

int qspawn_recv(int fd, qspawn_req *r)
{
  struct iovec v = {r->buf, sizeof r->buf - 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(4 * sizeof(int))];
  } c;
  struct msghdr m;
  struct cmsghdr *ch;
  ssize_t n;
  size_t pos, k;
  unsigned int nenv, i;
  memset(&m, 0, sizeof m);
  m.msg_iov = &v;
  m.msg_iovlen = 1;
  m.msg_control = c.buf;
  m.msg_controllen = sizeof c.buf;
  r->fd[0] = r->fd[1] = -1;
  do n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  if (!n) return 0;
  for (ch = CMSG_FIRSTHDR(&m); ch; ch = CMSG_NXTHDR(&m, ch))
    if (ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS) {
      size_t nf = (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int), j;
      int got[4];
      if (nf > 4) nf = 4;
      memcpy(got, CMSG_DATA(ch), nf * sizeof(int));
      for (j = 0; j < nf; j++) {
        if (j < 2 && r->fd[j] < 0) r->fd[j] = got[j];
        else close(got[j]);
      }
    }
  r->buf[n] = 0;
  if ((m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n < 3) goto bad;
  r->kind = r->buf[0];
  k = uint32_scan(r->buf + 1, &r->id);
  if (!k || r->buf[1 + k]) goto bad;
  pos = k + 2;
  if (r->kind == QSPAWN_KILL) {
    unsigned int sig;
    if (r->fd[0] >= 0 || pos >= (size_t)n || !uint0_scan(r->buf + pos, &sig) || sig > 64)
      goto bad;
    r->sig = (int)sig;
    return 1;
  }
  if ((r->kind != QSPAWN_LOCAL && r->kind != QSPAWN_REMOTE) || r->fd[0] < 0 || r->fd[1] < 0)
    goto bad;
  k = uint_scan(r->buf + pos, &nenv);
  if (!k || r->buf[pos + k] || nenv > QSPAWN_ENV_MAX) goto bad;
  pos += k + 1;
  for (i = 0; i < nenv; i++) {
    if (pos >= (size_t)n) goto bad;
    r->env[i] = r->buf + pos;
    pos += strlen(r->buf + pos) + 1;
  }
  r->env[i] = 0;
  for (i = 0; pos < (size_t)n && i < QSPAWN_ARGS_MAX; i++) {
    r->argv[i] = r->buf + pos;
    pos += strlen(r->buf + pos) + 1;
  }
  r->argv[i] = 0;
  if (!i || pos != (size_t)n) goto bad;
  r->len = (size_t)n;
  return 1;
bad:
  closefds(r);
  errno = EPROTO;
  return -1;
}

int qspawn_send_exit(int fd, uint32_t id, int wstat)
{
  char buf[3 + UINT32_FMT + UINT_FMT];
  size_t n = 0;
  buf[n++] = 'X';
  n += uint32_fmt(buf + n, id);
  buf[n++] = 0;
  n += uint_fmt(buf + n, (unsigned int)wstat);
  buf[n++] = 0;
  return qspawn_send(fd, buf, n, 0, 0);
}
