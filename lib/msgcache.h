/* msgcache: what IMAP computes from a message file and asks for again and again (ENVELOPE,
 * BODYSTRUCTURE, BODY, the top-level header for SEARCH, the wire size, the date), kept per
 * folder in FOLDER/pillarbox-cache so that a FETCH or SEARCH over a folder reads one file
 * instead of parsing every message.
 *
 * The file is an append-only log (doc/maildir.md, "The cache"):
 *   "PBC2 V<uidvalidity> K<mark, 10 digits> <hash of what precedes it, 10 digits>\n"
 *   then entries: "E <sum> <uid> <mtime> <wsize> <flags> <envlen> <bslen> <bodylen> <hdrlen>
 *   <uniq>\n" followed by the four strings and "\n". <sum> is a hash (FNV-1a, 8 octets a
 *   step) of everything after "E <sum> " up to the final "\n"; <uniq> the unique part of
 *   the file name.
 * It is only a cache: an entry is used when its hash checks out (looked at on first use) and
 * its UID and unique name match the message; the reading stops at the first entry whose frame
 * does not parse (a torn tail after a crash: the next writer cuts it off under the lock).
 * The mark: entries that start before it were hashed by a writer and fdatasync'ed before the
 * mark was written (in place, under the lock), so they are used without hashing them again;
 * a writer moves it once a quarter MB lies past it. A header whose own hash does not match (a
 * read torn by a rewrite) gives no mark. The UIDs and offsets of the entries before the mark
 * are kept in FOLDER/pillarbox-cache.index (written by a session that had to walk them), so
 * that a session walks only the entries after the mark.
 * Appends are one write under an fcntl lock on the file; nothing is fsync'ed but what the
 * mark is moved over (a lost entry is computed again). A new UIDVALIDITY starts the file
 * afresh; so does a file grown to more than twice what its live entries need.
 *
 * The file is mapped from its first use until the session goes quiet (msgcache_rest), so
 * an idle session holds none of it. Functions return 1 ok, 0 not found / not usable, -1
 * error.
 */
#ifndef PILLARBOX_MSGCACHE_H
#define PILLARBOX_MSGCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <skalibs/stralloc.h>

#define MSGCACHE_FILE "pillarbox-cache"
#define MSGCACHE_INDEX "pillarbox-cache.index" /* where the entries before the mark are */
#define MSGCACHE_HDR_MAX 16384 /* a longer top-level header is not kept (SEARCH reads the file) */
#define MSGCACHE_F_HDR 1       /* the entry holds the top-level header */

typedef struct msgcache_ent_s msgcache_ent;
struct msgcache_ent_s {
  uint64_t wsize;  /* the size with CRLF line ends */
  int64_t mtime;   /* INTERNALDATE */
  unsigned int flags;
  char const *env, *bs, *body, *hdr;
  size_t envlen, bslen, bodylen, hdrlen;
};

typedef struct msgcache_ix_s msgcache_ix;
struct msgcache_ix_s {
  uint32_t uid;
  uint32_t off;  /* of the entry's line in the file */
  int ok;        /* its hash: 0 not checked yet, 1 good, -1 bad */
};

typedef struct msgcache_s msgcache;
struct msgcache_s {
  char dir[256];
  uint32_t uidvalidity;
  int fd;             /* -1: not open */
  int broken;         /* unusable (could not open, too big): everything misses */
  int looked;         /* the file was looked at during this command */
  char *map;          /* [0, maplen) of the file, while a command uses it */
  size_t maplen;
  size_t valid;       /* octets of the file read and found good */
  size_t known;       /* the header's mark: entries before it need no hash */
  size_t ixk;         /* the table up to here came from the index (0: none) */
  msgcache_ix *ix;    /* the entries read so far */
  size_t nix, aix;
  int sorted;
  stralloc pend;      /* entries to append at msgcache_done */
  size_t npend;
};
#define MSGCACHE_ZERO {.fd = -1, .pend = STRALLOC_ZERO}

/* Ties c to the folder dir ("." for INBOX) with this UIDVALIDITY; opens nothing yet. */
void msgcache_init(msgcache *c, char const *dir, uint32_t uidvalidity);

/* The entry of (uid, file name); 1 found (e's strings point into the mapping, valid until
 * msgcache_done), 0 not cached. */
int msgcache_get(msgcache *c, uint32_t uid, char const *name, msgcache_ent *e);

/* Queues an entry for (uid, file name) (written at msgcache_done). */
int msgcache_put(msgcache *c, uint32_t uid, char const *name, msgcache_ent const *e);

/* End of a command: appends the queued entries (one write, under the lock). live: the
 * number of messages in the folder, to decide on starting afresh (0: in the middle of a
 * command). */
int msgcache_done(msgcache *c, size_t live);

/* The session is quiet: the file is unmapped (mapped again at the next use). */
void msgcache_rest(msgcache *c);

void msgcache_close(msgcache *c);

/* The hash of the entries (exposed for the unit test). */
uint32_t msgcache_sum(char const *s, size_t len, uint32_t h);

#endif
