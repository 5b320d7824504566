/* unit: lib/spawn: fd maps (crossed, /dev/null), PATH search, exec failure, signals, env;
 * spawn_as (the same under other ids: root only for the uid change) and spawn_call */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spawn.h"
#include "check.h"
char const *PROG = "unit-spawn";

/* Reads what fd has until EOF into buf (NUL-terminated). */
static size_t slurp(int fd, char *buf, size_t max)
{
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, max - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  buf[n] = 0;
  return n;
}

/* pipe() with both ends close-on-exec, as the programs keep their own fds */
static int pipecloexec(int *p)
{
  if (pipe(p) < 0) return -1;
  if (fcntl(p[0], F_SETFD, FD_CLOEXEC) < 0 || fcntl(p[1], F_SETFD, FD_CLOEXEC) < 0) return -1;
  return 0;
}

static int add(void *p)
{
  int const *v = p;
  return v[0] + v[1];
}

static int status_of(pid_t pid)
{
  int st;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs sh -c SCRIPT with the map and returns its exit status (128 + signal if killed). */
static int run_sh(char const *script, spawn_fd const *map, unsigned int n)
{
  char const *argv[] = {"sh", "-c", script, 0};
  pid_t pid = spawn(argv, 0, map, n);
  return pid < 0 ? -1 : status_of(pid);
}

int main(void)
{
  char buf[4096];
  int p[2], q[2];

  /* a plain map: child's 1 = our pipe, PATH search for "sh" */
  {
    char const *argv[] = {"sh", "-c", "echo hello; exit 7", 0};
    spawn_fd map[] = {{0, SPAWN_DEVNULL}, {1, -1}};
    pid_t pid;
    CHECK(pipecloexec(p) == 0);
    map[1].parent = p[1];
    pid = spawn(argv, 0, map, 2);
    CHECK(pid > 0);
    close(p[1]);
    slurp(p[0], buf, sizeof buf);
    close(p[0]);
    CHECK(!strcmp(buf, "hello\n"));
    CHECK(status_of(pid) == 7);
  }

  /* crossed fds: two pipes' write ends swapped onto each other's numbers */
  {
    int a, b;
    CHECK(pipecloexec(p) == 0);
    CHECK(pipecloexec(q) == 0);
    /* put the two write ends on fds 8 and 9, then ask for 8 -> 9 and 9 -> 8 */
    a = fcntl(p[1], F_DUPFD_CLOEXEC, 20);
    b = fcntl(q[1], F_DUPFD_CLOEXEC, 20);
    CHECK(a >= 0 && b >= 0);
    CHECK(p[0] < 8 && q[0] < 8 && dup2(a, 8) == 8 && dup2(b, 9) == 9);
    CHECK(fcntl(8, F_SETFD, FD_CLOEXEC) == 0 && fcntl(9, F_SETFD, FD_CLOEXEC) == 0);
    close(a);
    close(b);
    close(p[1]);
    close(q[1]);
    {
      spawn_fd map[] = {{9, 8}, {8, 9}};
      CHECK(run_sh("echo to-nine >&9; echo to-eight >&8", map, 2) == 0);
    }
    close(8);
    close(9);
    slurp(p[0], buf, sizeof buf); /* p was on 8, which became the child's 9 */
    CHECK(!strcmp(buf, "to-nine\n"));
    slurp(q[0], buf, sizeof buf);
    CHECK(!strcmp(buf, "to-eight\n"));
    close(p[0]);
    close(q[0]);
  }

  /* a map onto itself clears close-on-exec; an unmapped close-on-exec fd stays closed */
  {
    int fd;
    spawn_fd map[] = {{0, 0}};
    CHECK(pipecloexec(p) == 0);
    fd = fcntl(p[1], F_DUPFD_CLOEXEC, 7);
    CHECK(fd >= 7);
    map[0].child = fd;
    map[0].parent = fd;
    snprintf(buf, sizeof buf, "echo kept >&%d && { echo leaked >&%d; } 2>/dev/null; exit 0", fd,
             p[1]);
    CHECK(run_sh(buf, map, 1) == 0);
    close(fd);
    close(p[1]);
    slurp(p[0], buf, sizeof buf);
    CHECK(!strcmp(buf, "kept\n"));
    close(p[0]);
  }

  /* /dev/null on fd 0: the child reads EOF at once */
  {
    spawn_fd map[] = {{0, SPAWN_DEVNULL}};
    CHECK(run_sh("if read x; then exit 1; fi; exit 0", map, 1) == 0);
  }

  /* signals: ignored SIGPIPE and a blocked SIGTERM in the parent are not passed on */
  {
    sigset_t s, old;
    void (*oldh)(int) = signal(SIGPIPE, SIG_IGN);
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    CHECK(sigprocmask(SIG_BLOCK, &s, &old) == 0);
    CHECK(run_sh("kill -TERM $$; exit 0", 0, 0) == 128 + SIGTERM);
    CHECK(run_sh("kill -PIPE $$; exit 0", 0, 0) == 128 + SIGPIPE);
    CHECK(sigprocmask(SIG_SETMASK, &old, 0) == 0);
    signal(SIGPIPE, oldh);
  }

  /* a program that does not exist: -1 ENOENT, and no child left behind */
  {
    char const *argv[] = {"pillarbox-no-such-program", 0};
    char const *argv2[] = {"/nonexistent/prog", 0};
    errno = 0;
    CHECK(spawn(argv, 0, 0, 0) < 0 && errno == ENOENT);
    errno = 0;
    CHECK(spawn(argv2, 0, 0, 0) < 0 && errno == ENOENT);
    CHECK(waitpid(-1, 0, WNOHANG) < 0 && errno == ECHILD);
  }

  /* a bad map entry: EBADF from the parent, no child */
  {
    char const *argv[] = {"true", 0};
    spawn_fd map[] = {{0, -1}};
    errno = 0;
    CHECK(spawn(argv, 0, map, 1) < 0 && errno == EBADF);
    CHECK(waitpid(-1, 0, WNOHANG) < 0 && errno == ECHILD);
  }

  /* spawn_env: set, replace, remove; the last setting wins */
  {
    char const *env[SPAWN_ENVMAX];
    char const *mods[] = {"PB_A=1", "PB_B", "PB_C=x", "PB_C=3"};
    char const *argv[] = {"sh", "-c",
                          "[ \"$PB_A\" = 1 ] && [ -z \"${PB_B+set}\" ] && [ \"$PB_C\" = 3 ] && "
                          "[ \"$PB_KEEP\" = kept ]",
                          0};
    pid_t pid;
    char const *tiny[2];
    setenv("PB_A", "0", 1);
    setenv("PB_B", "gone", 1);
    setenv("PB_KEEP", "kept", 1);
    CHECK(spawn_env(env, SPAWN_ENVMAX, mods, 4) == 0);
    pid = spawn(argv, env, 0, 0);
    CHECK(pid > 0 && status_of(pid) == 0);
    errno = 0;
    CHECK(spawn_env(tiny, 2, mods, 4) < 0 && errno == E2BIG);
  }
  /* spawn_as: our own ids (allowed without root) with a crossed map and a handler that must
   * be reset in the child; an exec failure is -1 with ENOENT and no child left */
  {
    gid_t g = getgid();
    spawn_id me = {getuid(), getgid(), &g, 1};
    char const *argv[] = {"sh", "-c", "kill -USR1 $$; echo ok; echo err >&2; id -u", 0};
    char const *bad[] = {"/nonexistent/prog", 0};
    char const *badp[] = {"pillarbox-no-such-program", 0};
    spawn_fd map[3];
    pid_t pid;
    int r;
    char want[64];
    CHECK(pipecloexec(p) == 0 && pipecloexec(q) == 0);
    map[0].child = 0, map[0].parent = SPAWN_DEVNULL;
    map[1].child = 1, map[1].parent = p[1];
    map[2].child = 2, map[2].parent = q[1];
    signal(SIGUSR1, SIG_IGN); /* default in the child: sh kills itself */
    /* setgroups needs root: not root, the NULL id takes the spawn() path */
    pid = spawn_as(argv, 0, map, 3, geteuid() ? 0 : &me);
    close(p[1]);
    close(q[1]);
    CHECK(pid > 0);
    r = pid > 0 ? status_of(pid) : -1;
    CHECK(r == 128 + SIGUSR1);
    CHECK(slurp(p[0], buf, sizeof buf) == 0);
    close(p[0]);
    close(q[0]);
    signal(SIGUSR1, SIG_DFL);
    errno = 0;
    CHECK(spawn_as(bad, 0, 0, 0, &me) < 0 && errno == ENOENT);
    errno = 0;
    CHECK(spawn_as(badp, 0, 0, 0, &me) < 0 && errno == ENOENT);
    CHECK(waitpid(-1, 0, WNOHANG) < 0 && errno == ECHILD);
    /* the output and the uid, without the signal */
    argv[2] = "echo ok; echo err >&2; id -u";
    CHECK(pipecloexec(p) == 0 && pipecloexec(q) == 0);
    map[1].parent = p[1];
    map[2].parent = q[1];
    pid = spawn_as(argv, 0, map, 3, geteuid() ? 0 : &me);
    close(p[1]);
    close(q[1]);
    CHECK(pid > 0 && status_of(pid) == 0);
    snprintf(want, sizeof want, "ok\n%u\n", (unsigned)getuid());
    slurp(p[0], buf, sizeof buf);
    CHECK(!strcmp(buf, want));
    slurp(q[0], buf, sizeof buf);
    CHECK(!strcmp(buf, "err\n"));
    close(p[0]);
    close(q[0]);
    if (!geteuid()) { /* root: the child really becomes another uid */
      spawn_id nobody = {65534, 65534, 0, 0};
      gid_t ng = 65534;
      nobody.groups = &ng;
      nobody.ngroups = 1;
      argv[2] = "[ \"$(id -u):$(id -g):$(id -G)\" = 65534:65534:65534 ]";
      pid = spawn_as(argv, 0, 0, 0, &nobody);
      CHECK(pid > 0 && status_of(pid) == 0);
    }
  }

  /* spawn_call: the child runs the function and exits with its value */
  {
    int v[2] = {40, 2};
    pid_t pid = spawn_call(&add, v);
    CHECK(pid > 0 && status_of(pid) == 42);
  }
  return CHECK_DONE();
}
