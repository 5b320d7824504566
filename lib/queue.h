/* queue: the on-disk mail queue. Its format, its ids, injection, and per-recipient state.
 *
 * Layout under QDIR (MAILROOT/queue), made by queue_init():
 *   intake/N/    files being written by an injector (N = 0..QUEUE_INTAKE_SPLIT-1: each
 *                injector process takes N from its pid and its count of injections; intake/
 *                is marked as the top of a hierarchy, so the N are spread over block groups)
 *   tmp/         spill files of large messages (unlinked at once), and what injectors from
 *                before intake/ left (neither looked at by queue-run's scan)
 *   mess/ID      committed messages: one file each, envelope + content, never rewritten
 *   state/ID     per-recipient delivery state of mess/ID, replaced atomically (temp + rename)
 *   hold/ID      present: queue-run leaves the message alone (queue-ctl hold / release)
 *   ctl/OP.ID    requests from queue-ctl (flush, delete, bounce) applied by queue-run
 *   quarantine/  corrupt or truncated message files, moved aside, never delivered
 *   trigger      a fifo: a line written to it wakes queue-run (see queue_trigger)
 *
 * A message file is
 *   "PBQ1 " TIME " " ENVLEN " " MSGLEN "\n"   (decimal; TIME = arrival, seconds since epoch)
 *   ENVLEN bytes of envelope: "F" sender "\0" ("T" rcpt "\0")... "\0"  (qmail-queue's)
 *   MSGLEN bytes of message, to the end of the file.
 * A file whose size is not exactly headerline + ENVLEN + MSGLEN, or whose envelope does not
 * parse, is corrupt. The message part starts at queue_hdr.offset: lseek there and the rest of
 * the file is exactly the message, so the file itself can be fd 0 of a delivery program.
 *
 * A state file is text, one line per delivery target (envelope recipients expanded through
 * aliases), first line "PBS1 N\n", then N lines
 *   STATE " " ATTEMPTS " " NEXT " " RCPT " " ADDR "\t" DIAG "\n"
 * STATE is one of QUEUE_T_*; RCPT is the index of the envelope recipient the target came
 * from; ADDR the target (account address or remote address); DIAG the last diagnostic
 * (may be empty; never contains '\n' or '\t'). No state file: nothing attempted yet.
 *
 * Ids are "SECONDS.USEC.PID" (plus ".N" for the N-th message a process injects): printable,
 * no '/', sortable by arrival within a second's resolution, unique under any concurrency
 * (O_EXCL in intake/N/ and a no-replace rename into mess/).
 */
#ifndef PILLARBOX_QUEUE_H
#define PILLARBOX_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <skalibs/stralloc.h>

#include "control.h"
#include "groupsync.h"

#define QUEUE_ID_MAX 64           /* bytes in an id, with its NUL */
#define QUEUE_ADDR_MAX 256        /* default limit on an envelope address (control/queue-addrmax) */
#define QUEUE_RCPT_MAX 1000       /* default recipients per message (control/queue-rcptmax) */
#define QUEUE_RCPT_HARDMAX 100000 /* never more, whatever control says */
#define QUEUE_DATABYTES 36700160  /* default largest message (control/databytes): 35 MiB */
#define QUEUE_HDRLINE_MAX 80      /* the "PBQ1 ..." line, with its '\n' */
#define QUEUE_DIAG_MAX 400        /* bytes of diagnostic kept per target */
#define QUEUE_INTAKE_SPLIT 16     /* sub-directories of intake/ */

/* qmail-queue exit codes (doc/queue-inject.8) */
#define QX_OK 0
#define QX_ADDRLONG 11
#define QX_REFUSED 31
#define QX_NOMEM 51
#define QX_TIMEOUT 52
#define QX_WRITE 53
#define QX_READ 54
#define QX_CONTROL 55
#define QX_QUEUEDIR 62
#define QX_BUG 81
#define QX_ENVELOPE 91

/* ---- layout ---- */

/* Makes QDIR's sub-directories and the trigger fifo where missing. 1, or 0 (errno). */
int queue_init(char const *qdir);

/* QDIR/REL into sa, NUL-terminated. 1, or 0 on allocation failure. */
int queue_path(stralloc *sa, char const *qdir, char const *rel);

/* 1 if s[0..len) is a well-formed id (digits, dots; no '/', not empty, < QUEUE_ID_MAX). */
int queue_id_ok(char const *s, size_t len);

/* Writes one line to QDIR/trigger without blocking (one write, atomic under PIPE_BUF); nobody
 * listening, or a full fifo, is fine (queue-run rescans). Lines: an id (a new message),
 * "!flush" (retry everything now), "!ctl" (requests waiting in ctl/), "!scan" (rescan). */
void queue_trigger(char const *qdir, char const *line);

/* For a long-running injector (a queue-inject-ipc -l worker), one queue only: from now on
 * QDIR/mess/ and the write end of QDIR/trigger stay open between messages instead of being
 * opened and closed for each (four system calls a message). A trigger that fails to take a
 * line (queue-run gone: EPIPE) is closed and opened again at the next message. Call it in
 * the process that injects, after any fork. */
void queue_hold_open(void);

/* From now on the fsync of mess/ after a rename goes through g (lib/groupsync: one fsync for
 * the renames of all the pool's workers), g outliving every injection. */
void queue_groupsync(groupsync *g);

/* Opens QDIR/trigger for reading by queue-run (O_RDWR: never an EOF when the last writer
 * goes; non-blocking, close-on-exec). The fd, or -1 (errno). */
int queue_trigger_open(char const *qdir);

/* Reads what is waiting on the trigger fd and calls f(LINE, LEN, ctx) for each complete
 * line (without its '\n'); a partial line is kept in *line for the next call, a line longer
 * than QUEUE_ID_MAX + 8 bytes is cut. Returns the bytes read (60,000 or more: the fifo may
 * have overflowed, rescan), or (size_t)-1 on allocation failure. */
size_t queue_trigger_read(int fd, stralloc *line, void (*f)(char const *, size_t, void *),
                          void *ctx);

/* queue-ctl's requests to queue-run are empty files QDIR/ctl/OP.ID. */
#define QUEUE_CTL_FLUSH 0   /* retry now, even if the domain is backed off */
#define QUEUE_CTL_DELETE 1  /* remove without delivering or bouncing */
#define QUEUE_CTL_BOUNCE 2  /* every pending recipient fails and is bounced */
#define QUEUE_CTL_REQUEUE 3 /* resolve the pending recipients again */
extern char const *const queue_ctl_ops[]; /* "flush", "delete", "bounce", "requeue", 0 */

/* The operation of a ctl/ file name (one of QUEUE_CTL_*), its id in *id; -1 if it is not
 * one (bad operation or id). */
int queue_ctl_parse(char const *name, char const **id);

/* ---- envelope ---- */

typedef struct queue_env_s queue_env;
struct queue_env_s {
  char const *sender; /* points into the parsed bytes; NUL-terminated there */
  size_t senderlen;
  size_t nrcpt;
  size_t rcptoff;     /* offset of the first "T" record */
};

/* Parses a complete envelope s[0..len) (ending with the final "\0", nothing after it).
 * Returns QX_OK, QX_ADDRLONG (an address over addrmax bytes), QX_REFUSED (more than rcptmax
 * recipients) or QX_ENVELOPE (no F, no T, anything else malformed, CR/LF/NUL-free but
 * control bytes, trailing junk). */
int queue_env_parse(char const *s, size_t len, size_t addrmax, size_t rcptmax, queue_env *e);

/* Iterates over the recipients of a parsed envelope: start with *pos = e->rcptoff; each call
 * sets *r (NUL-terminated in s) and *rlen and returns 1, then 0 after the last one. */
int queue_env_next(char const *s, size_t len, size_t *pos, char const **r, size_t *rlen);

/* The recipient number i (from 0) of the envelope env[0..envlen), or "" if there is none. */
char const *queue_env_rcpt(char const *env, size_t envlen, unsigned int i);

/* ---- message file header ---- */

typedef struct queue_hdr_s queue_hdr;
struct queue_hdr_s {
  uint64_t arrival;
  uint64_t envlen;
  uint64_t msglen;
  size_t linelen; /* bytes of the "PBQ1 ..." line */
  uint64_t offset; /* linelen + envlen: where the message starts */
};

/* Appends the header line to sa. 1, or 0 on allocation failure. */
int queue_hdr_fmt(stralloc *sa, uint64_t arrival, uint64_t envlen, uint64_t msglen);

/* Parses the header line at the start of s[0..len). 1 ok, 0 malformed or incomplete. */
int queue_hdr_parse(char const *s, size_t len, queue_hdr *h);

/* ---- injection ---- */

/* Commits one message durably: creates intake/N/ID (O_EXCL), writes header, envelope and message
 * with one write, fsync, renames (no-replace) into mess/, fsyncs mess/, triggers queue-run.
 * env must already be valid (queue_env_parse). The new id goes to id (NUL-terminated).
 * Returns QX_OK or a temporary qmail-queue code (QX_WRITE, QX_QUEUEDIR, QX_NOMEM);
 * on failure nothing is left behind in mess/. */
int queue_inject_mem(char const *qdir, char const *env, size_t envlen, char const *msg,
                     size_t msglen, stralloc *id);

/* The same with the message already in an open file (spillfd, read from offset 0, msglen
 * bytes): the message is copied after the header in the new file. */
int queue_inject_fd(char const *qdir, char const *env, size_t envlen, int spillfd,
                    uint64_t msglen, stralloc *id);

/* The same in two steps, for an injector that announces the id before it has the message
 * (QUEUE_IDFD, so smtp-receive's Received: can carry it): begin makes the id (tx->id,
 * NUL-terminated, with the usual uniqueness: time, pid, counter), commit writes the file as
 * queue_inject_* do but under that id only: a clash in intake/ or mess/ (possible only if
 * clock went back) is a temporary failure (QX_QUEUEDIR), never another id. Nothing is on
 * disk between the two, so an injector that dies leaves nothing. */
typedef struct queue_tx_s queue_tx;
struct queue_tx_s {
  stralloc id;
};
#define QUEUE_TX_ZERO {STRALLOC_ZERO}
int queue_tx_begin(char const *qdir, queue_tx *tx);
int queue_tx_commit(char const *qdir, queue_tx *tx, char const *env, size_t envlen,
                    char const *msg, size_t msglen, int spillfd, uint64_t spilllen);

/* ---- taking a message in (queue-inject, queue-inject-ipc) ---- */

/* The limits from control/ and the message as it arrives: in memory up to QUEUE_SPILL
 * bytes, beyond that in an anonymous (already unlinked) file in QDIR/tmp/. */
#define QUEUE_SPILL 65536
/* The intake's limits: control/databytes, queue-addrmax, queue-rcptmax and queue-timeout
 * (seconds for the intake), defaults and bounds applied. */
typedef struct queue_caps_s queue_caps;
struct queue_caps_s {
  unsigned long databytes, addrmax, rcptmax, timeout;
};

typedef struct queue_in_s queue_in;
struct queue_in_s {
  char const *qdir;
  queue_caps caps;
  stralloc msg;
  int spill;    /* the spill file, or -1 */
  uint64_t len; /* message bytes so far */
};
#define QUEUE_IN_ZERO {0, {0, 0, 0, 0}, STRALLOC_ZERO, -1, 0}

/* The limits as read, and what they were read from (a long-running injector keeps them). */
typedef struct queue_limits_s queue_limits;
struct queue_limits_s {
  queue_caps caps;
  int loaded;           /* kept: read, and the stamp taken */
  control_stamp stamp;
};
/* Reads the limits into l; with keep (a long-running injector, l static), only when control/
 * may have changed since the last read (control_stamp). QX_OK, or QX_CONTROL with *bad the
 * file's name (errno set when it could not be read, 0 when it is not a number). */
int queue_limits_read(queue_limits *l, int keep, char const **bad);

/* Starts a message under limits l. */
void queue_in_start(queue_in *q, char const *qdir, queue_limits const *l);

/* queue_limits_read (not kept), then queue_in_start: its return. */
int queue_in_init(queue_in *q, char const *qdir, char const **bad);

/* Appends n message bytes. QX_OK; QX_REFUSED past databytes (add nothing more); QX_NOMEM,
 * QX_QUEUEDIR (no spill file could be made), QX_WRITE (errno set). */
int queue_in_add(queue_in *q, char const *s, size_t n);

/* Checks the envelope env[0..envlen) against the limits (queue_env_parse), then commits the
 * message under tx's id (tx NULL: a new id, into id). Returns what queue_env_parse or the
 * commit returns. */
int queue_in_commit(queue_in *q, queue_tx *tx, char const *env, size_t envlen, stralloc *id);

/* Frees the message and closes the spill file. */
void queue_in_free(queue_in *q);

/* ---- reading a message file ---- */

/* Opens QDIR/mess/ID, reads and checks its header and envelope (env gets the envelope bytes,
 * h the header). Returns the open fd (positioned at h->offset, i.e. at the message), or
 * -1 with errno set: ENOENT gone, EPROTO corrupt or truncated, anything else: temporary. */
int queue_open(char const *qdir, char const *id, queue_hdr *h, stralloc *env, uint64_t *size);

/* Opens QDIR/mess/ID (no symlink, close-on-exec) positioned at offset (the message:
 * queue_hdr.offset): a delivery's fd 0. The fd, or -1 (errno). */
int queue_open_at(char const *qdir, char const *id, uint64_t offset);

/* ---- per-recipient state ---- */

#define QUEUE_T_NEW 'N'     /* envelope recipient not yet resolved */
#define QUEUE_T_LOCAL 'L'   /* pending-local: ADDR is the account address */
#define QUEUE_T_REMOTE 'R'  /* pending-remote: ADDR is the outside address */
#define QUEUE_T_DONE 'D'    /* delivered */
#define QUEUE_T_FAILED 'F'  /* failed permanently, not yet bounced */
#define QUEUE_T_BOUNCED 'B' /* failed permanently, bounce sent (or none needed) */

/* A target state's name for people (queue-list, queue-cat): "new", "pending-local",
 * "pending-remote", "done", "failed", "bounced", or "unknown". */
char const *queue_t_name(char state);

typedef struct queue_target_s queue_target;
struct queue_target_s {
  char state;
  unsigned int attempts;
  uint64_t next;      /* next try, seconds since epoch (0: now) */
  unsigned int rcpt;  /* index of the envelope recipient it came from */
  char *addr;         /* malloc'ed, NUL-terminated */
  char *diag;         /* malloc'ed, NUL-terminated ("" if none) */
};

/* Frees the strings of n targets (not the array). */
void queue_targets_free(queue_target *t, size_t n);

/* Parses a state file s[0..len) into a malloc'ed array *t of *n targets.
 * 1 ok, 0 malformed (nothing allocated), -1 allocation failure. */
int queue_state_parse(char const *s, size_t len, queue_target **t, size_t *n);

/* Appends the state file text for t[0..n) to sa. 1, or 0 on allocation failure. */
int queue_state_fmt(stralloc *sa, queue_target const *t, size_t n);

/* Reads QDIR/state/ID: 1 read, 0 missing, -1 error (EPROTO malformed). */
int queue_state_read(char const *qdir, char const *id, queue_target **t, size_t *n);

/* Replaces QDIR/state/ID atomically (state/.ID.tmp, rename). With dosync, the temp file is
 * fsync'ed before the rename (the directory is not: see doc/queue.md). 1, or 0 (errno). */
int queue_state_write(char const *qdir, char const *id, queue_target const *t, size_t n,
                      int dosync);

/* 1 if QDIR/hold/ID exists (queue-ctl hold), else 0. */
int queue_held(char const *qdir, char const *id);

/* Removes a finished message: mess/ID first, then state/ID. 1, or 0 (errno). */
int queue_remove(char const *qdir, char const *id);

/* Removes mess/ID alone: for a finished message that never had a state file (one unlink, not
 * two). 1, or 0 (errno). */
int queue_remove_mess(char const *qdir, char const *id);

/* Sets a target's diagnostic (copied, cut at QUEUE_DIAG_MAX, '\n' '\t' '\r' made ' ').
 * 1, or 0 on allocation failure. */
int queue_target_setdiag(queue_target *t, char const *s, size_t len);

/* One N target per envelope recipient of env[0..envlen) (a message never tried): a new
 * malloc'ed array in *tp, its length in *np. 1, or 0 on allocation failure. */
int queue_targets_fromenv(queue_target **tp, size_t *np, char const *env, size_t envlen);

/* Moves QDIR/mess/ID to QDIR/quarantine/ID (a file that does not parse: never delivered) and
 * removes its state. 1, or 0 (errno). */
int queue_quarantine(char const *qdir, char const *id);

/* Calls f(QDIR/SUB, NAME, ctx) for every entry of QDIR/SUB but "." and "..". 1 done (a
 * missing directory is empty), 0 could not be read (errno). */
int queue_each(char const *qdir, char const *sub, void (*f)(char const *, char const *, void *),
               void *ctx);

/* queue-run at start: removes files in tmp/ and intake/N/ last changed before `before` (left
 * by a killed injector; removed(PATH) is called for each, PATH relative to qdir: "tmp/ID",
 * "intake/N/ID"), state files whose message is gone,
 * and temporary state files. Errors are ignored (the next start tries again). */
void queue_cleanup(char const *qdir, uint64_t before, void (*removed)(char const *));

/* queue-ctl bounce: every target in state N, L or R (but those with skip[i] set, skip may be
 * NULL) fails (F) with diagnostic diag. Returns how many, or (size_t)-1 on allocation
 * failure. */
size_t queue_targets_return(queue_target *t, size_t n, unsigned char const *skip,
                            char const *diag);

/* queue-ctl requeue (postsuper -r): every envelope recipient with a target not yet finished
 * (not D or B) is resolved again: its unfinished targets are dropped and one N target with
 * the envelope address takes their place (attempts 0). Finished targets are kept, so a
 * mailbox already delivered is not delivered again (queue-run's duplicate check).
 * env[0..envlen) is the message's envelope. *tp is replaced. Returns the number of
 * recipients requeued, or -1 on allocation failure (nothing changed). */
int queue_targets_requeue(queue_target **tp, size_t *np, char const *env, size_t envlen);

#endif
