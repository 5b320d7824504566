/* retry: queue-run's retry policy. When a temporarily failed delivery is tried again, and
 * when a message has been queued too long (doc/queue.md, "Scheduling").
 *
 * A target's n-th retry waits base * 2^(n-1) seconds, at most max, plus up to 25 % random
 * jitter (so retries of many messages spread out). A failing remote domain backs off on the
 * same schedule, counted in failed batches. Past the queue lifetime a temporary failure
 * becomes final: the recipient fails with status 4.4.7 (RFC 3463 "delivery time expired",
 * a persistent transient error) and the last error in the diagnostic.
 */
#ifndef PILLARBOX_RETRY_H
#define PILLARBOX_RETRY_H

#include <stddef.h>
#include <stdint.h>
#include <skalibs/stralloc.h>

typedef struct retry_policy_s retry_policy;
struct retry_policy_s {
  unsigned long base;     /* control/retry-base, seconds (>= 1) */
  unsigned long max;      /* control/retry-max (>= base) */
  unsigned long lifetime; /* control/queue-lifetime */
};

/* Reads control/retry-base (240), retry-max (14400), queue-lifetime (432000); dies 100
 * naming the file on junk, 111 on a read error (control_uint). base is at least 1, max at
 * least base. */
void retry_policy_read(retry_policy *p);

/* Seconds to wait before attempt number attempts+1, after attempts failures (>= 1), with
 * jitter. */
uint64_t retry_delay(retry_policy const *p, unsigned int attempts);

/* 1 if a message that arrived at arrival is past its lifetime at now. */
int retry_expired(retry_policy const *p, uint64_t arrival, uint64_t now);

/* The diagnostic of a recipient whose message expired, from its last one diag[0..len):
 * "x-pillarbox; 4.4.7 message expired in the queue; last error: DIAG", keeping a leading
 * "R=HOST " (the remote MTA) in front. Replaces sa's contents. 1, or 0 on allocation failure. */
int retry_expired_diag(stralloc *sa, char const *diag, size_t len);

#define RETRY_EXPIRED_STATUS "4.4.7"

#endif
