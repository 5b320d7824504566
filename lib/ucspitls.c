/* ucspitls: see ucspitls.h */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "ucspitls.h"

static int getfd(char const *name, int *fd)
{
  char const *s = getenv(name);
  unsigned int u;
  if (!s || !*s || !uint0_scan(s, &u) || u > 65535) return 0;
  *fd = (int)u;
  return 1;
}

int ucspitls_available(void)
{
  int a, b, c;
  return getfd("SSLCTLFD", &a) && getfd("SSLREADFD", &b) && getfd("SSLWRITEFD", &c);
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

int ucspitls_start(int *rfd, int *wfd)
{
  int ctl, r, w;
  char buf[UCSPITLS_INFO_MAX];
  size_t len = 0;
  tain deadline;
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
  if (fd_move(0, r) < 0 || fd_move(1, w) < 0) return 0;
  unsetenv("SSLREADFD");
  unsetenv("SSLWRITEFD");
  return 1;
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
  if (!ucspitls_available() || !uint0_scan(getenv("SSLCTLFD"), &fd)) return -1;
  coe_env("SSLCTLFD");
  coe_env("SSLREADFD");
  coe_env("SSLWRITEFD");
  return (int)fd;
}

int ucspitls_alive(int ctlfd)
{
  iopause_fd x = {ctlfd, IOPAUSE_READ, 0};
  tain d;
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
