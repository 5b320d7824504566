/* fdpass: see fdpass.h */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>

#include "fdpass.h"

static int wait_fd(int fd, int events, tain const *deadline)
{
  for (;;) {
    iopause_fd x = {.fd = fd, .events = events};
    int r = iopause_g(&x, 1, deadline);
    if (r > 0) return 1;
    if (!r) {
      errno = ETIMEDOUT;
      return 0;
    }
    if (errno != EINTR) return 0;
  }
}

int fdpass_send(int sock, char c, int const *fds, unsigned int n, tain const *deadline)
{
  struct msghdr msg;
  struct iovec v = {.iov_base = &c, .iov_len = 1};
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(FDPASS_MAX * sizeof(int))];
  } u;
  struct cmsghdr *h;
  if (!n || n > FDPASS_MAX) {
    errno = EINVAL;
    return 0;
  }
  memset(&msg, 0, sizeof msg);
  memset(&u, 0, sizeof u);
  msg.msg_iov = &v;
  msg.msg_iovlen = 1;
  msg.msg_control = u.b;
  msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
  h = CMSG_FIRSTHDR(&msg);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(n * sizeof(int));
  memcpy(CMSG_DATA(h), fds, n * sizeof(int));
  for (;;) {
    ssize_t k;
    if (!wait_fd(sock, IOPAUSE_WRITE, deadline)) return 0;
    k = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (k == 1) return 1;
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k >= 0) errno = EPROTO;
    return 0;
  }
}

/* Closes every descriptor a control message brought. */
static void close_all(struct msghdr *msg)
{
  struct cmsghdr *h;
  for (h = CMSG_FIRSTHDR(msg); h; h = CMSG_NXTHDR(msg, h)) {
    size_t m, j;
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
    m = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (j = 0; j < m; j++) {
      int fd;
      memcpy(&fd, CMSG_DATA(h) + j * sizeof(int), sizeof fd);
      fd_close(fd);
    }
  }
}

int fdpass_recv(int sock, char *c, int *fds, unsigned int n, tain const *deadline)
{
  struct msghdr msg;
  struct iovec v = {.iov_base = c, .iov_len = 1};
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE((FDPASS_MAX + 1) * sizeof(int))];
  } u;
  struct cmsghdr *h;
  ssize_t k;
  if (!n || n > FDPASS_MAX) {
    errno = EINVAL;
    return 0;
  }
  for (;;) {
    if (!wait_fd(sock, IOPAUSE_READ, deadline)) return 0;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &v;
    msg.msg_iovlen = 1;
    msg.msg_control = u.b;
    msg.msg_controllen = sizeof u.b;
    k = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (k >= 0 || (errno != EINTR && errno != EAGAIN)) break;
  }
  if (k < 0) return 0;
  if (!k) {
    errno = EPIPE;
    return 0;
  }
  h = CMSG_FIRSTHDR(&msg);
  if ((msg.msg_flags & MSG_CTRUNC) || !h || h->cmsg_level != SOL_SOCKET ||
      h->cmsg_type != SCM_RIGHTS || h->cmsg_len != CMSG_LEN(n * sizeof(int)) ||
      CMSG_NXTHDR(&msg, h)) {
    close_all(&msg);
    errno = EPROTO;
    return 0;
  }
  memcpy(fds, CMSG_DATA(h), n * sizeof(int));
  return 1;
}
