/* spawn: starting a child program, the one place where pillarbox creates processes: spawn()
 * for a program (posix_spawn), spawn_as() for a program under other uids (a root spawner),
 * spawn_call() for the rare child that runs our own code and never execs.
 *
 * spawn() is posix_spawn(3) with an fd map: glibc implements it with clone(CLONE_VM|CLONE_VFORK),
 * so the parent's page tables are never copied (a queue-run holding a large index starts a
 * delivery as cheaply as a tiny program does), and an exec failure comes back to the parent as
 * an errno instead of an exit code of a child that has to be reaped.
 *
 * The child gets:
 *   - for each {child, parent} pair of the map, fd `child` = a copy of the parent's fd `parent`
 *     (without close-on-exec), or /dev/null opened read-write when `parent` is SPAWN_DEVNULL;
 *     pairs may cross (parent 0 -> child 1 and parent 1 -> child 0 work);
 *   - every other fd of the parent that is not close-on-exec, as exec would (keep the parent's
 *     own fds close-on-exec: pipecoe, open with O_CLOEXEC);
 *   - every signal at its default disposition and an empty signal mask (a parent with a
 *     selfpipe, or with SIGPIPE ignored, passes neither on);
 *   - the environment envp (NULL: the parent's environ); spawn_env builds one with some
 *     variables set or removed;
 *   - argv[0] searched in PATH when it holds no '/', run as is otherwise.
 * The parent's fds are left as they were: close the child's ends after spawn() yourself.
 *
 * Returns the pid, or -1 with errno set (ENOENT / EACCES when the program cannot be run; no
 * child is left to reap then). Async-signal-unsafe like posix_spawn; not for use in a child.
 */
#ifndef PILLARBOX_SPAWN_H
#define PILLARBOX_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#define SPAWN_DEVNULL (-2) /* as a map's parent fd: /dev/null in the child */
#define SPAWN_FDMAX 8      /* entries of a map */
#define SPAWN_ENVMAX 512   /* variables spawn_env passes on (more: it fails with E2BIG) */

typedef struct spawn_fd_s {
  int child;  /* the fd number the child sees */
  int parent; /* the parent's fd, or SPAWN_DEVNULL */
} spawn_fd;

pid_t spawn(char const *const *argv, char const *const *envp, spawn_fd const *map, unsigned int n);

/* Builds into out[0..max) (NULL-terminated) the parent's environment modified by mods: each
 * mods entry "NAME=VALUE" sets NAME, "NAME" alone removes it. The strings are not copied:
 * out points into environ and mods, which must outlive the spawn() call. Returns 0, or -1
 * with errno E2BIG when out is too small. */
int spawn_env(char const **out, size_t max, char const *const *mods, size_t nmods);

/* Who a spawn_as child becomes before it execs: supplementary groups, gid, then uid. */
typedef struct spawn_id_s {
  uid_t uid;
  gid_t gid;
  gid_t const *groups;
  size_t ngroups;
} spawn_id;

/* spawn() whose child sets its groups, gid and uid to *id before it execs: for a root spawner
 * that starts each child under the uid of its role (queue-spawn, after qmail-lspawn). With
 * id NULL it is spawn(). posix_spawn cannot change uids, so this is vfork(2) with the same
 * promises as spawn() (fd map, default signals, empty mask, PATH search, the parent's fds as
 * they were); the parent's signals are blocked while the child runs in its memory. When the
 * child cannot take the ids or exec, it is reaped and -1 comes back with its errno (EPERM,
 * ENOENT, EACCES...). Single-threaded callers only (setuid in a vfork child). */
pid_t spawn_as(char const *const *argv, char const *const *envp, spawn_fd const *map,
               unsigned int n, spawn_id const *id);

/* Runs fn(arg) in a child, a copy of this process made by fork(2), which then exits with fn's
 * return value (or sooner, by fn's own _exit): the child never returns into the caller's code.
 * For the children that must not exec: tls-serve's TLS engine keeps the keys the application
 * wipes, auth-serve's hashing children work on the request in memory. The child keeps the
 * parent's fds, signal dispositions and mask (a selfpipe's handlers included: fn sets what it
 * needs). Returns the child's pid, or -1 with errno set. */
pid_t spawn_call(int (*fn)(void *), void *arg);

#endif
