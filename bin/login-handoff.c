/* login-handoff: the pre-login side of the login broker (checkpassword interface).
 *
 * Run by pop3-serve (and imap-serve) in place of `auth-check pop3-maildir`: reads
 * "user\0password\0..." from fd 3, connects to the login broker's socket
 * MAILROOT/run/login/NAME and passes it the client's fds 0 and 1, the session's notification
 * fd and the UCSPI / TLS facts (lib/loginpass). The broker, under the delivery uid, asks the
 * auth service and execs the session program on those descriptors. This process then only
 * waits: it exits 1 (bad credentials) or 111 (trouble) as the broker says, or 0 when the
 * session has ended. It never holds a mailbox, and the broker never saw the network before the
 * login. Under a front that is a tcp-pool worker (LOGIN_LOGOUT set, see checkpw.h), this
 * process, not the front, logs the logout and holds the front's per-address slot (fd 5,
 * LOGIN_SLOT) for the session's length. Exit codes: 0 the session ran, 1 bad credentials,
 * 2 misuse, 111 trouble.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/sgetopt.h>
#include <skalibs/socket.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "checkpw.h"
#include "control.h"
#include "loginpass.h"

#define USAGE "login-handoff NAME (NAME: a socket in MAILROOT/run/login/, or a path)"
#define CONNECT_TIMEOUT 10
char const *PROG = "login-handoff";

int main(int argc, char const *const *argv)
{
  char buf[CHECKPW_INPUT_MAX + 1];
  size_t len = 0;
  stralloc path = STRALLOC_ZERO;
  char const *notifyvar = 0, *logout, *slot;
  int fds[3] = {0, 1, 1};
  int sock, i;
  tain deadline;
  subgetopt l = SUBGETOPT_ZERO;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "", &l);
    if (opt == -1) break;
    strerr_dieusage(2, USAGE);
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc != 1 || !argv[0][0]) strerr_dieusage(2, USAGE);
  if (strchr(argv[0], '/')) {
    if (!stralloc_copys(&path, argv[0]) || !stralloc_0(&path)) strerr_diefu1sys(111, "stralloc");
  } else {
    if (argv[0][0] == '.') strerr_dieusage(2, USAGE);
    if (!stralloc_copys(&path, "run/login/") || !stralloc_cats(&path, argv[0]) ||
        !stralloc_0(&path))
      strerr_diefu1sys(111, "stralloc");
    {
      stralloc p = STRALLOC_ZERO;
      if (!mailroot_path(&p, path.s)) strerr_diefu1sys(111, "make the socket path");
      stralloc_free(&path);
      path = p;
    }
  }

  len = checkpw_read3(buf);
  {
    char const *z = memchr(buf, 0, len);
    if (!z || z == buf || !memchr(z + 1, 0, len - (size_t)(z + 1 - buf))) {
      memset(buf, 0, sizeof buf);
      strerr_dief1x(2, "malformed input on fd 3");
    }
  }
  for (i = 0; loginpass_notify_names[i]; i++) {
    char const *x = getenv(loginpass_notify_names[i]);
    unsigned int n;
    if (!x) continue;
    if (!uint0_scan(x, &n) || n < 3) strerr_dief2x(2, "bad ", loginpass_notify_names[i]);
    fds[2] = (int)n;
    notifyvar = loginpass_notify_names[i];
    break;
  }

  tain_now_g();
  tain_addsec_g(&deadline, CONNECT_TIMEOUT);
  sock = ipc_stream_nbcoe();
  if (sock < 0) strerr_diefu1sys(111, "create a socket");
  if (!ipc_timed_connect_g(sock, path.s, &deadline)) {
    memset(buf, 0, sizeof buf);
    strerr_diefu2sys(111, "connect to the login broker at ", path.s);
  }
  if (!loginpass_send(sock, fds, buf, len, notifyvar, &deadline)) {
    memset(buf, 0, sizeof buf);
    strerr_diefu2sys(111, "hand the login to ", path.s);
  }
  memset(buf, 0, sizeof buf);
  /* the session has its own copies now: ours would keep the client's connection open */
  fd_close(0);
  fd_close(1);
  if (fds[2] > 2) fd_close(fds[2]);
  if (ndelay_off(sock) < 0) strerr_diefu1sys(111, "set the socket blocking");
  /* a front that is a pool worker does not wait: we log its logout and hold its slot (on fd
   * CHECKPW_SLOTFD) until the session ends */
  logout = getenv("LOGIN_LOGOUT");
  slot = logout ? getenv("LOGIN_SLOT") : 0;
  checkpw_waiter_fd(sock, slot, logout); /* wait as login-wait: a few pages, not this program */
  for (;;) {
    unsigned char c;
    ssize_t k = read(sock, &c, 1);
    if (k < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "read the broker's answer");
    }
    if (k) return c;
    if (logout && (fd_write(2, logout, strlen(logout)) < 0 || fd_write(2, "0\n", 2) < 0)) {}
    if (slot) unlink(slot);
    return 0; /* the session ran and has ended */
  }
}
