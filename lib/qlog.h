/* qlog: the pieces of queue-run's delivery log lines, which read like Postfix's:
 *   delivery ID to=<TARGET> orig_to=<RCPT> relay=RELAY delay=SECONDS status=STATUS (DIAG)
 * TARGET is where the message went (the account address or the outside address), RCPT the
 * envelope recipient it came from (before aliases), RELAY "local", the remote MTA or "none",
 * SECONDS since the message arrived (two decimals), STATUS sent, deferred or bounced, DIAG
 * the diagnostic without its type ("x-pillarbox; ") or remote MTA ("R=HOST ").
 */
#ifndef PILLARBOX_QLOG_H
#define PILLARBOX_QLOG_H

#include <stddef.h>
#include <stdint.h>

#define QLOG_DELAY_FMT 24

/* The delay since the arrival of message id ("SECONDS.USEC.PID": the id's own time, to the
 * centisecond; else arrival, in seconds) into buf, NUL-terminated. Returns its length. */
size_t qlog_delay(char *buf, char const *id, uint64_t arrival);

/* The diagnostic as a log line shows it (a pointer into diag). */
char const *qlog_shown(char const *diag);

#endif
