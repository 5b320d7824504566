/* dsn: building delivery status notifications (bounces), RFC 3464 / RFC 3462.
 *
 * A bounce is multipart/report; report-type=delivery-status with three parts: a human
 * explanation (text/plain), message/delivery-status (per-message fields, then one block of
 * per-recipient fields per failed recipient), and the original message's headers
 * (text/rfc822-headers). Pure: it only formats bytes into a stralloc.
 */
#ifndef PILLARBOX_DSN_H
#define PILLARBOX_DSN_H

#include <stddef.h>
#include <time.h>
#include <skalibs/stralloc.h>

typedef struct dsn_rcpt_s dsn_rcpt;
struct dsn_rcpt_s {
  char const *rcpt;       /* the recipient as given in the envelope */
  char const *status;     /* enhanced status, e.g. "5.1.1"; its class must follow the action
                           * (5 failed, 4 delayed, else 5.0.0 / 4.0.0 is written), except
                           * "4.4.7" (expired in the queue), kept with Action: failed */
  char const *diagnostic; /* "smtp; 550 5.1.1 no such user" or "x-pillarbox; ..." (may be NULL) */
  char const *remote_mta; /* host name of the remote MTA, or NULL */
  int action_delayed;     /* 0: Action: failed, 1: Action: delayed */
};

typedef struct dsn_msg_s dsn_msg;
struct dsn_msg_s {
  char const *me;       /* this host (Reporting-MTA, From: MAILER-DAEMON@me) */
  char const *to;       /* where the bounce goes: the original envelope sender */
  char const *queueid;  /* X-Pillarbox-Queue-ID of the original */
  time_t arrival;       /* Arrival-Date of the original */
  time_t now;           /* Date of the bounce */
  char const *message;  /* the original message (headers are copied, the body is not) */
  size_t messagelen;
};

/* Appends a complete RFC 5322 bounce message (CRLF line ends) to out.
 * Returns 1, or 0 on allocation failure. */
int dsn_build(stralloc *out, dsn_msg const *m, dsn_rcpt const *r, size_t n);

#endif
