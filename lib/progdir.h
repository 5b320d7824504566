/* progdir: where this program's sibling programs are.
 *
 * A program that other software runs by a fixed name (/usr/sbin/sendmail, from cron, PHP or
 * a mail reader, with whatever PATH they have) still finds the programs it runs itself
 * (queue-list, smtp-receive, queue-inject): progdir_path_prepend puts the directory of the
 * running executable (the real path of /proc/self/exe, symlinks resolved: the
 * libexec/pillarbox of an install) first in PATH. Services do not need it: their PATH comes
 * from the instance's env/.
 */
#ifndef PILLARBOX_PROGDIR_H
#define PILLARBOX_PROGDIR_H

#include <skalibs/stralloc.h>

/* The directory of the running executable into dir (NUL-terminated). 1, or 0 (errno set). */
int progdir_get(stralloc *dir);

/* PATH = that directory, then the old PATH (or "/usr/bin:/bin" when there was none), unless
 * it is first already. 1, or 0 (errno set; PATH unchanged). */
int progdir_path_prepend(void);

#endif
