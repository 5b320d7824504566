/* ucspitls: see ucspitls.h */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/socket.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "fdpass.h"
#include "ucspitls.h"

static int enginefd = -1; /* the connection to the engine service, once ucspitls_ready made it */

static int getfd(char const *name, int *fd)
{
  char const *s = getenv(name);
  unsigned int u;
  if (!s || !*s || !uint0_scan(s, &u) || u > 65535) return 0;
  *fd = (int)u;
  return 1;
}

static int sidecar(void)
{
  int a, b, c;
  return getfd("SSLCTLFD", &a) && getfd("SSLREADFD", &b) && getfd("SSLWRITEFD", &c);
}

static char const *engine_path(void)
{
  char const *p = getenv("TLS_ENGINE");
  return p && *p ? p : 0;
}

int ucspitls_available(void)
{
  return sidecar() || engine_path();
}

/* Applies the facts list s[0..len) (NUL-terminated strings) to the environment. */
static void apply(char const *s, size_t len)
{
  size_t i = 0;
  while (i < len && s[i]) {
    char const *e = s + i;
    size_t n = strlen(e);
    char const *eq = memchr(e, '=', n);
    if (n > 4 && !memcmp(e, "SSL_", 4)) {
      char name[64];
      size_t nl = eq ? (size_t)(eq - e) : n;
      if (nl < sizeof name) {
        memcpy(name, e, nl);
        name[nl] = 0;
        if (eq) setenv(name, eq + 1, 1);
        else unsetenv(name);
      }
    }
    i += n + 1;
  }
}

/* Reads the facts list from ctl until its end (at most UCSPITLS_TIMEOUT seconds) and applies
 * it. 1 ok, 0 error (errno). */
static int get_facts(int ctl)
{
  char buf[UCSPITLS_INFO_MAX];
  size_t len = 0;
  tain deadline;
  tain_now_set_stopwatch_g();
  tain_addsec_g(&deadline, UCSPITLS_TIMEOUT);
  for (;;) {
    iopause_fd x = {.fd = ctl, .events = IOPAUSE_READ};
    ssize_t k;
    int p = iopause_g(&x, 1, &deadline);
    if (p < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    if (!p) {
      errno = ETIMEDOUT;
      return 0;
    }
    if (len >= sizeof buf) {
      errno = EPROTO;
      return 0;
    }
    k = read(ctl, buf + len, sizeof buf - len);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return 0;
    }
    if (!k) {
      errno = EPROTO;
      return 0;
    }
    len += (size_t)k;
    /* complete: the list ends with an empty string, i.e. "\0\0" (or a lone "\0") */
    if ((len == 1 && !buf[0]) || (len >= 2 && !buf[len - 1] && !buf[len - 2])) break;
  }
  apply(buf, len);
  return 1;
}

static int engine_connect(void)
{
  tain deadline;
  char const *path = engine_path();
  int fd;
  if (enginefd >= 0) return 1;
  if (!path) {
    errno = EINVAL;
    return 0;
  }
  fd = ipc_stream_nbcoe();
  if (fd < 0) return 0;
  tain_now_set_stopwatch_g();
  tain_addsec_g(&deadline, UCSPITLS_CONNECT_TIMEOUT);
  if (!ipc_timed_connect_g(fd, path, &deadline)) {
    int e = errno;
    fd_close(fd);
    errno = e;
    return 0;
  }
  enginefd = fd;
  return 1;
}

/* The engine service: hands fds 0 and 1 over with the engine's end of a socketpair, gets the
 * facts, then the plaintext socket replaces the network on fds 0 and 1. */
static int engine_start(int *rfd, int *wfd)
{
  int sp[2], fds[3], e;
  tain deadline;
  if (!engine_connect()) return 0;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) goto fail;
  fds[0] = 0;
  fds[1] = 1;
  fds[2] = sp[1];
  tain_now_set_stopwatch_g();
  tain_addsec_g(&deadline, UCSPITLS_CONNECT_TIMEOUT);
  if (!fdpass_send(enginefd, 'Y', fds, 3, &deadline)) {
    if (errno == EPIPE || errno == ECONNRESET) errno = EPROTO;
    goto failsp;
  }
  fd_close(sp[1]);
  /* from here on the network is the engine's: ours goes, whatever happens next */
  if (fd_copy(0, sp[0]) < 0 || fd_copy(1, sp[0]) < 0) goto failp;
  if (!get_facts(enginefd)) goto failp;
  fd_close(enginefd);
  enginefd = -1;
  unsetenv("TLS_ENGINE");
  *rfd = *wfd = sp[0];
  return 1;
failsp:
  fd_close(sp[1]);
failp:
  e = errno;
  fd_close(sp[0]);
  errno = e;
fail:
  e = errno;
  fd_close(enginefd);
  enginefd = -1;
  errno = e;
  return 0;
}

int ucspitls_start(int *rfd, int *wfd)
{
  int ctl, r, w;
  if (!sidecar()) return engine_start(rfd, wfd);
  if (!getfd("SSLCTLFD", &ctl) || !getfd("SSLREADFD", &r) || !getfd("SSLWRITEFD", &w)) {
    errno = EINVAL;
    return 0;
  }
  for (;;) {
    ssize_t k = write(ctl, "Y", 1);
    if (k == 1) break;
    if (k < 0 && errno == EINTR) continue;
    if (k >= 0 || errno == EPIPE) errno = EPROTO;
    return 0;
  }
  if (!get_facts(ctl)) return 0;
  fd_close(ctl);
  unsetenv("SSLCTLFD");
  *rfd = r;
  *wfd = w;
  return 1;
}

int ucspitls_start_stdio(void)
{
  int r, w;
  if (!ucspitls_start(&r, &w)) return 0;
  if (r == w) { /* the engine service: already on 0 and 1 */
    fd_close(r);
    return 1;
  }
  if (fd_move(0, r) < 0 || fd_move(1, w) < 0) return 0;
  unsetenv("SSLREADFD");
  unsetenv("SSLWRITEFD");
  return 1;
}

int ucspitls_implicit(void)
{
  char const *x = getenv("TLS_IMPLICIT");
  int r, w;
  if (!x || strcmp(x, "1")) return 0;
  unsetenv("TLS_IMPLICIT");
  if (getenv("SSL_PROTOCOL")) return 0; /* under tls-serve: TLS already done */
  if (!engine_path()) {
    errno = EINVAL;
    return -1;
  }
  if (!engine_start(&r, &w)) return -1;
  fd_close(r); /* already on 0 and 1 */
  return 1;
}

int ucspitls_implicit_session(int pooled)
{
  if (ucspitls_implicit() >= 0) return 1;
  if (!pooled) strerr_diefu1sys(111, "start implicit TLS through TLS_ENGINE");
  strerr_warnwu1sys("start implicit TLS through TLS_ENGINE");
  return 0;
}

void ucspitls_reset(void)
{
  if (enginefd >= 0) fd_close(enginefd);
  enginefd = -1;
}

static void coe_env(char const *name)
{
  char const *x = getenv(name);
  unsigned int fd;
  if (x && *x && uint0_scan(x, &fd)) coe((int)fd);
}

int ucspitls_setup(void)
{
  unsigned int fd;
  if (!sidecar()) return engine_path() ? UCSPITLS_ENGINE : -1;
  if (!uint0_scan(getenv("SSLCTLFD"), &fd)) return -1;
  coe_env("SSLCTLFD");
  coe_env("SSLREADFD");
  coe_env("SSLWRITEFD");
  return (int)fd;
}

int ucspitls_ready(int ctlfd)
{
  iopause_fd x = {ctlfd, IOPAUSE_READ, 0};
  tain d;
  if (ctlfd == UCSPITLS_ENGINE) return engine_connect();
  if (ctlfd < 0) return 0;
  tain_now_g();
  tain_add_g(&d, &tain_zero); /* a poll: do not wait */
  return fcntl(ctlfd, F_GETFD) >= 0 && iopause_g(&x, 1, &d) == 0;
}

int ucspitls_facts(stralloc *proto, stralloc *cipher)
{
  char const *x = getenv("SSL_PROTOCOL"), *y = getenv("SSL_CIPHER");
  int tls = x && *x;
  proto->len = cipher->len = 0;
  if (!stralloc_cats(proto, tls ? x : "") || !stralloc_0(proto)) return -1;
  if (!stralloc_cats(cipher, tls && y ? y : "") || !stralloc_0(cipher)) return -1;
  return tls;
}
