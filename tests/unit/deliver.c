/* unit: lib/deliver: a job from a command line and variables, a delivery into a Maildir in
 * the current directory, the delivery key (twice the same delivery: one file), the reasons
 * given, and the worker loop answering lib/qspawn requests over a socket pair. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "deliver.h"
#include "maildir.h"
#include "qspawn.h"
#include "check.h"
char const *PROG = "unit-deliver";

static char const *vars[8];
static char const *get(char const *name, void *ctx)
{
  size_t n = strlen(name), i;
  (void)ctx;
  for (i = 0; vars[i]; i++)
    if (!strncmp(vars[i], name, n) && vars[i][n] == '=') return vars[i] + n + 1;
  return 0;
}

static int count(char const *sub)
{
  DIR *d = opendir(sub);
  struct dirent *de;
  int n = 0;
  if (!d) return -1;
  while ((de = readdir(d)))
    if (de->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* a message on a pipe's read end */
static int msgfd(char const *s)
{
  int p[2];
  if (pipe(p) < 0) return -1;
  if (write(p[1], s, strlen(s)) != (ssize_t)strlen(s)) return -1;
  close(p[1]);
  return p[0];
}

int main(void)
{
  char const *argv[] = {"deliver-maildir", "md", 0};
  char const *bad[] = {"deliver-maildir", 0};
  stralloc d = STRALLOC_ZERO;
  deliver_job j;
  int sv[2], rp[2], fds[2];
  char buf[256];
  qspawn sp;
  uint32_t id;
  int w, rfd;

  unsetenv("MAILROOT");
  CHECK(maildir_make("md", 0700) == 1);
  /* the job */
  vars[0] = "SENDER=s@x.test";
  vars[1] = 0;
  CHECK(deliver_job_make(&j, 2, argv, &get, 0, &d) == 100 && strstr(d.s, "RECIPIENT"));
  d.len = 0;
  CHECK(deliver_job_make(&j, 1, bad, &get, 0, &d) == 100);
  vars[1] = "RECIPIENT=bob@x.test";
  vars[2] = "DELIVERY_KEY=1700000000.5.6T0";
  vars[3] = 0;
  d.len = 0;
  CHECK(deliver_job_make(&j, 2, argv, &get, 0, &d) == 0 && !d.len);
  CHECK(!strcmp(j.dir, "md") && !strcmp(j.key, "1700000000.5.6T0") && !j.attempt);
  /* a keyed delivery, twice: one file, the second a success that adds nothing */
  j.fd = msgfd("Subject: a\r\n\r\nbody\r\n");
  CHECK(deliver_maildir(&j, &d) == 0 && !d.len);
  close(j.fd);
  CHECK(count("md/new") == 1 && count("md/tmp") == 0);
  j.fd = msgfd("Subject: a\r\n\r\nbody\r\n");
  CHECK(deliver_maildir(&j, &d) == 0 && !d.len);
  close(j.fd);
  CHECK(count("md/new") == 1 && count("md/tmp") == 0);
  /* a loop is refused with its reason, nothing left */
  j.key = 0;
  j.fd = msgfd("Delivered-To: bob@x.test\n\nx\n");
  CHECK(deliver_maildir(&j, &d) == 100 && strstr(d.s, "deliver-maildir: fatal: mail loop"));
  close(j.fd);
  CHECK(count("md/new") == 1 && count("md/tmp") == 0);
  /* the worker: a request with its message and report pipe, an exit record back */
  CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
  CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
  sp.fd = sv[0];
  sp.nextid = 0;
  fds[0] = msgfd("Subject: w\n\nworker\n");
  CHECK(qspawn_local(&sp, fds[0], "md", "s@x.test", "bob@x.test", "1700000000.7T1", 0, &rfd,
                     &id) == 1);
  close(fds[0]);
  /* a second, malformed: not a Maildir */
  fds[1] = msgfd("Subject: w\n\nworker\n");
  CHECK(qspawn_local(&sp, fds[1], "nope", "s@x.test", "bob@x.test", 0, 0, &rp[0], &id) == 1);
  close(fds[1]);
  shutdown(sv[0], SHUT_WR);
  CHECK(deliver_serve(sv[1], 10) == 0); /* serves both, then EOF */
  CHECK(qspawn_reap(&sp, &id, &w) == 1 && id == 1 && w == 0);
  CHECK(qspawn_reap(&sp, &id, &w) == 1 && id == 2 && w == 111 << 8);
  CHECK(count("md/new") == 2);
  CHECK(read(rfd, buf, sizeof buf) == 0); /* no report for a success */
  {
    ssize_t n = read(rp[0], buf, sizeof buf - 1);
    CHECK(n > 0);
    buf[n > 0 ? n : 0] = 0;
    CHECK(strstr(buf, "deliver-maildir: fatal: unable to find Maildir nope") != 0);
  }
  stralloc_free(&d);
  return CHECK_DONE();
}
