/* auth-check: check a password, the checkpassword way, by asking the auth service.
 *
 * Reads "user\0password\0[timestamp\0...]" (at most 512 octets) from fd 3 and asks auth-serve
 * over MAILROOT/run/auth/socket (lib/authclient). On success, execs prog... with USER (the
 * account address) and HOME (its Maildir) set. This program never reads passwd.cdb. When there
 * is no socket file it runs `auth-serve -i` itself (direct mode, with this process's rights).
 * Exit codes: 1 bad credentials, 2 misuse (bad input), 111 trouble.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/exec.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>

#include "authclient.h"
#include "checkpw.h"

#define USAGE "auth-check prog..."
char const *PROG = "auth-check";

int main(int argc, char const *const *argv)
{
  char buf[CHECKPW_INPUT_MAX + 1];
  size_t len = 0;
  char const *user, *pass, *z;
  stralloc address = STRALLOC_ZERO, maildir = STRALLOC_ZERO;
  int r;
  subgetopt l = SUBGETOPT_ZERO;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "", &l);
    if (opt == -1) break;
    strerr_dieusage(2, USAGE);
  }
  argc -= l.ind;
  argv += l.ind;
  if (!argc) strerr_dieusage(2, USAGE);

  len = checkpw_read3(buf);
  user = buf;
  z = memchr(buf, 0, len);
  if (!z || z == buf) {
    memset(buf, 0, sizeof buf);
    strerr_dief1x(2, "malformed input on fd 3");
  }
  pass = z + 1;
  if (!memchr(pass, 0, len - (size_t)(pass - buf))) {
    memset(buf, 0, sizeof buf);
    strerr_dief1x(2, "malformed input on fd 3");
  }

  {
    char req[AUTHPROTO_REQ_MAX];
    stralloc path = STRALLOC_ZERO;
    size_t n = authclient_request(req, user, strlen(user), pass, strlen(pass));
    memset(buf, 0, sizeof buf);
    if (!n) return 1; /* a user name the service cannot know */
    if (!authclient_path(&path)) strerr_diefu1sys(111, "make the auth socket path");
    r = authclient_ask(path.s, req + 1, strlen(req + 1), req + 2 + strlen(req + 1),
                       n - 3 - strlen(req + 1), &address, &maildir);
    if (r == AUTHCLIENT_TEMP) {
      if (errno) strerr_warnwu2sys("check the password with the auth service at ", path.s);
      else strerr_warnwu2x("check the password with the auth service at ", path.s);
    }
    memset(req, 0, sizeof req);
  }
  if (r == AUTHCLIENT_BAD) return 1;
  if (r != AUTHCLIENT_OK) return 111;
  if (setenv("USER", address.s, 1) < 0 || setenv("HOME", maildir.s, 1) < 0)
    strerr_diefu1sys(111, "set USER and HOME");
  xexec(argv);
}
