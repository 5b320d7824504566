/* cdbmake: atomic rebuild of a constant database (tinycdb).
 *
 * cdbw_start(path) opens "path.tmp" (exclusive of other writers only through the caller's lock),
 * cdbw_add adds records, cdbw_finish writes the cdb, fsyncs it, renames it over path and fsyncs
 * the directory: a reader sees the old database or the new one, never half of one.
 * cdbw_abort removes the temporary file and leaves the old database in place.
 * This module and lookup.c are the only ones that include <cdb.h>.
 */
#ifndef PILLARBOX_CDBMAKE_H
#define PILLARBOX_CDBMAKE_H

#include <stddef.h>

typedef struct cdbw_s cdbw;

/* Returns a handle, or 0 with errno set. */
cdbw *cdbw_start(char const *path);

/* Returns 1, or 0 with errno set (the handle stays valid for cdbw_abort). */
int cdbw_add(cdbw *w, char const *key, size_t klen, char const *data, size_t dlen);

/* 1 if a record with this key was already added, 0 if not, -1 on error. */
int cdbw_exists(cdbw *w, char const *key, size_t klen);

/* Commits and frees the handle. Returns 1, or 0 with errno set (temporary file removed). */
int cdbw_finish(cdbw *w);

/* Drops the temporary file and frees the handle. Keeps errno. */
void cdbw_abort(cdbw *w);

#endif
