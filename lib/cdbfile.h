/* cdbfile: one constant database of the instance, kept open and fresh (tinycdb).
 *
 * A cdbfile names a file relative to MAILROOT. cdbfile_fresh stats it and reopens it when it
 * was replaced (another inode, size, mtime or ctime: the admin commands rebuild by rename), so
 * a long-running reader always sees the database on disk now, for one stat(2) per call. A
 * missing file reads as an empty database (open == CDBFILE_MISSING); one this process may not
 * read (EACCES) too, remembered until the file changes (open == CDBFILE_DENIED), so the
 * caller can tell "no such key" from "not allowed to know".
 * Values point into the mapping and stay valid until the next cdbfile_fresh or cdbfile_drop.
 * This module and its callers include <cdb.h> (tinycdb), never <skalibs/cdb.h>.
 */
#ifndef PILLARBOX_CDBFILE_H
#define PILLARBOX_CDBFILE_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>
#include <cdb.h>

#define CDBFILE_CLOSED 0
#define CDBFILE_OPEN 1
#define CDBFILE_MISSING 2
#define CDBFILE_DENIED 3

typedef struct cdbfile_s cdbfile;
struct cdbfile_s {
  char const *rel; /* path under MAILROOT, e.g. "control/users.cdb" */
  int open;        /* CDBFILE_* */
  int fd;
  struct cdb c;
  dev_t dev;
  ino_t ino;
  struct timespec mtime;
  struct timespec ctime; /* a chmod or chgrp changes only this (matters for DENIED) */
  off_t size;
};
#define CDBFILE_INIT(rel) {(rel), 0, -1, {0}, 0, 0, {0, 0}, {0, 0}, 0}

/* Makes sure d reflects the file on disk now. 1 ok, 0 error (errno). */
int cdbfile_fresh(cdbfile *d);

/* 1 found (value in *v, *vn; points into the mapping), 0 not (or not open), -1 error. */
int cdbfile_get(cdbfile *d, char const *k, size_t kn, char const **v, size_t *vn);

/* Closes the file; the next cdbfile_fresh reopens it. */
void cdbfile_drop(cdbfile *d);

#endif
