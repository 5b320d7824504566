/* authclient: see authclient.h */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/socket.h>
#include <skalibs/stralloc.h>
#include <skalibs/tai.h>

#include "authclient.h"
#include "control.h"
#include "spawn.h"

int authclient_path(stralloc *sa)
{
  char const *x = getenv("AUTH_SOCKET");
  if (x && *x) {
    sa->len = 0;
    return stralloc_cats(sa, x) && stralloc_0(sa);
  }
  return mailroot_path(sa, "run/auth/socket");
}

size_t authclient_request(char *buf, char const *user, size_t ulen, char const *pass,
                          size_t plen)
{
  if (!ulen || ulen > AUTHPROTO_USER_MAX || memchr(user, 0, ulen) || memchr(pass, 0, plen))
    return 0;
  if (1 + ulen + 1 + plen + 1 > AUTHPROTO_REQ_MAX) return 0;
  buf[0] = 'C';
  memcpy(buf + 1, user, ulen);
  buf[1 + ulen] = 0;
  memcpy(buf + 2 + ulen, pass, plen);
  buf[2 + ulen + plen] = 0;
  return 3 + ulen + plen;
}

int authclient_exchange(int fd, char const *req, size_t reqlen, stralloc *reply,
                        tain const *deadline)
{
  size_t w = 0;
  reply->len = 0;
  if (ndelay_on(fd) < 0) return 0;
  for (;;) {
    iopause_fd x = {.fd = fd, .events = w < reqlen ? IOPAUSE_WRITE : IOPAUSE_READ, .revents = 0};
    int r = iopause_g(&x, 1, deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    if (!r) {
      errno = ETIMEDOUT;
      return 0;
    }
    if (w < reqlen) {
      ssize_t k = write(fd, req + w, reqlen - w);
      if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return 0;
      }
      w += (size_t)k;
      if (w == reqlen) shutdown(fd, SHUT_WR); /* the request is complete */
      continue;
    }
    if (!stralloc_readyplus(reply, 512)) return 0;
    {
      ssize_t k = read(fd, reply->s + reply->len, 512);
      if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return 0;
      }
      if (!k) return 1;
      reply->len += (size_t)k;
      if (reply->len > AUTHPROTO_REPLY_MAX) {
        errno = EMSGSIZE;
        return 0;
      }
    }
  }
}

int authclient_parse(char const *s, size_t len, stralloc *address, stralloc *maildir)
{
  char const *z1, *z2;
  if (!len) return AUTHCLIENT_TEMP;
  switch (s[0]) {
    case 'N': return len == 1 ? AUTHCLIENT_BAD : AUTHCLIENT_TEMP;
    case 'K': break;
    default: return AUTHCLIENT_TEMP;
  }
  z1 = memchr(s + 1, 0, len - 1);
  if (!z1 || z1 == s + 1) return AUTHCLIENT_TEMP;
  z2 = memchr(z1 + 1, 0, len - (size_t)(z1 + 1 - s));
  if (!z2 || z2 == z1 + 1 || z2 + 1 != s + len) return AUTHCLIENT_TEMP;
  address->len = maildir->len = 0;
  if (!stralloc_catb(address, s + 1, (size_t)(z1 - s)) ||
      !stralloc_catb(maildir, z1 + 1, (size_t)(z2 - z1)))
    return AUTHCLIENT_TEMP;
  return AUTHCLIENT_OK;
}

int authclient_check(char const *path, char const *user, size_t ulen, char const *pass,
                     size_t plen, stralloc *address, stralloc *maildir)
{
  char req[AUTHPROTO_REQ_MAX];
  stralloc reply = STRALLOC_ZERO;
  tain deadline;
  size_t n = authclient_request(req, user, ulen, pass, plen);
  int fd, r;
  if (!n) return AUTHCLIENT_BAD;
  tain_now_g();
  tain_addsec_g(&deadline, AUTHCLIENT_TIMEOUT);
  fd = ipc_stream_nbcoe();
  if (fd < 0) {
    memset(req, 0, sizeof req);
    return AUTHCLIENT_TEMP;
  }
  if (!ipc_timed_connect_g(fd, path, &deadline)) {
    int e = errno;
    fd_close(fd);
    memset(req, 0, sizeof req);
    errno = e;
    return e == ENOENT ? AUTHCLIENT_NOSERVICE : AUTHCLIENT_TEMP;
  }
  r = authclient_exchange(fd, req, n, &reply, &deadline);
  memset(req, 0, sizeof req);
  fd_close(fd);
  if (!r) {
    stralloc_free(&reply);
    return AUTHCLIENT_TEMP;
  }
  errno = 0;
  r = authclient_parse(reply.s, reply.len, address, maildir);
  stralloc_free(&reply);
  return r;
}

int authclient_direct(char const *req, size_t reqlen, stralloc *reply)
{
  int sv[2], wstat, ok;
  pid_t pid;
  tain deadline;
  if (ipc_pair_b(sv) < 0) return 0;
  { /* auth-serve -i with the socket on its fds 0 and 1 */
    char const *av[3] = {"auth-serve", "-i", 0};
    spawn_fd map[2] = {{0, sv[1]}, {1, sv[1]}};
    pid = coe(sv[0]) < 0 || coe(sv[1]) < 0 ? -1 : spawn(av, 0, map, 2);
  }
  fd_close(sv[1]);
  if (pid < 0) {
    fd_close(sv[0]);
    return 0;
  }
  tain_now_g();
  tain_addsec_g(&deadline, AUTHCLIENT_TIMEOUT);
  ok = authclient_exchange(sv[0], req, reqlen, reply, &deadline);
  fd_close(sv[0]);
  if (!ok) kill(pid, SIGKILL);
  if (wait_pid(pid, &wstat) != pid) return 0;
  return ok;
}

int authclient_ask(char const *path, char const *user, size_t ulen, char const *pass,
                   size_t plen, stralloc *address, stralloc *maildir)
{
  char req[AUTHPROTO_REQ_MAX];
  stralloc reply = STRALLOC_ZERO;
  size_t n;
  int r = authclient_check(path, user, ulen, pass, plen, address, maildir);
  if (r != AUTHCLIENT_NOSERVICE) return r;
  n = authclient_request(req, user, ulen, pass, plen);
  if (!n) return AUTHCLIENT_BAD;
  r = authclient_direct(req, n, &reply);
  memset(req, 0, sizeof req);
  if (!r) {
    stralloc_free(&reply);
    return AUTHCLIENT_TEMP;
  }
  errno = 0;
  r = authclient_parse(reply.s, reply.len, address, maildir);
  stralloc_free(&reply);
  return r;
}
