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

#endif
