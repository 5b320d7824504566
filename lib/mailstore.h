/* mailstore: one Maildir++ folder as IMAP sees it (UIDs, UIDVALIDITY, modseqs, flags,
 * keywords, \Recent), and the folder tree of a Maildir++. For imap-maildir now; written so that
 * pop3-maildir and the web back end can use it.
 *
 * On disk (doc/maildir.md says it at length):
 *   FOLDER/pillarbox-uidlist   the record, one per folder (INBOX: the Maildir itself):
 *       "PB1 V<uidvalidity> N<nextuid> M<highestmodseq> R<firstrecent>\n"
 *       then one line per message, in UID order: "<uid> <modseq> <wsize> <n|c> <file name>\n"
 *       (wsize: the size with CRLF line ends, 0 if not known yet; n/c: in new/ or cur/; the
 *       file name with its ":2," info, so a flag changed by another program is noticed),
 *       and "x <uid> <modseq>\n" for the last expunges (QRESYNC); the header's "E<modseq>"
 *       says below which modseq expunges are no longer remembered.
 *       The header ends in "J<n>": the number of the journal that belongs to this record.
 *   FOLDER/pillarbox-uidlist.log    the journal of STOREs: "PBJ1 V<uidvalidity> J<n>\n", then
 *       "<uid> <modseq> <file name in cur/>\n" per changed message, appended under the lock
 *       and fdatasync'ed; applied by every reader of the record J<n>; folded in (and a new n
 *       taken) whenever the record is written whole. A torn last line is ignored, then cut.
 *   FOLDER/pillarbox-uidlist.lock   the lock file (fcntl write lock while the record changes).
 *   FOLDER/dovecot-keywords    keyword letters as Dovecot writes them ("0 $Forwarded\n": the
 *       letter 'a' + 0 in the ":2," info means $Forwarded), shared with Dovecot.
 *   ROOT/.NAME/                a folder; NAME is the IMAP name in modified UTF-7, hierarchy
 *       separator '.', as Dovecot's and Courier's Maildir++ layouts have it.
 *   ROOT/subscriptions         one subscribed name a line (Courier's and Dovecot's file).
 *
 * Crash argument: the record is only ever replaced whole (written to pillarbox-uidlist.tmp,
 * fsync'ed, renamed over, the folder fsync'ed), under the lock, and a UID is written to the
 * record before any client is told about it (the journal never adds, drops or moves a UID:
 * it holds newer names and modseqs of the record's UIDs, on disk before a client hears); so
 * after a crash the record is either the one before or after a change, and every file it
 * does not list gets a UID above its N. A record that does not parse is never guessed at:
 * the folder gets a new UIDVALIDITY, larger than the old one, and fresh UIDs. With no record
 * but a dovecot-uidlist (or courierimapuiddb), their UIDVALIDITY and UIDs are taken over.
 *
 * Functions return 1 (or a count) on success, -1 with errno set on failure. Nothing exits.
 */
#ifndef PILLARBOX_MAILSTORE_H
#define PILLARBOX_MAILSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/stat.h>
#include <skalibs/stralloc.h>

#define MAILSTORE_RECORD "pillarbox-uidlist"
#define MAILSTORE_NAME_MAX 200     /* octets of an IMAP mailbox name (modified UTF-7) */
#define MAILSTORE_KEYWORDS 26      /* keyword letters a..z */
#define MAILSTORE_KEYWORD_MAX 100  /* octets of a keyword */
#define MAILSTORE_MSGS_MAX 10000000

/* System flags (bits of mailstore_msg.flags) */
#define MS_SEEN 1u
#define MS_ANSWERED 2u
#define MS_FLAGGED 4u
#define MS_DELETED 8u
#define MS_DRAFT 16u
#define MS_SYSFLAGS 31u
/* Session marks (never written to disk) */
#define MS_RECENT 32u     /* \Recent for this session */
#define MS_GONE 64u       /* the file is gone (expunged elsewhere); not yet reported */
#define MS_CHANGED 128u   /* flags changed by someone else since the last report */
#define MS_NEW 256u       /* the file is in new/ */
#define MS_REPORTED 512u  /* the client has been told of this message (EXISTS) */

/* One message: 24 octets (a folder of 10,000 is 240 kB of table). */
typedef struct mailstore_msg_s mailstore_msg;
struct mailstore_msg_s {
  uint32_t uid;
  uint32_t name;        /* where the file name is: names, or the mapped record */
  uint32_t keywords;    /* bit i: keyword letter 'a' + i */
  uint32_t wsize;       /* CRLF size, 0 = not known (or over 4 GB: computed when asked) */
  uint64_t modseq : 48; /* at most MAILSTORE_MODSEQ_MAX */
  uint64_t flags : 16;  /* MS_* */
};
/* A record whose modseqs go above this is not ours (a new UIDVALIDITY): it leaves room for
 * 2^47 more changes below the 48 bits of mailstore_msg.modseq. */
#define MAILSTORE_MODSEQ_MAX ((uint64_t)1 << 47)

typedef struct mailstore_gone_s mailstore_gone;
struct mailstore_gone_s {
  uint32_t uid;
  uint64_t modseq; /* when it was expunged */
};
#define MAILSTORE_GONE_KEEP 20000 /* expunges remembered for QRESYNC */

typedef struct mailstore_s mailstore;
struct mailstore_s {
  char dir[MAILSTORE_NAME_MAX + 8]; /* "." for INBOX, ".Name" for a folder (relative to ROOT) */
  int rw;
  uint32_t uidvalidity, uidnext, firstrecent;
  uint64_t highestmodseq;
  mailstore_msg *msg; /* in UID order */
  size_t n, a;
  stralloc names;     /* file names, NUL-terminated (those not in map) */
  char *map;          /* the record the table was read from, mapped: the other names */
  size_t maplen;
  mailstore_gone *gone; /* the last expunges, oldest first */
  size_t ngone;
  uint64_t gonefloor; /* expunges at or below this modseq are forgotten */
  char *kw[MAILSTORE_KEYWORDS]; /* keyword names, NULL where unused */
  unsigned int nkw;
  /* change detection */
  struct timespec new_mtime, cur_mtime, rec_mtime;
  struct timespec listed_at; /* when new/ and cur/ were last listed */
  ino_t rec_ino;
  off_t rec_size;
  uint64_t jid; /* the record's journal number (0: a STORE writes the record whole) */
  size_t jlen;  /* octets of the journal that parsed at the last sync (0: none yet) */
  time_t kw_mtime;
};
#define MAILSTORE_ZERO {.dir = ".", .msg = 0, .names = STRALLOC_ZERO}

/* ---- folders ---- */

/* Maps an IMAP mailbox name (modified UTF-7) to its directory relative to the Maildir root:
 * "INBOX" (any case) is ".", "Sent" is ".Sent", "A.B" is ".A.B". Refuses (returns 0) empty
 * names, names over MAILSTORE_NAME_MAX, with '/', NUL or a control character, a leading or
 * trailing '.', "..", or bad modified UTF-7. Returns 1 and fills dir (room for
 * MAILSTORE_NAME_MAX + 8). */
int mailstore_folder_dir(char const *name, size_t len, char *dir);

/* The special-use attribute of a folder name ("\\Sent" for "Sent"...), or NULL. */
char const *mailstore_special_use(char const *name, size_t len);

/* Makes the folder (dir from mailstore_folder_dir) with tmp/ new/ cur/ and a
 * maildirfolder file. EEXIST if it is there. */
int mailstore_folder_create(char const *dir);

/* Creates .Sent .Drafts .Trash .Junk .Archive under the Maildir root (the current directory)
 * where missing, and subscribes them; for account creation and for the first login. */
int mailstore_default_folders(void);

/* Deletes a folder: its messages, its record and the directory. A folder with sub-folders
 * loses its messages but stays (\Noselect) as RFC 3501 allows. */
int mailstore_folder_delete(char const *dir);

/* Renames a folder and its sub-folders (rename of ".A" also renames ".A.x"). */
int mailstore_folder_rename(char const *from, char const *to);

/* Appends the IMAP names of every folder (without INBOX) to names, NUL-terminated, sorted.
 * Returns how many. */
int mailstore_folder_list(stralloc *names);

/* Subscriptions: the names in ROOT/subscriptions, NUL-terminated, into names. */
int mailstore_subscriptions(stralloc *names);
int mailstore_subscribe(char const *name, size_t len, int on);

/* ---- one folder ---- */

/* Opens the folder: reads (or migrates, or creates) its record and syncs it with the
 * directory. rw: this session may move new/ to cur/ and claim \Recent. */
int mailstore_open(mailstore *ms, char const *dir, int rw);
void mailstore_close(mailstore *ms);

/* Brings ms up to date with the disk: new files get UIDs (and, with rw, \Recent), gone files
 * get MS_GONE, flags changed by others MS_CHANGED. Cheap when nothing changed (three stats).
 * *news gets the number of messages added to msg[] (may be NULL). */
int mailstore_sync(mailstore *ms, size_t *news);

/* Drops the MS_GONE messages from msg[] (once the client was told). */
void mailstore_compact(mailstore *ms);

/* The file name of message i (valid until four more calls: it may be copied out of the
 * mapped record), and its path relative to the root ("DIR/cur/NAME") into sa
 * (NUL-terminated). */
char const *mailstore_name(mailstore const *ms, size_t i);
int mailstore_path(mailstore const *ms, size_t i, stralloc *sa);

/* The session waits for its client: the mapped record's pages go out of this process (they
 * stay in the page cache, and come back as names are read). */
void mailstore_idle(mailstore *ms);

/* Opens message i for reading. If the file moved (flags changed elsewhere), syncs and tries
 * again. -1 with ENOENT when the message is gone. */
int mailstore_openmsg(mailstore *ms, size_t i);

/* Sets the flags and keywords of the messages idx[0..n) to (old & ~clear) | set (MS_SYSFLAGS
 * bits and keyword bits), renaming their files, with a new modseq for each that changed; the
 * record is rewritten once. unchangedsince (CONDSTORE) other than 0 skips messages whose
 * modseq is above it and marks them in *failed (an array of n, may be NULL). */
int mailstore_store(mailstore *ms, size_t const *idx, size_t n, uint32_t setf, uint32_t clrf,
                    uint32_t setk, uint32_t clrk, uint64_t unchangedsince, unsigned char *failed);

/* Keyword index of name (creating it in dovecot-keywords when create is set and there is
 * room); -1 when unknown or no room (errno ENOSPC). */
int mailstore_keyword(mailstore *ms, char const *name, size_t len, int create);

/* Removes the files of messages idx[0..n) and syncs (they become MS_GONE). */
int mailstore_expunge(mailstore *ms, size_t const *idx, size_t n);

/* Delivers the file tmppath (a complete file in the root's tmp/) into folder dir, in cur/
 * with the given flags and keywords (keywords as names, resolved in that folder) and mtime
 * (the INTERNALDATE; 0 = now); the tmp file is removed. Returns 1 with *uid and
 * *uidvalidity set. */
int mailstore_add(char const *dir, char const *tmppath, uint32_t flags, char const *const *kws,
                  unsigned int nkw, time_t when, uint32_t *uid, uint32_t *uidvalidity);

/* Copies (move = 0: a hard link under a new name) or moves (rename) messages idx[0..n) of ms
 * into folder dir, keeping flags, keywords and dates. uids gets the new UIDs (room for n),
 * *uidvalidity the destination's. After a move, ms is synced (the messages are MS_GONE). */
int mailstore_copy(mailstore *ms, size_t const *idx, size_t n, char const *dir, int move,
                   uint32_t *uids, uint32_t *uidvalidity);

/* Status of a folder without selecting it: messages, \Recent ones (not claimed), unseen,
 * UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ, size. */
typedef struct mailstore_status_s mailstore_status;
struct mailstore_status_s {
  uint32_t messages, recent, unseen, uidnext, uidvalidity, deleted;
  uint64_t highestmodseq, size;
};
int mailstore_status_get(char const *dir, mailstore_status *st);

/* The UIDs expunged after modseq, ascending, into *out (malloc'ed; free it). When modseq is
 * older than what the record remembers, every UID below UIDNEXT that is not in the folder.
 * Returns the count or -1. */
long mailstore_vanished(mailstore const *ms, uint64_t modseq, uint32_t **out);

/* Parses the ":2," info of a file name into system flags and keyword bits. */
void mailstore_parse_info(char const *name, uint32_t *flags, uint32_t *kw);

#endif
