/* unit: the protocol program's side of UCSPI-TLS, against a fake sidecar */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ucspitls.h"
#include "check.h"
char const *PROG = "unit-ucspitls";

static void setfd(char const *name, int fd)
{
  char b[16];
  snprintf(b, sizeof b, "%d", fd);
  setenv(name, b, 1);
}

/* Runs ucspitls_start against a child that reads the command and answers with reply[0..n)
 * (or just closes when n is 0). Returns ucspitls_start's result; *cmd gets the command byte. */
static int session(char const *reply, size_t n, char *cmd, int *rfd, int *wfd, int *err)
{
  int ctl[2], a[2], b[2], r, status;
  pid_t pid;
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, ctl) < 0 || pipe(a) < 0 || pipe(b) < 0) return -1;
  pid = fork();
  if (pid < 0) return -1;
  if (!pid) {
    char c = 0;
    close(ctl[0]);
    if (read(ctl[1], &c, 1) != 1) _exit(1);
    if (n && write(ctl[1], reply, n) != (ssize_t)n) _exit(1);
    _exit(c == 'Y' ? 0 : 2);
  }
  close(ctl[1]);
  setfd("SSLCTLFD", ctl[0]);
  setfd("SSLREADFD", a[0]);
  setfd("SSLWRITEFD", b[1]);
  r = ucspitls_start(rfd, wfd);
  *err = errno;
  waitpid(pid, &status, 0);
  *cmd = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 'Y' : '?';
  close(a[1]);
  close(b[0]);
  return r;
}

int main(void)
{
  int rfd = -1, wfd = -1, err = 0;
  char cmd;
  static char const facts[] =
    "SSL_PROTOCOL=TLSv1.2\0SSL_CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256\0SSL_TLS_SNI_SERVERNAME\0"
    "NOT_SSL=evil\0";
  unsetenv("SSLCTLFD");
  CHECK(!ucspitls_available());
  setenv("SSLCTLFD", "3", 1);
  setenv("SSLREADFD", "x", 1);
  setenv("SSLWRITEFD", "5", 1);
  CHECK(!ucspitls_available());
  setenv("SSLREADFD", "4", 1);
  CHECK(ucspitls_available());

  /* success: the facts arrive, the fds are handed over */
  setenv("SSL_TLS_SNI_SERVERNAME", "stale", 1);
  CHECK(session(facts, sizeof facts, &cmd, &rfd, &wfd, &err) == 1);
  CHECK(cmd == 'Y');
  CHECK(rfd >= 0 && wfd >= 0);
  CHECK(getenv("SSL_PROTOCOL") && !strcmp(getenv("SSL_PROTOCOL"), "TLSv1.2"));
  CHECK(getenv("SSL_CIPHER") && !strcmp(getenv("SSL_CIPHER"), "ECDHE-ECDSA-AES128-GCM-SHA256"));
  CHECK(!getenv("SSL_TLS_SNI_SERVERNAME")); /* "NAME" alone unsets */
  CHECK(!getenv("NOT_SSL"));                /* only SSL_* names are taken */
  CHECK(!getenv("SSLCTLFD"));

  /* the sidecar goes away without an answer: the handshake failed */
  unsetenv("SSL_PROTOCOL");
  CHECK(session("", 0, &cmd, &rfd, &wfd, &err) == 0 && err == EPROTO);
  CHECK(!getenv("SSL_PROTOCOL"));

  /* an incomplete list (no final empty string) is a failure too */
  CHECK(session("SSL_PROTOCOL=TLSv1.2", 20, &cmd, &rfd, &wfd, &err) == 0 && err == EPROTO);

  /* an oversized answer is refused, not overrun */
  {
    static char big[UCSPITLS_INFO_MAX + 100];
    memset(big, 'A', sizeof big);
    CHECK(session(big, sizeof big, &cmd, &rfd, &wfd, &err) == 0);
  }

  /* implicit TLS: not asked, already in TLS (tls-serve in front), asked without an engine,
   * and an engine socket nobody listens on: never a "go on in plaintext" */
  unsetenv("SSLCTLFD");
  unsetenv("SSLREADFD");
  unsetenv("SSLWRITEFD");
  unsetenv("TLS_IMPLICIT");
  unsetenv("TLS_ENGINE");
  CHECK(ucspitls_implicit() == 0);
  setenv("TLS_IMPLICIT", "0", 1);
  CHECK(ucspitls_implicit() == 0);
  setenv("TLS_IMPLICIT", "1", 1);
  setenv("SSL_PROTOCOL", "TLSv1.2", 1);
  CHECK(ucspitls_implicit() == 0);
  CHECK(!getenv("TLS_IMPLICIT"));
  unsetenv("SSL_PROTOCOL");
  setenv("TLS_IMPLICIT", "1", 1);
  errno = 0;
  CHECK(ucspitls_implicit() == -1 && errno == EINVAL);
  setenv("TLS_IMPLICIT", "1", 1);
  setenv("TLS_ENGINE", "/nonexistent/pillarbox-unit/engine", 1);
  CHECK(ucspitls_implicit() == -1 && errno == ENOENT);
  CHECK(!getenv("SSL_PROTOCOL"));
  return CHECK_DONE();
}
