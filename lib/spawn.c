/* spawn: posix_spawn with an fd map, default signals and an edited environment; the uid-changing
 * vfork variant and the fork of a child that runs a function (spawn.h). */
#define _GNU_SOURCE /* execvpe, setgroups (spawn_as) */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#include "spawn.h"

extern char **environ;

/* The name part of "NAME=VALUE" (or of "NAME") has length n. */
static size_t namelen(char const *s)
{
  char const *e = strchr(s, '=');
  return e ? (size_t)(e - s) : strlen(s);
}

int spawn_env(char const **out, size_t max, char const *const *mods, size_t nmods)
{
  size_t n = 0, i, j;
  for (i = 0; environ[i]; i++) {
    size_t l = namelen(environ[i]);
    for (j = 0; j < nmods; j++)
      if (namelen(mods[j]) == l && !memcmp(mods[j], environ[i], l)) break;
    if (j < nmods) continue; /* replaced or removed below */
    if (n + 1 >= max) goto toobig;
    out[n++] = environ[i];
  }
  for (j = 0; j < nmods; j++) {
    size_t k;
    if (!strchr(mods[j], '=')) continue;
    for (k = j + 1; k < nmods; k++) /* the last setting of a name wins */
      if (namelen(mods[k]) == namelen(mods[j]) && !memcmp(mods[k], mods[j], namelen(mods[j])))
        break;
    if (k < nmods) continue;
    if (n + 1 >= max) goto toobig;
    out[n++] = mods[j];
  }
  out[n] = 0;
  return 0;
toobig:
  if (max) out[0] = 0;
  errno = E2BIG;
  return -1;
}

static void closemoved(int const *moved, unsigned int n)
{
  unsigned int i;
  for (i = 0; i < n; i++)
    if (moved[i] >= 0) close(moved[i]);
}

/* A parent fd that is some pair's child fd could be overwritten before it is copied: copies
 * it out of the way first (close-on-exec; closemoved closes the copies). src[i] is the fd to
 * copy for map[i]. Returns 0, or -1 (errno) with nothing left open. */
static int unclash(spawn_fd const *map, unsigned int n, int *src, int *moved)
{
  unsigned int i, j;
  for (i = 0; i < n; i++) moved[i] = -1;
  for (i = 0; i < n; i++) {
    src[i] = map[i].parent;
    if (src[i] < 0) continue;
    for (j = 0; j < n; j++)
      if (map[j].child == src[i] && j != i) break;
    if (j < n) {
      moved[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
      if (moved[i] < 0) {
        int e = errno;
        closemoved(moved, i);
        errno = e;
        return -1;
      }
      src[i] = moved[i];
    }
  }
  return 0;
}

pid_t spawn(char const *const *argv, char const *const *envp, spawn_fd const *map, unsigned int n)
{
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t none, all;
  int moved[SPAWN_FDMAX], src[SPAWN_FDMAX];
  unsigned int i;
  pid_t pid = -1;
  int e = 0;
  if (n > SPAWN_FDMAX || !argv || !argv[0]) {
    errno = EINVAL;
    return -1;
  }
  if (unclash(map, n, src, moved) < 0) return -1;
  if ((e = posix_spawn_file_actions_init(&fa))) goto destroyed;
  if ((e = posix_spawnattr_init(&at))) goto destroyfa;
  for (i = 0; i < n && !e; i++) {
    if (src[i] == SPAWN_DEVNULL)
      e = posix_spawn_file_actions_addopen(&fa, map[i].child, "/dev/null", O_RDWR, 0);
    else if (src[i] < 0)
      e = EBADF;
    else /* dup2 onto itself clears close-on-exec (POSIX 2024, glibc >= 2.29) */
      e = posix_spawn_file_actions_adddup2(&fa, src[i], map[i].child);
  }
  sigemptyset(&none);
  sigfillset(&all);
  if (!e) e = posix_spawnattr_setsigmask(&at, &none);
  if (!e) e = posix_spawnattr_setsigdefault(&at, &all);
  if (!e) e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (!e) {
    char *const *ev = envp ? (char *const *)envp : environ;
    if (strchr(argv[0], '/'))
      e = posix_spawn(&pid, argv[0], &fa, &at, (char *const *)argv, ev);
    else
      e = posix_spawnp(&pid, argv[0], &fa, &at, (char *const *)argv, ev);
  }
  posix_spawnattr_destroy(&at);
destroyfa:
  posix_spawn_file_actions_destroy(&fa);
destroyed:
  if (!e && pid < 0) e = errno;
  closemoved(moved, n);
  if (e) {
    errno = e;
    return -1;
  }
  return pid;
}

/* The child of spawn_as, between vfork and exec. It shares the parent's memory: it changes only
 * its own fds, signal dispositions, mask and credentials, and stores errno in *err (the one
 * word of the parent it writes) before it _exits. */
static void as_child(char const *const *argv, char *const *envp, spawn_fd const *map,
                     unsigned int n, int const *src, spawn_id const *id, int volatile *err)
{
  struct sigaction dfl;
  sigset_t none;
  unsigned int i;
  int sig;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, 0); /* fails past SIGRTMAX */
  for (i = 0; i < n; i++) { /* copies first: /dev/null's fd must not land on a source */
    if (src[i] < 0) continue;
    if (src[i] == map[i].child ? fcntl(src[i], F_SETFD, 0) < 0 : dup2(src[i], map[i].child) < 0)
      goto fail;
  }
  for (i = 0; i < n; i++) {
    int fd;
    if (src[i] != SPAWN_DEVNULL) continue;
    fd = open("/dev/null", O_RDWR);
    if (fd < 0) goto fail;
    if (fd != map[i].child) {
      if (dup2(fd, map[i].child) < 0) goto fail;
      close(fd);
    }
  }
  if (setgroups(id->ngroups, id->groups) < 0 || setgid(id->gid) < 0 || setuid(id->uid) < 0)
    goto fail;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, 0);
  if (strchr(argv[0], '/')) execve(argv[0], (char *const *)argv, envp);
  else execvpe(argv[0], (char *const *)argv, envp);
fail:
  *err = errno ? errno : EINVAL;
  _exit(127);
}

pid_t spawn_as(char const *const *argv, char const *const *envp, spawn_fd const *map,
               unsigned int n, spawn_id const *id)
{
  int moved[SPAWN_FDMAX], src[SPAWN_FDMAX];
  int volatile err = 0;
  sigset_t all, old;
  unsigned int i;
  pid_t pid;
  int e;
  if (!id) return spawn(argv, envp, map, n);
  if (n > SPAWN_FDMAX || !argv || !argv[0]) {
    errno = EINVAL;
    return -1;
  }
  for (i = 0; i < n; i++)
    if (map[i].parent < 0 && map[i].parent != SPAWN_DEVNULL) {
      errno = EBADF;
      return -1;
    }
  if (unclash(map, n, src, moved) < 0) return -1;
  /* no handler of ours may run in the child while it shares our memory: everything is blocked
   * until the child has set every signal to its default (as glibc's posix_spawn does) */
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  pid = vfork();
  if (!pid)
    as_child(argv, envp ? (char *const *)envp : environ, map, n, src, id, &err);
  e = errno;
  sigprocmask(SIG_SETMASK, &old, 0);
  closemoved(moved, n);
  if (pid < 0) {
    errno = e;
    return -1;
  }
  if (err) { /* the child could not become id or exec: reap it, say why */
    e = err;
    while (waitpid(pid, 0, 0) < 0 && errno == EINTR) ;
    errno = e;
    return -1;
  }
  return pid;
}

pid_t spawn_call(int (*fn)(void *), void *arg)
{
  pid_t pid = fork();
  if (!pid) _exit(fn(arg));
  return pid;
}
