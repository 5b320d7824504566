/* groupsync: one fsync of a directory for the renames that several processes made into it.
 *
 * A message is durable once its file was fsync'ed, renamed (or linked) into its directory and
 * the directory fsync'ed after the rename. When twenty workers commit into the same directory
 * (queue/mess/, a busy Maildir's new/), twenty directory fsyncs in a row each write the same
 * block and flush the disk. An fsync of the directory that began after a rename completed
 * makes that rename durable, whoever calls it; so each process, after its rename, takes a
 * number, and one of the processes waiting fsyncs for everybody who took a number before it
 * began (a group commit, as a database's log writer does).
 *
 * The promise is unchanged: groupsync_fsync returns 0 only after an fsync of dirfd's
 * directory that began after the caller's rename completed returned 0 (the caller's own, or
 * another process's). A failed fsync covers nobody: each waiter then fsyncs itself and gets
 * its own answer.
 *
 * The shared state is a small table in memory that all the processes map (groupsync_make
 * makes it, a memfd: inherited over fork, or passed to an exec'ed worker as a descriptor):
 * GROUPSYNC_SLOTS slots, a directory (device, inode) in one slot at a time. Two locks per
 * slot, both robust process-shared mutexes (a process killed while holding one leaves the
 * slot usable; the next holder resets what it cannot trust): "reg" is held for a few
 * instructions to take a number, "sync" for the whole fsync. A directory that finds its slot
 * held by another one takes it over (the slot's epoch changes: the numbers taken before mean
 * nothing then, and their holders fsync themselves). Without a table (groupsync_init not
 * called, or it failed) groupsync_fsync is fsync. */
#ifndef PILLARBOX_GROUPSYNC_H
#define PILLARBOX_GROUPSYNC_H

#include <sys/types.h>

#define GROUPSYNC_SLOTS 64

typedef struct groupsync_s groupsync;
struct groupsync_s {
  struct groupsync_table_s *t; /* the mapping, or 0: plain fsync */
  int (*sync)(int);            /* fsync (a unit test may count or delay) */
};
#define GROUPSYNC_ZERO {0, 0}

/* A new table in a memfd (close-on-exec): the fd, or -1 (errno). */
int groupsync_make(void);

/* Maps the table of fd (groupsync_make's, or a copy passed down). 1, or 0 (errno; g then
 * does plain fsyncs). fd may be closed afterwards. */
int groupsync_init(groupsync *g, int fd);

/* After a rename or link into the directory open as dirfd has completed: makes it durable.
 * 0, or -1 with errno from the fsync that was the caller's own. g may be 0: fsync(dirfd). */
int groupsync_fsync(groupsync *g, int dirfd);

/* The slot a directory looks at first (the unit test finds two directories that share one). */
unsigned int groupsync_home(dev_t dev, ino_t ino);

/* What this process saw (for tests and the performance notes): fsyncs it made, and commits
 * another process's fsync covered. */
extern unsigned long groupsync_own, groupsync_covered;

#endif
