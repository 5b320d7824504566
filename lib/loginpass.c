/* loginpass: see loginpass.h */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/stralloc.h>
#include <skalibs/tai.h>

#include "loginpass.h"

extern char **environ;

char const *const loginpass_names[] = {
  "PROTO", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPREMOTEHOST", "TCPREMOTEINFO", "TCPLOCALIP",
  "TCPLOCALPORT", "TCPLOCALHOST", "SSL_PROTOCOL", "SSL_CIPHER", "SSL_TLS_SNI_SERVERNAME",
  "POP3_INPUT", "POP3_TIMEOUT", "POP3_NOTIFYFD", "IMAP_INPUT", "IMAP_TIMEOUT", "IMAP_TAG",
  "IMAP_NOTIFYFD", "NOTIFY", 0};
char const *const loginpass_notify_names[] = {"POP3_NOTIFYFD", "IMAP_NOTIFYFD", 0};

int loginpass_allowed(char const *name, size_t len)
{
  unsigned int i;
  for (i = 0; loginpass_names[i]; i++)
    if (strlen(loginpass_names[i]) == len && !memcmp(loginpass_names[i], name, len)) return 1;
  return 0;
}

static int wait_fd(int fd, int events, tain const *deadline)
{
  for (;;) {
    iopause_fd x = {.fd = fd, .events = events, .revents = 0};
    int r = iopause_g(&x, 1, deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    if (!r) {
      errno = ETIMEDOUT;
      return 0;
    }
    return 1;
  }
}

int loginpass_send(int sock, int const fds[3], char const *creds, size_t credlen,
                   char const *notifyvar, tain const *deadline)
{
  stralloc m = STRALLOC_ZERO;
  size_t w = 0, i;
  unsigned char h[10];
  int ok = 0;
  if (credlen > LOGINPASS_CREDS_MAX) {
    errno = EINVAL;
    return 0;
  }
  memcpy(h, "PBL1", 4);
  if (!stralloc_catb(&m, (char *)h, 8)) return 0;
  h[0] = (unsigned char)(credlen >> 8);
  h[1] = (unsigned char)credlen;
  if (!stralloc_catb(&m, (char *)h, 2) || !stralloc_catb(&m, creds, credlen)) goto end;
  if (notifyvar && (!stralloc_cats(&m, "NOTIFY=") || !stralloc_cats(&m, notifyvar) ||
                    !stralloc_0(&m)))
    goto end;
  for (i = 0; environ[i]; i++) {
    char const *eq = strchr(environ[i], '=');
    if (!eq || !loginpass_allowed(environ[i], (size_t)(eq - environ[i]))) continue;
    if (!strncmp(environ[i], "NOTIFY=", 7)) continue;
    if (strlen(eq + 1) > LOGINPASS_VALUE_MAX) continue;
    if (!stralloc_cats(&m, environ[i]) || !stralloc_0(&m)) goto end;
  }
  if (m.len - 8 > LOGINPASS_MAX) {
    errno = E2BIG;
    goto end;
  }
  {
    uint32_t n = (uint32_t)(m.len - 8);
    m.s[4] = (char)(n >> 24);
    m.s[5] = (char)(n >> 16);
    m.s[6] = (char)(n >> 8);
    m.s[7] = (char)n;
  }
  /* the first write carries the descriptors */
  while (w < m.len) {
    ssize_t k;
    if (!wait_fd(sock, IOPAUSE_WRITE, deadline)) goto end;
    if (!w) {
      struct msghdr msg;
      struct iovec v = {.iov_base = m.s, .iov_len = m.len};
      union {
        struct cmsghdr c;
        char b[CMSG_SPACE(3 * sizeof(int))];
      } u;
      struct cmsghdr *c;
      memset(&msg, 0, sizeof msg);
      memset(&u, 0, sizeof u);
      msg.msg_iov = &v;
      msg.msg_iovlen = 1;
      msg.msg_control = u.b;
      msg.msg_controllen = CMSG_SPACE(3 * sizeof(int));
      c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(3 * sizeof(int));
      memcpy(CMSG_DATA(c), fds, 3 * sizeof(int));
      k = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } else
      k = send(sock, m.s + w, m.len - w, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      goto end;
    }
    w += (size_t)k;
  }
  ok = 1;
end:
  if (m.s) memset(m.s, 0, m.len);
  stralloc_free(&m);
  return ok;
}

int loginpass_recv(int sock, int fds[3], stralloc *creds, stralloc *env, tain const *deadline)
{
  char *buf = 0;
  size_t have = 0, want = 8;
  int gotfds = 0, ok = 0;
  uint32_t n = 0;
  fds[0] = fds[1] = fds[2] = -1;
  buf = malloc(8 + LOGINPASS_MAX);
  if (!buf) return 0;
  while (have < want) {
    ssize_t k;
    if (!wait_fd(sock, IOPAUSE_READ, deadline)) goto end;
    if (!gotfds) {
      struct msghdr msg;
      struct iovec v = {.iov_base = buf + have, .iov_len = want - have};
      union {
        struct cmsghdr c;
        char b[CMSG_SPACE(4 * sizeof(int))];
      } u;
      struct cmsghdr *c;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = &v;
      msg.msg_iovlen = 1;
      msg.msg_control = u.b;
      msg.msg_controllen = sizeof u.b;
      k = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
      if (k > 0) {
        for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
          if (c->cmsg_len == CMSG_LEN(3 * sizeof(int)) && !gotfds) {
            memcpy(fds, CMSG_DATA(c), 3 * sizeof(int));
            gotfds = 1;
          } else { /* not ours: close whatever came */
            size_t m = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int), j;
            int x[4];
            if (m > 4) m = 4;
            memcpy(x, CMSG_DATA(c), m * sizeof(int));
            for (j = 0; j < m; j++) fd_close(x[j]);
          }
        }
        if (msg.msg_flags & MSG_CTRUNC) {
          errno = EPROTO;
          goto end;
        }
        if (!gotfds) {
          errno = EPROTO;
          goto end;
        }
      }
    } else
      k = read(sock, buf + have, want - have);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      goto end;
    }
    if (!k) {
      errno = EPIPE;
      goto end;
    }
    have += (size_t)k;
    if (have == 8 && want == 8) {
      if (memcmp(buf, "PBL1", 4)) {
        errno = EPROTO;
        goto end;
      }
      n = (uint32_t)(unsigned char)buf[4] << 24 | (uint32_t)(unsigned char)buf[5] << 16 |
          (uint32_t)(unsigned char)buf[6] << 8 | (uint32_t)(unsigned char)buf[7];
      if (n < 2 || n > LOGINPASS_MAX) {
        errno = EPROTO;
        goto end;
      }
      want = 8 + n;
    }
  }
  {
    char const *p = buf + 10, *e = buf + 8 + n;
    size_t cl = (size_t)(unsigned char)buf[8] << 8 | (unsigned char)buf[9];
    if (cl > LOGINPASS_CREDS_MAX || cl > (size_t)(e - p)) {
      errno = EPROTO;
      goto end;
    }
    if (!stralloc_catb(creds, p, cl)) goto end;
    p += cl;
    while (p < e) {
      char const *z = memchr(p, 0, (size_t)(e - p)), *eq;
      if (!z) {
        errno = EPROTO;
        goto end;
      }
      eq = memchr(p, '=', (size_t)(z - p));
      if (eq && loginpass_allowed(p, (size_t)(eq - p)) &&
          !stralloc_catb(env, p, (size_t)(z - p) + 1))
        goto end;
      p = z + 1;
    }
  }
  ok = 1;
end:
  memset(buf, 0, 8 + LOGINPASS_MAX);
  free(buf);
  if (!ok) {
    int e = errno, i;
    for (i = 0; i < 3; i++)
      if (fds[i] >= 0) fd_close(fds[i]);
    fds[0] = fds[1] = fds[2] = -1;
    errno = e;
  }
  return ok;
}
