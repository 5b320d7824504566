/* inject: see inject.h */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "control.h"
#include "inject.h"
#include "spawn.h"

#define ARGV_MAX 32

static void zero(injector *j)
{
  j->mode = 0;
  j->pid = 0;
  j->msgfd = j->envfd = j->idfd = j->msgw = j->envw = j->pidfd = j->sock = -1;
  j->broken = j->idclosed = j->reaped = j->wstat = j->early = 0;
  j->idlen = j->blen = j->rlen = 0;
}

static void closeall(injector *j)
{
  int *fds[7] = {&j->msgfd, &j->envfd, &j->idfd, &j->msgw, &j->envw, &j->pidfd, &j->sock};
  unsigned int i;
  for (i = 0; i < 7; i++)
    if (*fds[i] >= 0) {
      fd_close(*fds[i]);
      *fds[i] = -1;
    }
}

static void deadline(injector const *j, tain *d)
{
  tain_now_g();
  tain_addsec_g(d, (int)j->timeout);
}

/* ---- choosing the way in ---- */

/* May we run queue-inject ourselves? When we own MAILROOT/queue (one uid for everything), or
 * are root (queue-inject then gives its file to the queue's owner: lib/queue). */
static int owns_queue(void)
{
  stralloc q = STRALLOC_ZERO;
  struct stat st;
  int r;
  if (!mailroot_path(&q, "queue")) return 0;
  r = stat(q.s, &st) == 0 && (!geteuid() || (st.st_uid == geteuid() && access(q.s, W_OK) == 0));
  stralloc_free(&q);
  return r;
}

static int sock_connect(char const *path)
{
  struct sockaddr_un sun;
  int s;
  if (strlen(path) >= sizeof sun.sun_path) return (errno = ENAMETOOLONG, -1);
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, strlen(path));
  s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  if (connect(s, (struct sockaddr *)&sun, sizeof sun) < 0) {
    int e = errno;
    fd_close(s);
    errno = e;
    return -1;
  }
  if (fcntl(s, F_SETFL, O_NONBLOCK) < 0) { /* a new socket has no other status flag */
    int e = errno;
    fd_close(s);
    errno = e;
    return -1;
  }
  return s;
}

/* ---- socket mode ---- */

/* Sends the pieces v[0..n) in as few system calls as the socket takes (a netstring's
 * length, its bytes and its comma go out together); waits only when the socket is full. */
static void sock_sendv(injector *j, struct iovec *v, unsigned int n)
{
  while (!j->broken && n) {
    struct msghdr m;
    ssize_t r;
    memset(&m, 0, sizeof m);
    m.msg_iov = v;
    m.msg_iovlen = n;
    r = sendmsg(j->sock, &m, MSG_NOSIGNAL);
    if (r < 0) {
      iopause_fd x = {j->sock, IOPAUSE_WRITE, 0};
      tain d;
      if (errno == EINTR) continue;
      if (errno != EAGAIN) { j->broken = 1; break; }
      deadline(j, &d);
      r = iopause_g(&x, 1, &d);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) j->broken = 1;
      continue;
    }
    while (n && (size_t)r >= v->iov_len) {
      r -= (ssize_t)v->iov_len;
      v++;
      n--;
    }
    if (n) {
      v->iov_base = (char *)v->iov_base + r;
      v->iov_len -= (size_t)r;
    }
  }
}

/* The netstring of s[0..n) into v[0..3) (hdr: its length, SIZE_FMT + 1 bytes). */
static void netstring_iov(struct iovec *v, char *hdr, char const *s, size_t n)
{
  size_t h = size_fmt(hdr, n);
  hdr[h++] = ':';
  v[0] = (struct iovec){hdr, h};
  v[1] = (struct iovec){(char *)s, n};
  v[2] = (struct iovec){(char *)",", 1};
}

static void sock_netstring(injector *j, char const *s, size_t n)
{
  char hdr[SIZE_FMT + 1];
  struct iovec v[3];
  netstring_iov(v, hdr, s, n);
  sock_sendv(j, v, 3);
}

static void sock_flush(injector *j)
{
  if (j->blen) sock_netstring(j, j->buf, j->blen);
  j->blen = 0;
}

static int cat_fact(stralloc *sa, char const *name, char const *value)
{
  size_t i, n;
  if (!value || !*value) return 1;
  n = strlen(value);
  if (n > 255) n = 255;
  if (!stralloc_cats(sa, name) || !stralloc_catb(sa, "=", 1)) return 0;
  for (i = 0; i < n; i++) {
    char c = value[i];
    if ((unsigned char)c < 32 || c == 127) c = '?';
    if (!stralloc_catb(sa, &c, 1)) return 0;
  }
  return stralloc_catb(sa, "\n", 1);
}

static int sock_start(injector *j, char const *path, inject_facts const *f)
{
  j->sock = sock_connect(path);
  if (j->sock < 0) return 0;
  j->mode = INJECT_SOCKET;
  if (f) {
    stralloc sa = STRALLOC_ZERO;
    int ok = cat_fact(&sa, "service", f->service) && cat_fact(&sa, "ip", f->ip) &&
             cat_fact(&sa, "helo", f->helo) && cat_fact(&sa, "user", f->user) &&
             cat_fact(&sa, "tls", f->tls) && cat_fact(&sa, "relay", f->relay ? "1" : 0);
    if (!ok || sa.len > INJECT_FACTS_MAX) {
      stralloc_free(&sa);
      closeall(j);
      return (errno = ok ? EINVAL : ENOMEM, 0);
    }
    {
      char hdr[SIZE_FMT + 1];
      struct iovec v[4] = {{(char *)"S", 1}};
      netstring_iov(v + 1, hdr, sa.s, sa.len);
      sock_sendv(j, v, 4);
    }
    stralloc_free(&sa);
    j->early = 2;
  }
  return 1;
}

/* Reads one line from the server into buf (at most max bytes), within the deadline.
 * Returns its length without the LF, or -1 (nothing, EOF, timeout). */
static long sock_line(injector *j, char *buf, size_t max, tain const *d)
{
  for (;;) {
    char *nl = memchr(j->rbuf, '\n', j->rlen);
    ssize_t r;
    if (nl) {
      size_t l = (size_t)(nl - j->rbuf);
      if (l > max) return -1;
      memcpy(buf, j->rbuf, l);
      j->rlen -= l + 1;
      memmove(j->rbuf, nl + 1, j->rlen);
      return (long)l;
    }
    if (j->rlen >= sizeof j->rbuf) return -1; /* a line longer than any answer */
    /* what has come already is read without a wait; a short line is one read */
    r = read(j->sock, j->rbuf + j->rlen, sizeof j->rbuf - j->rlen);
    if (r > 0) {
      j->rlen += (size_t)r;
      continue;
    }
    if (!r) return -1;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -1;
    {
      iopause_fd x = {j->sock, IOPAUSE_READ, 0};
      r = iopause_g(&x, 1, d);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return -1;
    }
  }
}

static void copy_id(stralloc *id, char const *s, size_t n)
{
  size_t i;
  for (i = 0; i < n && s[i] > 32 && s[i] < 127; i++)
    ;
  id->len = 0;
  stralloc_catb(id, s, i);
}

/* Reads the server's answer "CODE ID\n" (after an "I" line not read yet). */
static int sock_commit(injector *j, char const *env, size_t envlen, stralloc *id)
{
  char ans[64 + INJECT_ID_MAX];
  long al;
  size_t n;
  unsigned int code;
  tain d;
  {
    /* the last chunk, the end "0:," and the envelope: one system call */
    char h1[SIZE_FMT + 1], h2[SIZE_FMT + 1];
    struct iovec v[7];
    unsigned int n = 0;
    if (j->blen) {
      netstring_iov(v, h1, j->buf, j->blen);
      n = 3;
    }
    v[n++] = (struct iovec){(char *)"0:,", 3};
    netstring_iov(v + n, h2, env, envlen);
    sock_sendv(j, v, n + 3);
    j->blen = 0;
  }
  if (j->broken) { closeall(j); return 111; }
  shutdown(j->sock, SHUT_WR);
  /* queue-inject fsyncs: give the answer longer than one I/O wait */
  tain_now_g();
  tain_addsec_g(&d, (int)(j->timeout > 60 ? j->timeout : 60) * 4);
  do al = sock_line(j, ans, sizeof ans, &d);
  while (al >= 0 && ans[0] == 'I');
  closeall(j);
  if (al <= 0) return 111;
  n = uint_scan(ans, &code);
  if (!n || (n < (size_t)al && ans[n] != ' ')) return 111; /* no answer */
  id->len = 0;
  if (n < (size_t)al) copy_id(id, ans + n + 1, (size_t)al - n - 1);
  return code > 255 ? 111 : (int)code;
}

/* ---- chain mode ---- */

static int chain_start(injector *j, char const *cmd)
{
  stralloc c = STRALLOC_ZERO;
  char const *argv[ARGV_MAX + 1];
  unsigned int argc = 0;
  size_t i;
  int pm[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1}, e = 0;
  if (!stralloc_cats(&c, cmd) || !stralloc_0(&c)) return 0;
  for (i = 0; i + 1 < c.len && argc < ARGV_MAX;) {
    while (c.s[i] == ' ' || c.s[i] == '\t' || c.s[i] == '\n') c.s[i++] = 0;
    if (!c.s[i]) break;
    argv[argc++] = c.s + i;
    while (c.s[i] && c.s[i] != ' ' && c.s[i] != '\t' && c.s[i] != '\n') i++;
  }
  argv[argc] = 0;
  if (!argc) { stralloc_free(&c); return (errno = EINVAL, 0); }
  if (pipecoe(pm) < 0 || pipecoe(pe) < 0 || pipecoe(pi) < 0) goto fail;
  {
    /* lib/spawn: message on 0, envelope on 1, the id back on 3 = $QUEUE_IDFD */
    spawn_fd map[3] = {{0, pm[0]}, {1, pe[0]}, {3, pi[1]}};
    char const *mods[1] = {"QUEUE_IDFD=3"};
    char const *envp[SPAWN_ENVMAX];
    if (spawn_env(envp, SPAWN_ENVMAX, mods, 1) < 0) goto fail;
    j->pid = spawn(argv, envp, map, 3);
    if (j->pid < 0) goto fail;
  }
  {
    char const *b = strrchr(argv[0], '/');
    j->early = argc == 1 && !strcmp(b ? b + 1 : argv[0], "queue-inject");
  }
  stralloc_free(&c);
  j->mode = INJECT_CHAIN;
  /* The read ends stay open here (close-on-exec): after the chain's exit, what is left in
   * a pipe is what it never read. */
  j->msgw = pm[0];
  j->envw = pe[0];
  fd_close(pi[1]);
  j->msgfd = pm[1];
  j->envfd = pe[1];
  j->idfd = pi[0];
  j->pidfd = pidfd_open(j->pid, 0); /* without it, EOF on fd 3 tells */
  if (j->pidfd >= 0) coe(j->pidfd);
  if (ndelay_on(j->msgfd) < 0 || ndelay_on(j->envfd) < 0 || ndelay_on(j->idfd) < 0) {
    inject_abort(j);
    return 0;
  }
  return 1;
fail:
  e = errno;
  {
    int *fds[6] = {&pm[0], &pm[1], &pe[0], &pe[1], &pi[0], &pi[1]};
    unsigned int k;
    for (k = 0; k < 6; k++)
      if (*fds[k] >= 0) fd_close(*fds[k]);
  }
  stralloc_free(&c);
  errno = e;
  return 0;
}

/* Reads what the chain wrote on its fd 3 (the queue id, bounded). On EOF every holder of
 * fd 3 is gone: if the chain has exited, it is reaped and marked broken when during_write
 * (it cannot have taken what was not yet written). */
static void chain_readid(injector *j, int during_write)
{
  for (;;) {
    char b[INJECT_ID_MAX];
    ssize_t r = read(j->idfd, b, sizeof b);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      r = 0;
    }
    if (!r) {
      j->idclosed = 1;
      if (during_write && !j->reaped && waitpid(j->pid, &j->wstat, WNOHANG) == j->pid) {
        j->reaped = 1;
        j->broken = 1;
      }
      return;
    }
    if (j->idlen + (size_t)r <= INJECT_ID_MAX) {
      memcpy(j->id + j->idlen, b, (size_t)r);
      j->idlen += (size_t)r;
    }
  }
}

static void chain_write(injector *j, int fd, char const *s, size_t n)
{
  size_t w = 0;
  while (!j->broken && w < n) {
    /* The chain's exit is watched too: with the read ends kept here, writing to a pipe
     * nobody else reads gives no EPIPE. */
    iopause_fd x[3];
    unsigned int nx = 1, ix = 0, ip = 0;
    tain d;
    ssize_t r;
    x[0] = (iopause_fd){fd, IOPAUSE_WRITE, 0};
    if (!j->idclosed) x[ix = nx++] = (iopause_fd){j->idfd, IOPAUSE_READ, 0};
    if (j->pidfd >= 0 && !j->reaped) x[ip = nx++] = (iopause_fd){j->pidfd, IOPAUSE_READ, 0};
    deadline(j, &d);
    r = iopause_g(x, nx, &d);
    if (r < 0) {
      if (errno == EINTR) continue;
      j->broken = 1;
      break;
    }
    if (!r) { j->broken = 1; break; }
    if (ix && x[ix].revents) chain_readid(j, 1);
    if (ip && x[ip].revents && waitpid(j->pid, &j->wstat, WNOHANG) == j->pid) {
      j->reaped = 1;
      j->broken = 1;
    }
    if (j->broken) break;
    if (!x[0].revents) continue;
    r = write(fd, s + w, n - w);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      j->broken = 1;
      break;
    }
    w += (size_t)r;
  }
}

static long unread(int fd)
{
  int n = 0;
  if (fd < 0 || ioctl(fd, FIONREAD, &n) < 0) return -1;
  return n;
}

static int chain_commit(injector *j, char const *env, size_t envlen, stralloc *id)
{
  long left;
  int w;
  size_t i;
  fd_close(j->msgfd);
  j->msgfd = -1;
  if (!j->broken) chain_write(j, j->envfd, env, envlen);
  fd_close(j->envfd);
  j->envfd = -1;
  if (!j->idclosed) {
    tain d;
    tain_now_g();
    tain_addsec_g(&d, (int)(j->timeout > 60 ? j->timeout : 60) * 4);
    while (!j->idclosed) {
      iopause_fd x = {j->idfd, IOPAUSE_READ, 0};
      ssize_t r = iopause_g(&x, 1, &d);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        inject_abort(j);
        return 111;
      }
      chain_readid(j, 0);
    }
  }
  if (!j->reaped) {
    if (wait_pid(j->pid, &w) != j->pid) {
      inject_abort(j);
      return 111;
    }
    j->reaped = 1;
    j->wstat = w;
  }
  w = j->wstat;
  left = unread(j->msgw);
  if (!left) left = unread(j->envw);
  closeall(j);
  j->pid = 0;
  id->len = 0;
  for (i = 0; i < j->idlen && j->id[i] > 32 && j->id[i] < 127; i++)
    ;
  if (!stralloc_catb(id, j->id, i)) return 111;
  if (WIFSIGNALED(w)) return 111;
  if (!WEXITSTATUS(w) && (j->broken || left)) return INJECT_UNREAD;
  return WEXITSTATUS(w);
}

/* ---- the interface ---- */

int inject_start(injector *j, inject_facts const *f, unsigned int timeout)
{
  char const *x = getenv("QUEUE_INJECT");
  stralloc path = STRALLOC_ZERO;
  int r;
  zero(j);
  j->timeout = timeout ? timeout : 1;
  if (x && !*x) x = 0;
  if (x && (strncmp(x, "socket", 6) || (x[6] && x[6] != ':'))) return chain_start(j, x);
  if (x && x[6] == ':' && x[7]) r = stralloc_cats(&path, x + 7) && stralloc_0(&path);
  else r = mailroot_path(&path, "queue/inject.sock");
  if (!r) return 0;
  r = sock_start(j, path.s, f);
  /* no socket (none there, nobody listening, not a socket): queue-inject, if we may */
  if (!r && !x && (errno == ECONNREFUSED || errno == ENOENT) && owns_queue())
    r = chain_start(j, "queue-inject");
  {
    int e = errno;
    stralloc_free(&path);
    errno = e;
  }
  return r;
}

int inject_start_socket(injector *j, char const *path, inject_facts const *f, unsigned int timeout)
{
  zero(j);
  j->timeout = timeout ? timeout : 1;
  return sock_start(j, path, f);
}

int inject_early_id(injector *j, stralloc *id)
{
  tain d;
  id->len = 0;
  if (!j->early || j->broken) return 0;
  tain_now_g();
  tain_addsec_g(&d, (int)j->timeout);
  if (j->mode == INJECT_SOCKET) {
    char line[INJECT_ID_MAX + 2];
    long l = sock_line(j, line, sizeof line, &d);
    j->early = 0;
    if (l < 0) { j->broken = 1; return 0; }
    if (l < 1 || line[0] != 'I') return 0;
    copy_id(id, line + 1, (size_t)l - 1);
    return id->len > 0;
  }
  while (!j->idclosed && !memchr(j->id, '\n', j->idlen) && j->idlen < INJECT_ID_MAX) {
    iopause_fd x = {j->idfd, IOPAUSE_READ, 0};
    ssize_t r = iopause_g(&x, 1, &d);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    chain_readid(j, 1);
  }
  j->early = 0;
  if (!memchr(j->id, '\n', j->idlen)) return 0;
  copy_id(id, j->id, j->idlen);
  return id->len > 0;
}

void inject_write(injector *j, char const *s, size_t n)
{
  if (j->broken || !n) return;
  if (j->mode == INJECT_CHAIN) {
    chain_write(j, j->msgfd, s, n);
    return;
  }
  while (n && !j->broken) {
    size_t k = INJECT_CHUNK - j->blen;
    if (k > n) k = n;
    memcpy(j->buf + j->blen, s, k);
    j->blen += k;
    s += k;
    n -= k;
    if (j->blen == INJECT_CHUNK) sock_flush(j);
  }
}

int inject_commit(injector *j, char const *env, size_t envlen, stralloc *id)
{
  int r = j->mode == INJECT_CHAIN ? chain_commit(j, env, envlen, id)
        : j->mode == INJECT_SOCKET ? sock_commit(j, env, envlen, id) : 111;
  j->mode = 0;
  return r;
}

void inject_abort(injector *j)
{
  closeall(j);
  if (j->mode == INJECT_CHAIN && j->pid > 0 && !j->reaped) {
    int w;
    kill(j->pid, SIGTERM);
    wait_pid(j->pid, &w);
  }
  j->pid = 0;
  j->mode = 0;
}

int inject_permanent(int code)
{
  return (code >= 11 && code <= 40) || code == 91;
}

unsigned int inject_reply(int code, char const **ecode, char const **text)
{
  if (!code) {
    *ecode = "2.0.0";
    *text = "Ok: queued";
    return 250;
  }
  if (inject_permanent(code)) {
    *ecode = "5.3.0";
    *text = "message refused by the queue";
    return 554;
  }
  *ecode = "4.3.0";
  *text = "temporary queue failure, try again later";
  return 451;
}
