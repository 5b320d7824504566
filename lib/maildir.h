/* maildir: Maildir and Maildir++ on disk. Names, delivery, quota, listing, info flags.
 *
 * A Maildir is a directory with tmp/, new/ and cur/. A message is written into tmp/ under a
 * unique name, fsync'ed, linked into new/ (the name becomes visible only when the file is
 * complete), and the tmp/ name is removed; new/ is then fsync'ed so the delivery is durable
 * before the caller reports success. Readers move messages to cur/ as NAME:2,FLAGS.
 * Maildir++ adds sub-folders (DIR/.Folder/ with their own tmp/ new/ cur/) and the
 * maildirsize quota file. The rules are written down in doc/maildir.md.
 *
 * Names: SECONDS.M<usec>P<pid>Q<counter>.HOST,S=<size> where HOST is gethostname() with
 * '/' written \057 and ':' written \072, and ",S=<size>" (Maildir++) is the file's size in
 * bytes, so quota and listing need no stat. A name never contains '/' or ':' before the info.
 *
 * Files are created with O_CREAT|O_EXCL|O_NOFOLLOW relative to a directory opened with
 * O_NOFOLLOW, so nothing already present in tmp/ (a file, a symlink) is ever written through,
 * and tmp/ or new/ being a symlink is refused (ELOOP).
 *
 * Functions returning int return 1 (or a count) on success and -1 (or 0 where said) with
 * errno set on failure. Nothing here exits.
 */
#ifndef PILLARBOX_MAILDIR_H
#define PILLARBOX_MAILDIR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <skalibs/stralloc.h>

#define MAILDIR_HOST_MAX 256   /* escaped host name, bytes */
#define MAILDIR_NAME_MAX 400   /* a name we make, with ",S=" and ":2,FLAGS" */

/* ---- names ---- */

/* Writes the escaped form of host[0..len) ('/' -> \057, ':' -> \072) into s, at most
 * MAILDIR_HOST_MAX bytes (longer input is cut before an escape, never inside one).
 * Returns the length written; s is not NUL-terminated. */
size_t maildir_hostfmt(char *s, char const *host, size_t len);

/* Appends a fresh unique base name (no ",S=", no info) to sa, NUL-terminated:
 * SECONDS.M<usec>P<pid>Q<counter>.HOST. The counter is per process and only grows, so two
 * calls in one process never give the same name; the pid separates processes. */
int maildir_uniqname(stralloc *sa);

/* ---- delivery ---- */

typedef struct maildir_tmp_s maildir_tmp;
struct maildir_tmp_s {
  int dirfd;     /* the Maildir */
  int tmpfd;     /* DIR/tmp, opened O_NOFOLLOW */
  int newfd;     /* DIR/new, opened O_NOFOLLOW */
  int fd;        /* the message file in tmp/, write-only, or -1 */
  stralloc name; /* its name in tmp/, NUL-terminated */
  int held;      /* dirfd, tmpfd and newfd are maildir_hold_dirs's: not ours to close */
};
#define MAILDIR_TMP_ZERO {-1, -1, -1, -1, STRALLOC_ZERO, 0}

/* For a long-running deliverer (queue-spawn's workers): from now on the three directory
 * descriptors of the last Maildir delivered to are kept and used again for the next delivery
 * to the same path, as long as that directory's inode, modification and change times are
 * those seen when they were opened (tmp/ or new/ made anew, removed or renamed would change
 * them) and were already more than 2 seconds old then. Five system calls a delivery. */
void maildir_hold_dirs(void);

/* Opens DIR (following a symlink at DIR itself), DIR/tmp and DIR/new (never symlinks:
 * ELOOP), and creates a new
 * file with a unique name in tmp/, mode 0600, O_EXCL|O_NOFOLLOW (an existing name is never
 * reused: a fresh name is tried, at most 8 times). On failure everything is closed. */
int maildir_tmp_open(maildir_tmp *t, char const *dir);

/* Same, with seen the caller's stat(2) of dir, just taken: maildir_hold_dirs's check uses it
 * instead of a stat of its own. */
struct stat;
int maildir_tmp_open_seen(maildir_tmp *t, char const *dir, struct stat const *seen);

/* Same, with a caller-chosen name in tmp/ (tests; refuses anything already there). */
int maildir_tmp_open_name(maildir_tmp *t, char const *dir, char const *name);

/* Makes the file durable and visible: fsync + close the file, link tmp/NAME to
 * new/NAME,S=SIZE (or, with sizetag 0, new/NAME), retrying with a fresh name on EEXIST,
 * unlink tmp/NAME, fsync new/. On success the final name (relative to new/) is in newname,
 * NUL-terminated, and t is closed. On failure the tmp file is removed, nothing is left in
 * new/, and t is closed. */
int maildir_tmp_commit(maildir_tmp *t, uint64_t size, int sizetag, stralloc *newname);

/* From now on the fsync of new/ after the link goes through g (lib/groupsync: one fsync for
 * the links several delivery workers made into the same new/), g outliving every commit. */
struct groupsync_s;
void maildir_groupsync(struct groupsync_s *g);

/* Delivery keys, for a delivery that may be retried after a crash (at most once per key):
 * a key is "SECONDS.REST" (SECONDS the arrival time, REST of [A-Za-z0-9._-], at most
 * MAILDIR_KEY_MAX bytes), and the new/ name is SECONDS.K<REST, '.' as '_'>.HOST,S=SIZE,
 * the same on every attempt. maildir_keyname appends that base name (without ",S=") to sa,
 * NUL-terminated; -1 (EINVAL) for a malformed key. */
#define MAILDIR_KEY_MAX 128
int maildir_keyname(stralloc *sa, char const *key);

/* maildir_tmp_commit under keyname,S=SIZE: 1 delivered; 2 that name was already in new/ (the
 * same delivery made before: the tmp file is removed, new/ fsync'ed, nothing added). */
int maildir_tmp_commit_key(maildir_tmp *t, uint64_t size, char const *keyname,
                           stralloc *newname);

/* 1 if DIR/new or DIR/cur holds keyname (alone, or followed by ',' or ':'), 0 if not, -1.
 * A scan of both: for a retry only (a reader may have moved the first copy to cur/). */
int maildir_key_seen(char const *dir, char const *keyname);

/* Removes the tmp file (if any) and closes everything. errno is preserved. */
void maildir_tmp_abort(maildir_tmp *t);

/* Removes the files and symbolic links in DIR/tmp not modified for maxage seconds (the
 * Maildir spec says 36 hours: MAILDIR_TMP_MAXAGE), left behind by a delivery that was
 * killed. Returns how many were removed, or -1. Readers (pop3, imap) call it at login. */
#define MAILDIR_TMP_MAXAGE (36 * 3600)
int maildir_tmp_clean(char const *dir, unsigned long maxage);

/* Creates DIR (if missing) and DIR/tmp, DIR/new, DIR/cur with the given mode. */
int maildir_make(char const *dir, mode_t mode);

/* ---- loop detection over a message's header section ---- */

#define MAILDIR_RECEIVED_MAX 100  /* more Received: fields than this is a loop */
#define MAILDIR_FIELD_KEEP 2048   /* bytes of a field kept (longer: cannot be an address) */
#define MAILDIR_LOOP_DELIVERED 1  /* a Delivered-To: field names the recipient */
#define MAILDIR_LOOP_HOPS 2       /* more than MAILDIR_RECEIVED_MAX Received: fields */

typedef struct maildir_loop_s maildir_loop;
struct maildir_loop_s {
  char const *rcpt;
  size_t rcptlen;
  char field[MAILDIR_FIELD_KEEP]; /* the current field, unfolded */
  size_t fieldlen;
  int fieldlong;
  int atlinestart, lineempty;
  unsigned long received; /* Received: fields so far */
  int done;               /* the empty line that ends the header section was seen */
  int verdict;            /* 0, MAILDIR_LOOP_DELIVERED or MAILDIR_LOOP_HOPS */
};

/* Starts a scan for deliveries to rcpt (compared case-insensitively, <> allowed). */
void maildir_loop_init(maildir_loop *l, char const *rcpt, size_t rcptlen);

/* Feeds message bytes (LF line ends) from the start. Returns how many of the n bytes belong
 * to the header section, the empty line included; fewer than n means the body starts there
 * (l->done is set). Stops early, with l->verdict set, at the first sign of a loop. */
size_t maildir_loop_feed(maildir_loop *l, char const *s, size_t n);

/* At the end of the input (a message that is all header): checks the last field. Returns
 * l->verdict. */
int maildir_loop_end(maildir_loop *l);

/* ---- Maildir++ quota (the maildirsize file) ---- */

typedef struct maildir_quota_s maildir_quota;
struct maildir_quota_s {
  uint64_t maxsize;  /* bytes, 0 = no size limit */
  uint64_t maxcount; /* messages, 0 = no count limit */
  int64_t cursize;   /* sum of the size column */
  int64_t curcount;  /* sum of the count column */
  size_t filesize;   /* bytes in maildirsize */
  time_t mtime;      /* its modification time */
  int stale;         /* totals not trustworthy (bad line, file too big): recompute */
};

#define MAILDIR_QUOTA_RECALC_SIZE 5120   /* recompute when maildirsize grows past this */
#define MAILDIR_QUOTA_RECALC_AGE 900     /* ...or is over quota and older than this (s) */
#define MAILDIR_QUOTA_FILE_MAX 65536     /* a larger maildirsize is recomputed, never read */

/* Parses a Maildir++ quota definition "NNNS", "NNNC", "NNNS,NNNC" (or a bare number: bytes)
 * of length len. Returns 1, or 0 on junk. */
int maildir_quota_parse(char const *s, size_t len, uint64_t *maxsize, uint64_t *maxcount);

/* Formats a definition ("1000S,10C", or "" for no quota) into sa (not NUL-terminated). */
int maildir_quota_fmt(stralloc *sa, uint64_t maxsize, uint64_t maxcount);

/* Parses the contents of a maildirsize file. Returns 1, or 0 if the first line (the limits)
 * is malformed. A bad later line sets q->stale. */
int maildir_quota_parsefile(char const *s, size_t len, maildir_quota *q);

/* Reads DIR/maildirsize (never through a symlink). Returns 1 read (q->stale set when the
 * file is over MAILDIR_QUOTA_FILE_MAX or has a bad line), 0 missing or first line malformed
 * (q zeroed), -1 error. */
int maildir_quota_read(char const *dir, maildir_quota *q);

/* The same in the Maildir open as dfd (a delivery has it open already). */
int maildir_quota_readat(int dfd, maildir_quota *q);

/* Recomputes usage by scanning new/ and cur/ of DIR and of every Maildir++ folder DIR/.NAME,
 * and atomically replaces DIR/maildirsize (written in tmp/, fsync'ed, renamed) with the given
 * limits and the totals; q is filled in. */
int maildir_quota_recalc(char const *dir, uint64_t maxsize, uint64_t maxcount, maildir_quota *q);

/* 1 if adding size bytes and count messages stays within q's limits, else 0. */
int maildir_quota_fits(maildir_quota const *q, uint64_t size, uint64_t count);

/* Appends the line "SIZE COUNT\n" (either may be negative) to DIR/maildirsize with one
 * write in O_APPEND mode, as Maildir++ requires. A missing maildirsize is not created
 * (returns 0). */
int maildir_quota_add(char const *dir, int64_t size, int64_t count);

/* ---- listing and info (for pop3 / imap) ---- */

/* Appends the names of the entries of DIR/SUB (SUB is "new" or "cur", or a folder's
 * ".Folder/cur") to names, each NUL-terminated, skipping names that start with '.'.
 * Returns the number of names, or -1. Order is the directory's. */
int maildir_list(char const *dir, char const *sub, stralloc *names);

/* Length of the unique part of a name: everything before ":2," (or before ':' at all). */
size_t maildir_uniqlen(char const *name, size_t len);

/* The flags of a cur/ name "BASE:2,FLAGS": returns 1 and sets *flags / *flen, or 0 if the
 * name has no ":2," info (a new/ message, or an experimental ":1," info). */
int maildir_flags(char const *name, size_t len, char const **flags, size_t *flen);

/* 1 if the name carries flag c (e.g. 'S' seen, 'R' replied, 'T' trashed, 'D' draft,
 * 'F' flagged, 'P' passed), else 0. */
int maildir_hasflag(char const *name, size_t len, char c);

/* Appends to out the unique part of name followed by ":2," and the given flags, sorted in
 * ASCII order and without duplicates (only printable ASCII letters kept), NUL-terminated. */
int maildir_setflags(stralloc *out, char const *name, size_t len, char const *flags, size_t flen);

/* The Maildir++ size tag: parses ",S=NNN" in the unique part of name. 1 found, 0 not. */
int maildir_namesize(char const *name, size_t len, uint64_t *size);

#endif
