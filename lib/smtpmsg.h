/* smtpmsg: one incoming SMTP message on its way into the queue, from the first byte after
 * DATA (or the first BDAT chunk) to the verdict.
 *
 * It owns: starting the injection (lib/inject) and writing our Received: field first (the
 * queue id in it when the queue announces one early); running the client's bytes through the
 * DATA / BDAT byte machine (lib/smtp: end of data, dot-unstuffing, bare CR / LF / NUL),
 * counting the size against databytes, counting the Received: hops, keeping the From: field
 * (lib/hdr) for the submission check; the verdict at the end; and committing with the
 * envelope. What the verdicts mean as SMTP replies is the caller's (smtp-receive).
 */
#ifndef PILLARBOX_SMTPMSG_H
#define PILLARBOX_SMTPMSG_H

#include <stddef.h>
#include <stdint.h>
#include <skalibs/stralloc.h>

#include "hdr.h"
#include "inject.h"
#include "smtp.h"

typedef struct smtpmsg_s smtpmsg;
struct smtpmsg_s {
  injector inj;
  int started;             /* inj holds a started injection */
  uint64_t size, max;      /* bytes written so far (our Received: counted), databytes */
  int toobig;
  int grabfrom;            /* keep the From: field */
  smtp_data dm;
  smtp_hops hops;
  hdr_grab from;
  smtp_trace trace;        /* for the Received: field, written with the first bytes */
  int headed;              /* it was */
};

/* Starts the injection with facts f (lib/inject, timeout seconds per I/O). The Received:
 * field built from t (a copy is kept: its strings must live until the commit) goes first into
 * the message with the first bytes of data, with the queue id when the queue announces it
 * early: so the caller's 354 goes out before the queue's answer is awaited, and the two round
 * trips overlap. bdat: BDAT mode. Returns 1, or 0 (nothing started, errno set: 451). */
int smtpmsg_start(smtpmsg *m, inject_facts const *f, unsigned int timeout, smtp_trace *t,
                  uint64_t databytes, int bdat, int grabfrom);

/* Runs client bytes in[0..n) through the byte machine into the queue. Returns the bytes
 * consumed; *done is set when the end of data (DATA mode) was reached. */
size_t smtpmsg_data(smtpmsg *m, char const *in, size_t n, int *done);

/* Ends a BDAT message (after its LAST chunk). */
void smtpmsg_bdat_end(smtpmsg *m);

/* Verdicts at the end of data, in the order they are decided */
#define SMTPMSG_OK 0
#define SMTPMSG_TOOBIG 1   /* over databytes: 552 5.3.4 */
#define SMTPMSG_BARE 2     /* bare CR or LF: 550 5.6.0 */
#define SMTPMSG_NUL 3      /* a NUL byte: 550 5.6.0 */
#define SMTPMSG_HOPS 4     /* hoplimit Received: fields already: 554 5.4.6 */

int smtpmsg_verdict(smtpmsg const *m, unsigned long hoplimit);

/* Commits with the envelope "F"sender"\0"("T"rcpt"\0")...: rcpts as kept by the caller
 * (each "T"addr NUL). Returns inject_commit's code; the queue id goes to id. */
int smtpmsg_commit(smtpmsg *m, char const *sender, size_t senderlen, char const *rcpts,
                   size_t rcptslen, stralloc *id);

/* Abandons the message (nothing committed). Safe to call twice. */
void smtpmsg_abort(smtpmsg *m);

#endif
