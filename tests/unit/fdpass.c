/* unit: one octet with descriptors over a UNIX socket, and ucspitls's hand-over to a fake
 * engine service (TLS_ENGINE) built on it */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <skalibs/tai.h>

#include "fdpass.h"
#include "ucspitls.h"
#include "check.h"
char const *PROG = "unit-fdpass";

static void deadline(tain *d, int secs)
{
  tain_now_set_stopwatch_g();
  tain_addsec_g(d, secs);
}

/* A fake engine on path: takes the hand-over, answers the facts (or closes at once when
 * facts is 0), then writes "hello" on the plaintext socket and echoes what the network end
 * (a socketpair standing for the client) receives. */
static pid_t fake_engine(char const *path, char const *facts, size_t n)
{
  struct sockaddr_un sa;
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  pid_t pid;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  strcpy(sa.sun_path, path);
  unlink(path);
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 4) < 0) return -1;
  pid = fork();
  if (pid) {
    close(l);
    return pid;
  }
  {
    int c = accept(l, 0, 0), fds[3];
    char y;
    tain d;
    deadline(&d, 10);
    if (c < 0 || !fdpass_recv(c, &y, fds, 3, &d) || y != 'Y') _exit(2);
    if (!facts) _exit(0);
    if (write(c, facts, n) != (ssize_t)n) _exit(3);
    close(c);
    if (write(fds[2], "hello", 5) != 5) _exit(4);
    if (write(fds[1], "net", 3) != 3) _exit(5); /* stands for the TLS records */
    _exit(0);
  }
}

int main(void)
{
  int sv[2], fds[3], got[3];
  char c = 0;
  tain d;
  static char const facts[] = "SSL_PROTOCOL=TLSv1.2\0SSL_CIPHER=X\0";
  char path[64] = "/tmp/unit-fdpass-XXXXXX";

  /* fdpass alone: exact count, wrong count refused (and the descriptors closed) */
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  CHECK(pipe(fds) == 0);
  fds[2] = fds[0];
  deadline(&d, 5);
  CHECK(fdpass_send(sv[0], 'Y', fds, 3, &d) == 1);
  CHECK(fdpass_recv(sv[1], &c, got, 3, &d) == 1 && c == 'Y');
  CHECK(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
  CHECK(write(fds[1], "x", 1) == 1 && read(got[2], &c, 1) == 1 && c == 'x');
  CHECK(fdpass_send(sv[0], 'Y', fds, 2, &d) == 1);
  CHECK(fdpass_recv(sv[1], &c, got, 3, &d) == 0 && errno == EPROTO);
  CHECK(write(sv[0], "Y", 1) == 1); /* no descriptor at all */
  CHECK(fdpass_recv(sv[1], &c, got, 3, &d) == 0 && errno == EPROTO);
  deadline(&d, 0);
  CHECK(fdpass_recv(sv[1], &c, got, 3, &d) == 0 && errno == ETIMEDOUT);
  close(sv[1]);
  deadline(&d, 5);
  CHECK(fdpass_recv(sv[0], &c, got, 3, &d) == 0 && errno == EPIPE);
  close(sv[0]);

  /* ucspitls with TLS_ENGINE */
  {
    int net[2], st, r = -1, w = -1;
    char buf[16];
    pid_t pid;
    CHECK(mkdtemp(path) != 0);
    strcat(path, "/s");
    unsetenv("SSLCTLFD");
    setenv("TLS_ENGINE", path, 1);
    CHECK(ucspitls_available());
    CHECK(ucspitls_setup() == UCSPITLS_ENGINE);
    CHECK(!ucspitls_ready(UCSPITLS_ENGINE)); /* nobody listens yet */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, net) == 0);
    CHECK(dup2(net[0], 0) == 0 && dup2(net[0], 1) == 1);
    close(net[0]);
    pid = fake_engine(path, facts, sizeof facts);
    CHECK(pid > 0);
    CHECK(ucspitls_ready(UCSPITLS_ENGINE));
    CHECK(ucspitls_start(&r, &w) == 1 && r == w && r > 2);
    CHECK(getenv("SSL_CIPHER") && !strcmp(getenv("SSL_CIPHER"), "X"));
    CHECK(!getenv("TLS_ENGINE"));
    CHECK(read(r, buf, 5) == 5 && !memcmp(buf, "hello", 5));
    { /* 0 and 1 are the plaintext socket now */
      struct stat a, b, c1;
      CHECK(fstat(r, &a) == 0 && fstat(0, &b) == 0 && fstat(1, &c1) == 0);
      CHECK(a.st_ino == b.st_ino && a.st_ino == c1.st_ino);
    }
    CHECK(read(net[1], buf, 3) == 3 && !memcmp(buf, "net", 3)); /* the engine has the net */
    close(0);
    close(1);
    close(r);
    CHECK(read(net[1], buf, 1) == 0); /* and nobody else: it is closed when they are */
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st));

    /* an engine that closes without the facts: the handshake failed */
    setenv("TLS_ENGINE", path, 1);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, net) == 0);
    CHECK(dup2(net[0], 0) == 0 && dup2(net[0], 1) == 1);
    close(net[0]);
    pid = fake_engine(path, 0, 0);
    CHECK(ucspitls_start(&r, &w) == 0 && errno == EPROTO);
    CHECK(waitpid(pid, &st, 0) == pid);
    unlink(path);
  }
  return CHECK_DONE();
}
