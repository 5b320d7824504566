/* quotastate: a small per-account record of mailbox usage and quota, kept OUTSIDE the Maildir,
 * so that programs that may not read mailboxes (smtp-receive, uid pb-smtpd) can refuse mail
 * for a full mailbox at RCPT time (452 4.2.2 / 552 5.2.2) instead of queueing it.
 *
 * File: MAILROOT/run/quota/ADDRESS (the account address as in users.cdb, lower-cased), one line
 *   "PBQS1 USED COUNT LIMIT LIMITCOUNT UPDATED\n"
 * (decimal: bytes used, messages, byte limit (0: none), message limit (0: none), when written,
 * seconds since the epoch). Written by the delivery uid (deliver-maildir after each delivery or
 * refusal, and anything that changes maildirsize: pop3-maildir, the IMAP session) as a temp
 * file renamed over the record (atomic; not fsync'ed: it is advice, rebuilt by the next
 * delivery). Readers see an old or a new record, never half of one. Mode 0640; the directory
 * run/quota is made by mail-instance (owner pb-deliv, group pb-authc, mode 2750: its members
 * pb-smtpd and pb-deliv may read it). See doc/formats.md.
 */
#ifndef PILLARBOX_QUOTASTATE_H
#define PILLARBOX_QUOTASTATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct quotastate_s quotastate;
struct quotastate_s {
  uint64_t used;       /* bytes in the mailbox (Maildir++ maildirsize totals) */
  uint64_t count;      /* messages */
  uint64_t limit;      /* byte quota, 0 = none */
  uint64_t limitcount; /* message quota, 0 = none */
  uint64_t updated;    /* seconds since the epoch */
};

#define QUOTASTATE_LINE_MAX 128 /* a record is at most this long */

/* In every call below, root is MAILROOT (NULL: mailroot()) and addr[0..len) the account
 * address; it is lower-cased (ASCII) for the file name. An address that is empty, over 320
 * bytes, starts with '.', or holds '/', a control byte or a NUL has no record (read: 0,
 * write/remove: 0 with errno EINVAL). */

/* Reads the record of addr. 1 read, 0 no record (or a malformed one: treat as unknown),
 * -1 error (errno). */
int quotastate_read(char const *root, char const *addr, size_t len, quotastate *q);

/* Replaces the record of addr[0..len) atomically (run/quota/.ADDRESS.PID.tmp, rename),
 * creating run/quota (mode 2750) if missing; q->updated 0 means now. 1, or 0 (errno). */
int quotastate_write(char const *root, char const *addr, size_t len, quotastate const *q);

/* Refreshes the record of addr from MAILDIR/maildirsize (after deletions: pop3-maildir,
 * IMAP expunge). A Maildir without maildirsize, or one without limits, has no record (an
 * old one is removed). 1 done, 0 error (errno). */
int quotastate_sync(char const *root, char const *addr, size_t len, char const *maildir);

/* Removes the record (account deleted). 1 removed or absent, 0 error (errno). */
int quotastate_remove(char const *root, char const *addr, size_t len);

/* Verdicts for a message of size bytes (0 when not known yet, e.g. RCPT without SIZE=) */
#define QUOTASTATE_OK 0     /* fits, or no limit, or no record */
#define QUOTASTATE_FULL 1   /* the mailbox is full now: 452 4.2.2 (at RCPT) */
#define QUOTASTATE_TOOBIG 2 /* the message alone is larger than the quota: 552 5.2.2 */

/* Judges q for one more message of size bytes. limit: the byte quota in force now, normally
 * the account's from users.cdb (account.quota, newer than the record's after `mail-user
 * quota`; 0: no quota, always OK); (uint64_t)-1: the record's own limits (bytes and
 * messages). FULL when used + size exceeds the limit (or the message count reached its
 * limit), TOOBIG when size alone exceeds the limit. */
int quotastate_check(quotastate const *q, uint64_t limit, uint64_t size);

/* Formats / parses a record line (pure; for tests and tools). fmt returns the length
 * written into buf (QUOTASTATE_LINE_MAX bytes); parse returns 1 ok, 0 malformed. */
size_t quotastate_fmt(char *buf, quotastate const *q);
int quotastate_parse(char const *s, size_t len, quotastate *q);

#endif
