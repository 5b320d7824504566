/* spawn: posix_spawn with an fd map, default signals and an edited environment; the uid-changing
 * vfork variant and the fork of a child that runs a function (spawn.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
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

pid_t spawn(char const *const *argv, char const *const *envp, spawn_fd const *map, unsigned int n)
{
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t none, all;
  int moved[SPAWN_FDMAX], src[SPAWN_FDMAX];
  unsigned int i, j;
  pid_t pid = -1;
  int e = 0;
  if (n > SPAWN_FDMAX || !argv || !argv[0]) {
    errno = EINVAL;
    return -1;
  }
  /* A parent fd that is some pair's child fd could be overwritten before it is copied: copy
   * it out of the way first (close-on-exec, closed again below). */
  for (i = 0; i < n; i++) moved[i] = -1;
  for (i = 0; i < n; i++) {
    src[i] = map[i].parent;
    if (src[i] < 0) continue;
    for (j = 0; j < n; j++)
      if (map[j].child == src[i] && j != i) break;
    if (j < n) {
      moved[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
      if (moved[i] < 0) goto closemoved;
      src[i] = moved[i];
    }
  }
  if ((e = posix_spawn_file_actions_init(&fa))) goto closemoved;
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
closemoved:
  if (!e && pid < 0) e = errno;
  for (i = 0; i < n; i++)
    if (moved[i] >= 0) close(moved[i]);
  if (e) {
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
