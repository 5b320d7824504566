/* qresolve: what queue-run does with an envelope recipient the first time a message is
 * loaded (and again after queue-ctl requeue): lib/lookup resolves it (accounts, aliases,
 * +tag, catch-all) into local and remote delivery targets that replace it in the state.
 * The same mailbox reached twice in one message (a list and a +tag, say) gets one copy.
 */
#ifndef PILLARBOX_QRESOLVE_H
#define PILLARBOX_QRESOLVE_H

#include <stddef.h>
#include "queue.h"

#define QRESOLVE_OK 0      /* target i is now L or R; more targets may have been appended */
#define QRESOLVE_DUP 1     /* every target is delivered already by another: i is D */
#define QRESOLVE_FAILED 2  /* i is F with its diagnostic (no such user, loop, empty alias) */
#define QRESOLVE_TEMP (-1) /* the databases could not be read (errno): i stays N */
#define QRESOLVE_NOMEM (-2)

/* Resolves target i of (*t)[0..*n) (state N, ADDR the envelope recipient). *t may move. */
int qresolve(queue_target **t, size_t *n, size_t i);

#endif
