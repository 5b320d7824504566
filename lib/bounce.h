/* bounce: the non-delivery report queue-run sends when recipients fail: which status and
 * remote MTA each failed recipient gets (from its diagnostic), the RFC 3464 message built by
 * lib/dsn with the original's header section, and its injection into the queue.
 *
 * Diagnostics are those of the state file (lib/queue.h): "R=HOST smtp; 550 5.1.1 ..." for a
 * remote answer (HOST the remote MTA, "-" for none), "x-pillarbox; 5.1.1 no such user" for a
 * local reason. The first enhanced status code in it is the recipient's Status (default
 * 5.0.0), so an expired message's "x-pillarbox; 4.4.7 ..." is reported as 4.4.7.
 */
#ifndef PILLARBOX_BOUNCE_H
#define PILLARBOX_BOUNCE_H

#include <stddef.h>
#include <stdint.h>
#include <skalibs/stralloc.h>
#include "queue.h"

#define BOUNCE_HEAD_MAX 131072 /* bytes of the original read for the returned header */

typedef struct bounce_item_s bounce_item;
struct bounce_item_s {
  char const *rcpt; /* the envelope recipient as the sender wrote it */
  char const *diag; /* the target's last diagnostic (state file form) */
};

typedef struct bounce_msg_s bounce_msg;
struct bounce_msg_s {
  char const *qdir;  /* the queue */
  char const *id;    /* the original message (its header is read from qdir/mess/ID) */
  uint64_t arrival;  /* of the original */
  uint64_t now;
  char const *me;    /* control/me */
  char const *to;    /* where the bounce goes: the sender, or the postmaster */
};

/* The first enhanced status code (X.Y.Z, X in 2 4 5, at the start or after a space) of
 * diag into buf (16 bytes), or "D.0.0" with D = dflt. Returns buf. */
char const *bounce_status(char const *diag, char *buf, char dflt);

/* Builds the report for items[0..n) and injects it (null sender, one recipient: m->to).
 * Returns QX_OK with the new id in newid (NUL-terminated), or a temporary qmail-queue code
 * (nothing queued). */
int bounce_send(bounce_msg const *m, bounce_item const *items, size_t n, stralloc *newid);

/* Where a bounce for sender goes, into out (NUL-terminated): sender itself; but a bare local
 * name ("root"), or an address at this host's own name (me, control/me) when that is not a
 * local domain (cron's root@HOSTNAME), goes to the same local part at the default domain
 * defdom (control/defaultdomain), never out to the Internet. 1, or 0 on allocation failure. */
int bounce_sender(stralloc *out, char const *sender, char const *me, char const *defdom);

/* The bounce of the failed (F) targets of a message, then those targets are marked bounced
 * (B). It goes to sender, or for a null sender to postmaster (NULL or "": nobody), and is
 * dropped when what failed was addressed to the postmaster (no bounce of a double bounce).
 * env[0..envlen) is the message's envelope (for the recipients as the sender wrote them).
 * m->to is set here. Returns BOUNCE_NONE (nothing failed), BOUNCE_SENT (*newid, *count
 * set), BOUNCE_DROPPED (targets marked B, nothing sent), or a qmail-queue code (> 0,
 * nothing changed: retry later). */
#define BOUNCE_NONE (-1)
#define BOUNCE_SENT 0
#define BOUNCE_DROPPED (-2)
int bounce_targets(bounce_msg *m, char const *sender, char const *postmaster, char const *env,
                   size_t envlen, queue_target *t, size_t nt, stralloc *newid, size_t *count);

#endif
