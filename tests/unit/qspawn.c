/* unit: the spawner protocol (lib/qspawn): request records with two descriptors over a
 * SOCK_SEQPACKET pair, kill requests, exit reports, malformed records; the report parsers. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "qspawn.h"
#include "check.h"
char const *PROG = "unit-qspawn";

int main(void)
{
  int sv[2], p[2], rfd = -1, w;
  uint32_t h = 0, h2;
  qspawn sp;
  static qspawn_req req;
  char const *rc[2] = {"a@far.test", "b@far.test"};

  CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
  CHECK(pipe(p) == 0);
  sp.fd = sv[0]; /* as qspawn_init leaves it: non-blocking */
  sp.nextid = 0;
  CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
  /* a local request: both fds arrive, with the environment and the arguments */
  CHECK(qspawn_local(&sp, p[0], "/m/dir", "s@x.test", "bob@x.test", 0, 0, &rfd, &h) == 1);
  CHECK(h == 1 && rfd >= 0);
  CHECK(qspawn_recv(sv[1], &req) == 1);
  CHECK(req.kind == QSPAWN_LOCAL && req.id == 1);
  CHECK(req.fd[0] >= 0 && req.fd[1] >= 0);
  CHECK(!strcmp(req.env[0], "SENDER=s@x.test") && !strcmp(req.env[1], "RECIPIENT=bob@x.test") &&
        !req.env[2]);
  CHECK(!strcmp(req.argv[0], "deliver-maildir") && !strcmp(req.argv[1], "/m/dir") && !req.argv[2]);
  /* the report pipe works end to end: what the child writes, queue-run reads */
  CHECK(write(req.fd[1], "hello\n", 6) == 6);
  close(req.fd[0]);
  close(req.fd[1]);
  {
    stralloc out = STRALLOC_ZERO;
    int fd = rfd;
    while (fd >= 0) CHECK(qspawn_readout(&fd, &out, 100) == 1);
    CHECK(out.len == 6 && !memcmp(out.s, "hello\n", 6));
    stralloc_free(&out);
  }
  /* a remote request with a null sender */
  CHECK(qspawn_remote(&sp, p[0], "far.test", "", rc, 2, &rfd, &h2) == 1 && h2 == 2);
  CHECK(qspawn_recv(sv[1], &req) == 1 && req.kind == QSPAWN_REMOTE && req.id == 2 && !req.env[0]);
  CHECK(!strcmp(req.argv[0], "smtp-send") && !strcmp(req.argv[1], "far.test") &&
        !strcmp(req.argv[2], "<>") && !strcmp(req.argv[3], "a@far.test") &&
        !strcmp(req.argv[4], "b@far.test") && !req.argv[5]);
  close(req.fd[0]);
  close(req.fd[1]);
  close(rfd);
  /* kill, then the exit report back */
  CHECK(qspawn_kill(&sp, 2, SIGTERM) == 1);
  CHECK(qspawn_recv(sv[1], &req) == 1 && req.kind == QSPAWN_KILL && req.id == 2 &&
        req.sig == SIGTERM && req.fd[0] < 0);
  CHECK(qspawn_send_exit(sv[1], 2, 111 << 8) == 1);
  CHECK(qspawn_reap(&sp, &h, &w) == 1 && h == 2 && WIFEXITED(w) && WEXITSTATUS(w) == 111);
  CHECK(qspawn_reap(&sp, &h, &w) == 0); /* nothing more now */
  /* malformed records are refused, their descriptors closed */
  CHECK(send(sv[0], "Lx\0" "0\0deliver-maildir\0", 20, 0) == 20);
  CHECK(qspawn_recv(sv[1], &req) == -1 && errno == EPROTO);
  CHECK(send(sv[0], "Z1\0" "0\0x\0", 7, 0) == 7);
  CHECK(qspawn_recv(sv[1], &req) == -1 && errno == EPROTO);
  CHECK(send(sv[0], "L1\0" "0\0deliver-maildir\0", 20, 0) == 20); /* no descriptors */
  CHECK(qspawn_recv(sv[1], &req) == -1 && errno == EPROTO);
  CHECK(send(sv[1], "Y1\0" "0\0", 5, 0) == 5);
  CHECK(qspawn_reap(&sp, &h, &w) == -1 && errno == EPROTO);
  /* the spawner gone: reap says so */
  close(sv[1]);
  CHECK(qspawn_reap(&sp, &h, &w) == -1);
  close(sv[0]);

  /* direct: posix_spawn, exit learned by waitpid; a missing program fails at once */
  {
    qspawn d;
    int devnull = open("/dev/null", O_RDONLY), fd = -1;
    char const *argv[] = {"sh", "-c", "cat; echo oops >&2; exit 7", 0};
    char const *env[] = {"SENDER=x@y"};
    stralloc out = STRALLOC_ZERO;
    d.fd = -1;
    d.nextid = 0;
    CHECK(qspawn_start(&d, QSPAWN_LOCAL, argv, env, 1, devnull, &fd, &h) == 1);
    while (fd >= 0) CHECK(qspawn_readout(&fd, &out, 100) == 1);
    for (;;) {
      int r = qspawn_reap(&d, &h2, &w);
      struct timespec ts = {0, 1000000};
      if (r == 1) break;
      nanosleep(&ts, 0);
    }
    CHECK(h2 == h && WEXITSTATUS(w) == 7);
    {
      char const *s;
      size_t l;
      qspawn_lastline(&out, &s, &l);
      CHECK(l == 4 && !memcmp(s, "oops", 4));
    }
    argv[0] = "/nonexistent/deliver-maildir";
    CHECK(qspawn_start(&d, QSPAWN_LOCAL, argv, env, 1, devnull, &fd, &h) == 0 && errno == ENOENT);
    stralloc_free(&out);
    close(devnull);
  }

  /* the report parsers */
  {
    stralloc o = STRALLOC_ZERO;
    char const *f[4], *s;
    size_t fl[4], pos = 0, l;
    stralloc_cats(&o, "D\ta@far.test\tmx.far.test\t250 ok\nT\tb@far.test\t-\t451 later\n");
    CHECK(qspawn_report_line(&o, &pos, "a@far.test", f, fl) == 1 && f[0][0] == 'D' &&
          fl[2] == 11 && !memcmp(f[3], "250 ok", 6));
    CHECK(qspawn_report_line(&o, &pos, "c@far.test", f, fl) == 0); /* b's line: not c's */
    CHECK(qspawn_report_line(&o, &pos, "b@far.test", f, fl) == 0); /* consumed */
    o.len = 0;
    stralloc_cats(&o, "deliver-maildir: fatal: over quota: Maildir /m\n\n");
    qspawn_lastline(&o, &s, &l);
    CHECK(l == 22 && !memcmp(s, "over quota: Maildir /m", 22));
    stralloc_free(&o);
  }
  return CHECK_DONE();
}
