/* cdbmake: atomic rebuild of a constant database (tinycdb).
 *
 * cdbw_start(path) opens "path.tmp" (exclusive of other writers only through the caller's lock),
 * cdbw_add adds records, cdbw_finish writes the cdb, fsyncs it, renames it over path and fsyncs
 * the directory: a reader sees the old database or the new one, never half of one.
 * cdbw_abort removes the temporary file and leaves the old database in place.
 * This module and lib/cdbfile (read by lib/lookup and lib/authdb) are the only ones that use
 * tinycdb (NEVERS in tests/test_nevers.py).
 */
#ifndef PILLARBOX_CDBMAKE_H
#define PILLARBOX_CDBMAKE_H

#include <stddef.h>

typedef struct cdbw_s cdbw;

/* Permission bits of a private file (password hashes): owner only. */
#define CDBW_PRIVATE 0600

/* Returns a handle, or 0 with errno set. The database is mode 0644 (readable by every
 * program of the instance, whatever the umask). */
cdbw *cdbw_start(char const *path);

/* The same with the file mode given. A private mode (no group or other bits, e.g.
 * CDBW_PRIVATE) gets what cdbw_tmpfile gives a private file. */
cdbw *cdbw_start_mode(char const *path, unsigned int mode);

/* Creates tmp afresh (an old tmp is removed first, so its mode never carries over) to replace
 * path later, with exactly the permission bits mode whatever the umask (the file is created
 * with them; it is never more open than mode, not even for an instant). For a private mode:
 * when path exists, the new file keeps its owner and group and, if path was group-readable
 * but not world-readable, the group-read bit (never more): an administrator who gave the file to a
 * service's group once (chgrp G f; chmod 0640 f) keeps that through rebuilds. Setting the owner or
 * group may need root: when it fails the file is not made (errno EPERM), rather than locking the
 * service out silently. Returns an fd open for reading and writing, or -1 (errno). */
int cdbw_tmpfile(char const *tmp, char const *path, unsigned int mode);

/* Replaces path with s[0..n) atomically: path.tmp made by cdbw_tmpfile(mode), written,
 * fsynced, renamed over path, directory fsynced. 1 ok, 0 error (errno; tmp removed). */
int cdbw_writefile(char const *path, char const *s, size_t n, unsigned int mode);

/* Returns 1, or 0 with errno set (the handle stays valid for cdbw_abort). */
int cdbw_add(cdbw *w, char const *key, size_t klen, char const *data, size_t dlen);

/* 1 if a record with this key was already added, 0 if not, -1 on error. */
int cdbw_exists(cdbw *w, char const *key, size_t klen);

/* Commits and frees the handle. Returns 1, or 0 with errno set (temporary file removed). */
int cdbw_finish(cdbw *w);

/* Drops the temporary file and frees the handle. Keeps errno. */
void cdbw_abort(cdbw *w);

#endif
