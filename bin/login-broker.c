/* login-broker: the post-login side of the login broker, one connection (UCSPI-IPC).
 *
 * Run by s6-ipcserver on MAILROOT/run/login/NAME under the delivery uid, with the connection
 * from login-handoff on fd 0/1. Receives the client's descriptors, the credentials and the
 * UCSPI / TLS facts (lib/loginpass; only the variables it lists are believed), asks the auth
 * service (lib/authclient), and on success execs PROG... (its own argument, never chosen by
 * the client: pop3-maildir for the pop3 socket, imap-maildir for imap) with the client on fd
 * 0/1, the notification fd on fd 3, USER and HOME set. The connection stays open in the
 * session (on a descriptor above 9), so login-handoff learns when it ends. Bad credentials:
 * writes the octet 1 and exits; trouble: the octet 111.
 * Exit codes: 0 answered, 100 usage, 111 the hand-over failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>

#include "authclient.h"
#include "loginpass.h"

#define USAGE "login-broker prog..."
#define RECV_TIMEOUT 10
char const *PROG = "login-broker";

static int conn = 1; /* the connection to login-handoff */

static void answer(unsigned char code)
{
  char c = (char)code;
  if (fd_write(conn, &c, 1) != 1) strerr_diefu1sys(111, "answer login-handoff");
  _exit(0);
}

/* Trouble after the hand-over was received: login-handoff must hear 111, not EOF (which means
 * "the session ran"). */
static void fail(char const *what)
{
  char c = 111;
  strerr_warnwu1sys(what);
  fd_write(conn, &c, 1);
  _exit(111);
}

int main(int argc, char const *const *argv)
{
  stralloc creds = STRALLOC_ZERO, env = STRALLOC_ZERO, path = STRALLOC_ZERO;
  stralloc address = STRALLOC_ZERO, maildir = STRALLOC_ZERO;
  char const *notifyvar = 0, *user, *pass, *z;
  int fds[3], sk, r;
  size_t i;
  tain deadline;
  subgetopt l = SUBGETOPT_ZERO;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "", &l);
    if (opt == -1) break;
    strerr_dieusage(100, USAGE);
  }
  argc -= l.ind;
  argv += l.ind;
  if (!argc) strerr_dieusage(100, USAGE);

  tain_now_g();
  tain_addsec_g(&deadline, RECV_TIMEOUT);
  if (!loginpass_recv(0, fds, &creds, &env, &deadline))
    fail("receive the login from login-handoff");
  user = creds.s;
  z = creds.len ? memchr(creds.s, 0, creds.len) : 0;
  if (!z || z == creds.s || !memchr(z + 1, 0, creds.len - (size_t)(z + 1 - creds.s))) {
    if (creds.s) memset(creds.s, 0, creds.len);
    answer(1); /* malformed: login-handoff checked it, so never a real client's */
  }
  pass = z + 1;
  if (!authclient_path(&path)) fail("make the auth socket path");
  r = authclient_ask(path.s, user, strlen(user), pass, strlen(pass), &address, &maildir);
  memset(creds.s, 0, creds.len);
  if (r == AUTHCLIENT_BAD) answer(1);
  if (r != AUTHCLIENT_OK) {
    if (errno) strerr_warnwu2sys("check the password with the auth service at ", path.s);
    else strerr_warnwu2x("check the password with the auth service at ", path.s);
    answer(111);
  }

  /* the session's environment: ours, minus every name a client may set, plus what it sent */
  for (i = 0; loginpass_names[i]; i++) unsetenv(loginpass_names[i]);
  for (i = 0; i < env.len; i += strlen(env.s + i) + 1) {
    char *e = env.s + i, *eq = strchr(e, '=');
    *eq = 0;
    if (!strcmp(e, "NOTIFY")) {
      unsigned int j;
      for (j = 0; loginpass_notify_names[j]; j++)
        if (!strcmp(eq + 1, loginpass_notify_names[j])) notifyvar = loginpass_notify_names[j];
    } else {
      unsigned int j;
      int isnotify = 0;
      for (j = 0; loginpass_notify_names[j]; j++)
        if (!strcmp(e, loginpass_notify_names[j])) isnotify = 1;
      if (!isnotify && setenv(e, eq + 1, 1) < 0) fail("setenv");
    }
    *eq = '=';
  }
  if (setenv("USER", address.s, 1) < 0 || setenv("HOME", maildir.s, 1) < 0)
    fail("set USER and HOME");

  /* descriptors: the connection above 9 (kept open in the session), the client on 0/1, the
   * notification fd on 3 */
  sk = fcntl(0, F_DUPFD, 10);
  if (sk < 0) fail("dup the connection");
  conn = sk;
  if (dup2(fds[0], 0) < 0 || dup2(fds[1], 1) < 0) fail("move the client's fds");
  if (notifyvar) {
    if (fds[2] == 3) {
      if (uncoe(3) < 0) fail("uncoe");
    } else if (dup2(fds[2], 3) < 0)
      fail("move the notification fd");
    if (setenv(notifyvar, "3", 1) < 0) fail("setenv");
  }
  /* the received fds are close-on-exec: only their copies go on */
  if (strchr(argv[0], '/')) execv(argv[0], (char *const *)argv);
  else execvp(argv[0], (char *const *)argv);
  fail("exec the session program");
}
