/* control: the instance directory and its one-fact-per-file configuration.
 *
 * Every program finds its instance through $MAILROOT (default MAILROOT_DEFAULT, fixed at build
 * time). Control files hold one fact per line; blank lines and lines starting with '#' are
 * ignored, trailing white space (and CR) is stripped. A value that does not parse is an error
 * (the caller exits 100 naming the file), never silently a default.
 */
#ifndef PILLARBOX_CONTROL_H
#define PILLARBOX_CONTROL_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>
#include <skalibs/stralloc.h>

/* The instance root: $MAILROOT or the build-time default. Never NULL. */
char const *mailroot(void);

/* Reads the first meaningful line of MAILROOT/control/NAME into sa (no terminating NUL).
 * Returns 1 if found, 0 if the file is missing or has no meaningful line (sa empty), -1 on a
 * read error (errno set). */
int control_readline(stralloc *sa, char const *name);

/* Reads every meaningful line of control/NAME into sa, each line terminated by '\0'.
 * Returns 1, 0 (missing file: sa unchanged), -1 on error. */
int control_readlines(stralloc *sa, char const *name);

/* Reads an unsigned decimal from control/NAME; *u = def if the file is missing or empty.
 * Returns 1 on success, 0 if the file holds junk (errno = EINVAL), -1 on read error. */
int control_readuint(char const *name, unsigned long def, unsigned long *u);

/* Same, but dies with exit 100 naming the file on junk and 111 on read error. */
unsigned long control_uint(char const *name, unsigned long def);

/* control_uint, then brought into [min, max]. */
unsigned long control_uint_in(char const *name, unsigned long def, unsigned long min,
                              unsigned long max);

/* The default domain, where a bare local name ("root", "postmaster", cron's MAILTO) lives, as
 * qmail's control/defaultdomain: the first line of control/defaultdomain, else the first of
 * control/domains, else control/me. Lower-cased into sa (no NUL). Returns 1, 0 if none of the
 * three gives one (sa empty), -1 on a read error (errno set). */
int control_defaultdomain(stralloc *sa);

/* Path of a file inside the instance: MAILROOT/REL into sa, NUL-terminated.
 * Returns 1, or 0 on allocation failure. */
int mailroot_path(stralloc *sa, char const *rel);

/* Whether control files may have changed since they were read, told cheaply: a long-lived
 * process (a pool worker, lib/tcppool) keeps what it parsed from them and reads them again
 * only when control_stamp_same says 0. Take the stamp BEFORE reading the files: a change
 * between the stamp and the read then shows at the next look (one read too many, never one
 * too few). What is compared: MAILROOT's path; control/'s own inode and change time (a file
 * created, removed or renamed into place changes the directory); each file that existed at
 * the stamp: device, inode, size, modification and change time (an edit in place). A file
 * that was missing costs nothing (its creation changes the directory). A stamp whose times
 * are within CONTROL_STAMP_RACY seconds of when it was taken is never trusted (a second edit
 * within the file system's time granularity would leave the times as they were), so files
 * changed in the last seconds are read again each time until they are that old. Not seen: a
 * missing file that is a symbolic link whose target appears (the directory does not change);
 * what the client of an NFS attribute cache does not see yet. */
#define CONTROL_STAMP_MAX 24   /* files a stamp covers */
#define CONTROL_STAMP_RACY 2   /* seconds */

typedef struct control_filestamp_s control_filestamp;
struct control_filestamp_s {
  int present;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime, ctime;
};

typedef struct control_stamp_s control_stamp;
struct control_stamp_s {
  int valid;                  /* taken, and nothing failed */
  struct timespec taken;      /* when (CLOCK_REALTIME, the clock of file times) */
  stralloc dir;               /* MAILROOT/control, NUL-terminated */
  unsigned int n;
  char const *const *names;   /* the caller's (static) list */
  control_filestamp d, f[CONTROL_STAMP_MAX];
};

/* Records control/ and names[0..n) into s (zeroed the first time; n at most
 * CONTROL_STAMP_MAX; names must outlive s). 1, or 0 (s not valid, errno set: the caller
 * reads the files all the same, and takes a stamp again next time). */
int control_stamp_take(control_stamp *s, char const *const *names, unsigned int n);

/* 1 if none of the files can have changed since s was taken (nothing racy, nothing
 * different), 0 if they may have (or s is not valid): read them again. */
int control_stamp_same(control_stamp const *s);

#endif
