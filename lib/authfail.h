/* authfail: per-IP counts of failed logins, shared by every connection of an instance.
 *
 * State lives in one fixed-size file, MAILROOT/authfail/table: AUTHFAIL_SLOTS records of 32
 * octets (128 KiB), so it is bounded whatever the peers do. A record holds a 16-octet key (the
 * first half of SHA-256 of the peer's address text), the start of the current one-minute window,
 * the failures in it, and the time until which the address is blocked. An address hashes to a
 * slot and probes AUTHFAIL_PROBE slots; when all are taken by others, the stalest is reused.
 * Updates are done under an exclusive lock (fcntl) on the file; reads under a shared one.
 *
 * Policy: more than AUTHFAIL_LIMIT failures from one address within AUTHFAIL_WINDOW seconds
 * (control/authfail-limit overrides the count) block AUTH from that address for AUTHFAIL_BLOCK
 * seconds (control/authfail-block overrides, in seconds). The address is counted by its
 * lib/ipkey key: IPv6 by prefix (control/ipv6-prefix, default /64). The directory and file are
 * made on first use (mode 0770 / 0660).
 *
 * Record BEFORE checking: a protocol program calls authfail_attempt() before it checks a
 * password (so parallel guesses all count, none is checked past the limit) and
 * authfail_forgive() after a good one. authfail_blocked/authfail_record are the old pair.
 */
#ifndef PILLARBOX_AUTHFAIL_H
#define PILLARBOX_AUTHFAIL_H

#include <stdint.h>

#define AUTHFAIL_SLOTS 4096
#define AUTHFAIL_PROBE 8
#define AUTHFAIL_LIMIT 10
#define AUTHFAIL_WINDOW 60
#define AUTHFAIL_BLOCK 900

/* Is AUTH refused for the address ip (NUL-terminated text, e.g. $TCPREMOTEIP; NULL or "" is
 * one shared "unknown" address)? Returns 1 blocked, 0 not, -1 on error (errno set; the
 * caller decides, a mail server usually carries on as not blocked and logs a warning). */
int authfail_blocked(char const *ip);

/* Counts one failed login from ip. Returns 1 if ip is now blocked, 0 if not, -1 on error. */
int authfail_record(char const *ip);

/* Counts one attempt from ip, before its password is checked. Returns 1 if the check may go
 * on, 0 if ip is over the limit (refuse without checking: 454 4.7.0 / -ERR), -1 on error.
 * Within a window, attempts 1..LIMIT+1 are checked (more than LIMIT failures block), every
 * later one is refused, however many run at once. */
int authfail_attempt(char const *ip);

/* Takes one attempt back (the password was good). Returns 0, or -1 on error. */
int authfail_forgive(char const *ip);

/* The same with an explicit clock (seconds since the epoch), for tests; now 0 is the clock
 * read once the table is locked, which is what the calls above use. */
int authfail_blocked_at(char const *ip, uint32_t now);
int authfail_record_at(char const *ip, uint32_t now);
int authfail_attempt_at(char const *ip, uint32_t now);
int authfail_forgive_at(char const *ip, uint32_t now);

#endif
