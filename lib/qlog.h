/* qlog: the pieces of queue-run's delivery log lines, which read like Postfix's:
 *   delivery ID to=<TARGET> orig_to=<RCPT> relay=RELAY delay=SECONDS status=STATUS (DIAG)
 * TARGET is where the message went (the account address or the outside address), RCPT the
 * envelope recipient it came from (before aliases), RELAY "local", the remote MTA or "none",
 * SECONDS since the message arrived (two decimals), STATUS sent, deferred or bounced, DIAG
 * the diagnostic without its type ("x-pillarbox; ") or remote MTA ("R=HOST ").
 *
 * The lines wait in a buffer until qlog_flush, at the end of a turn of queue-run's event loop,
 * then go to fd 1 in writes of whole lines of at most 4096 bytes: a pipe write that size is
 * atomic, so the lines of the service's other writers (queue-spawn, the workers' stderr) never
 * cut into ours, and a busy queue costs s6-log one read per turn instead of three per message.
 */
#ifndef PILLARBOX_QLOG_H
#define PILLARBOX_QLOG_H

#include <stddef.h>
#include <stdint.h>

#define QLOG_DELAY_FMT 24

/* Adds the line made of v[0..n) (null pointers skipped) and a newline to the buffer; writes
 * the buffer out past 64 kB. Out of memory: the line is dropped. QLOG("a", b, ...) is it. */
void qlog_line(char const *const *v, unsigned int n);
#define QLOG(...)                                                \
  do {                                                           \
    char const *v_[] = {__VA_ARGS__};                            \
    qlog_line(v_, sizeof v_ / sizeof *v_);                       \
  } while (0)

/* Writes the buffered lines to fd 1. A log that is gone loses them: nothing to tell. */
void qlog_flush(void);

/* The delay since the arrival of message id ("SECONDS.USEC.PID": the id's own time, to the
 * centisecond; else arrival, in seconds) into buf, NUL-terminated. Returns its length. */
size_t qlog_delay(char *buf, char const *id, uint64_t arrival);

/* The diagnostic as a log line shows it (a pointer into diag). */
char const *qlog_shown(char const *diag);

#endif
