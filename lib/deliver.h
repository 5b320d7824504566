/* deliver: one message into one Maildir, durably (doc/deliver-maildir.8), as a function, so
 * that deliver-maildir runs it once per process or, as queue-spawn's worker (-W), once per
 * request over a socket without a process start per message.
 *
 * What it does: Return-Path and Delivered-To added, CRLF turned into LF, loop detection over
 * the header section, the Maildir++ quota (the account's in users.cdb, -q's, or maildirsize's
 * own), tmp/ -> fsync -> new/ -> fsync new/. Exit codes as qmail's: 0, 100, 111.
 * A delivery key (DELIVERY_KEY, doc/deliver-maildir.8) makes a retried delivery idempotent:
 * the new/ name comes from the key, and a message already delivered under it is not added
 * again (lib/maildir's maildir_keyname).
 *
 * Its messages ("deliver-maildir: fatal: ..." and "deliver-maildir: warning: ...", one line
 * each) are appended to a stralloc; the caller writes them where its report goes.
 */
#ifndef PILLARBOX_DELIVER_H
#define PILLARBOX_DELIVER_H

#include <skalibs/stralloc.h>

#define DELIVER_ADDR_MAX 1000 /* SENDER, RECIPIENT: longer is refused (100) */
#define DELIVER_MAXUSE 10000  /* requests queue-spawn gives one worker before it closes the
                               * worker's socket (a fresh one is started): bounds what a slow
                               * leak could cost */

typedef struct deliver_job_s deliver_job;
struct deliver_job_s {
  char const *dir;       /* the Maildir */
  char const *quota;     /* -q's argument, or 0 */
  char const *sender;    /* SENDER ("" if unset) */
  char const *recipient; /* RECIPIENT */
  char const *key;       /* DELIVERY_KEY, or 0 */
  unsigned long attempt; /* DELIVERY_ATTEMPT: 0 the first; later ones look for the key in
                          * cur/ too, where a reader may have moved the first copy */
  int fd;                /* the message */
};

/* Fills j from a command line "deliver-maildir [-q quota] DIR" and the environment (get(NAME)
 * returns a variable's value or 0). 0, or 100 with the reason in diag. */
int deliver_job_make(deliver_job *j, int argc, char const *const *argv,
                     char const *(*get)(char const *, void *), void *ctx, stralloc *diag);

/* Delivers j: 0, 100 or 111, with the reason (and any warning) appended to diag. */
int deliver_maildir(deliver_job const *j, stralloc *diag);

/* The worker: serves lib/qspawn local request records from sock (the message and the report
 * pipe come with each: the reason goes to the report) and answers each with an exit record,
 * until EOF or max requests. 0 at EOF or max, 111 on a broken socket. */
int deliver_serve(int sock, unsigned long max);

#endif
