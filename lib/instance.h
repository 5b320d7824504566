/* instance: who owns what under MAILROOT (the privilege model; doc/security.md).
 *
 * Each part of an instance belongs to one role, and the owner of a role is the owner (uid and
 * group) of the role's directory, as mail-instance made it:
 *   INSTANCE_MAIL     mail/      pb-deliv when the instance was made by root
 *   INSTANCE_QUEUE    queue/     pb-queue
 *   INSTANCE_LOG      log/       pb-log
 *   INSTANCE_CONTROL  control/   root (the admin's)
 *   INSTANCE_AUTH     run/auth/  pb-auth
 * An instance made by an unprivileged user has every directory owned by that user, so the
 * same calls give every file to that user.
 *
 * Admin commands call instance_own (or instance_own_tree) on every file or directory they
 * create under a role's directory: run by root, the file gets the role's owner; run by anyone
 * else it already belongs to the only uid that could have made it, and nothing is done.
 * Symbolic links are never followed (lchown, and the tree walk does not descend into them).
 */
#ifndef PILLARBOX_INSTANCE_H
#define PILLARBOX_INSTANCE_H

#include <sys/types.h>

#define INSTANCE_MAIL 0
#define INSTANCE_QUEUE 1
#define INSTANCE_LOG 2
#define INSTANCE_CONTROL 3
#define INSTANCE_AUTH 4

/* The directory of a role, relative to MAILROOT ("mail", "queue", ...), or 0. */
char const *instance_role_dir(int role);

/* The owner of role: 1 with *uid and *gid set; -1 if the role's directory cannot be looked at
 * (errno). */
int instance_owner(int role, uid_t *uid, gid_t *gid);

/* Gives path (not followed if a symbolic link) to the owner of role when the caller is root;
 * nothing otherwise. 1 ok, -1 error (errno). */
int instance_own(char const *path, int role);

/* The same for an open file. */
int instance_fown(int fd, int role);

/* instance_own on path and, if it is a directory, on everything below it. 1 ok, -1 error. */
int instance_own_tree(char const *path, int role);

/* lchown of path and everything below it to uid:gid (no link followed). 1 ok, -1 error. */
int instance_chown_tree(char const *path, uid_t uid, gid_t gid);

#endif
