/* auth-check: check a password, the checkpassword way.
 *
 * Reads "user\0password\0[timestamp\0...]" (at most 512 octets) from fd 3, looks the user up in
 * users.cdb (lib/lookup) and checks the password with crypt_r (lib/passwd). On success, execs
 * prog... with USER (the account address) and HOME (its Maildir) set. An unknown user costs a
 * crypt_r of a dummy hash of the default kind, so it answers like a wrong password, in about
 * the same time. Exit codes: 1 bad credentials, 2 misuse (bad input), 111 trouble.
 */
#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/exec.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>

#include "control.h"
#include "lookup.h"
#include "passwd.h"

#define USAGE "auth-check prog..."
#define INPUT_MAX 512
char const *PROG = "auth-check";

/* A hash of the kind passwd_hash makes, with a fixed salt: a setting crypt_r accepts, which
 * never matches anything a user can type in the same time as a real check. */
static char const *dummy_hash(void)
{
  static char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  static char const rbytes[16] = "pillarbox-dummy";
  if (crypt_gensalt_rn("$y$", 0, rbytes, sizeof rbytes, setting, sizeof setting)) return setting;
  if (crypt_gensalt_rn("$6$", 0, rbytes, sizeof rbytes, setting, sizeof setting)) return setting;
  return "$6$pillarboxdummy$";
}

int main(int argc, char const *const *argv)
{
  char buf[INPUT_MAX + 1];
  size_t len = 0;
  char const *user, *pass, *z;
  account a = ACCOUNT_ZERO;
  int r, ok;
  subgetopt l = SUBGETOPT_ZERO;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "", &l);
    if (opt == -1) break;
    strerr_dieusage(2, USAGE);
  }
  argc -= l.ind;
  argv += l.ind;
  if (!argc) strerr_dieusage(2, USAGE);

  for (;;) {
    ssize_t k = read(3, buf + len, sizeof buf - len);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == EBADF) strerr_dief1x(2, "nothing on fd 3 (checkpassword interface)");
      strerr_diefu1sys(111, "read fd 3");
    }
    if (!k) break;
    len += (size_t)k;
    if (len > INPUT_MAX) {
      memset(buf, 0, sizeof buf);
      strerr_dief1x(2, "input on fd 3 longer than 512 bytes");
    }
  }
  fd_close(3);
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

  r = lookup_account(user, strlen(user), &a);
  if (r < 0) {
    memset(buf, 0, sizeof buf);
    strerr_diefu1sys(111, "read users.cdb");
  }
  if (r > 0 && a.hash.len > 1) ok = passwd_verify(pass, a.hash.s);
  else {
    passwd_verify(pass, dummy_hash()); /* same work, same answer */
    ok = 0;
    if (r > 0) {
      /* a known account without a hash: disabled, or control/passwd.cdb not readable here */
      stralloc p = STRALLOC_ZERO;
      if (mailroot_path(&p, "control/passwd.cdb") && access(p.s, R_OK) < 0)
        strerr_warnwu2sys("read ", p.s);
      stralloc_free(&p);
    }
  }
  memset(buf, 0, sizeof buf);
  if (!ok) return 1;
  if (setenv("USER", a.address.s, 1) < 0 || setenv("HOME", a.maildir.s, 1) < 0)
    strerr_diefu1sys(111, "set USER and HOME");
  xexec(argv);
}
