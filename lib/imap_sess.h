/* imap_sess: the state of one logged-in IMAP session and what every command module shares:
 * the selected folder, the enabled extensions, reply writing, and the untagged updates
 * (EXPUNGE / EXISTS / RECENT / FETCH FLAGS) that tell the client what changed.
 *
 * The selected folder is a mailstore; message sequence number i is ms.msg[i - 1]. A message
 * expunged by someone else stays in ms.msg (MS_GONE) until imap_sess_update is allowed to say
 * EXPUNGE (never during FETCH, STORE, SEARCH: RFC 3501 7.4.1), so numbers never shift under
 * a command.
 */
#ifndef PILLARBOX_IMAP_SESS_H
#define PILLARBOX_IMAP_SESS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <skalibs/stralloc.h>
#include "imap_parse.h"
#include "mailstore.h"
#include "msgcache.h"

typedef struct imap_sess_s imap_sess;
struct imap_sess_s {
  int selected;
  int readonly;
  mailstore ms;
  msgcache cache;      /* the selected folder's ENVELOPE/BODYSTRUCTURE cache */
  char name[MAILSTORE_NAME_MAX + 1]; /* the selected folder's IMAP name */
  size_t reported;     /* EXISTS last told to the client */
  size_t recent_told;  /* RECENT last told */
  int condstore;       /* CONDSTORE enabled (ENABLE or a CONDSTORE command) */
  int qresync;         /* QRESYNC enabled */
  int utf8;            /* UTF8=ACCEPT enabled (also by IMAP4rev2) */
  int rev2;            /* IMAP4rev2 enabled: no \Recent, SEARCH answers ESEARCH */
  uint32_t *saved;     /* SEARCHRES: the UIDs of the last SEARCH RETURN (SAVE), for "$" */
  size_t nsaved;
  int idling;
  char const *tag;     /* the current command's tag (NUL-terminated) */
  int is_uid;          /* the current command is a UID command */
  stralloc scratch;
};

extern imap_sess sess;

/* Output (exits on a write error: the client is gone). */
void imap_out(char const *s);
void imap_outn(char const *s, size_t len);
void imap_outu(uint64_t u);
/* An IMAP string: quoted when it can be, a literal otherwise (8-bit, CR, LF, long). */
void imap_outstr(char const *s, size_t len);
/* nstring: NIL for a NULL s. */
void imap_outnstr(char const *s, size_t len);
/* A literal holding exactly s[0..len) (binary: ~{n}). */
void imap_outlit(char const *s, size_t len, int binary);
/* A mailbox name as the client wants it (UTF-8 when UTF8=ACCEPT is enabled). */
void imap_outmbox(char const *name, size_t len);
/* "(\Seen ... \Recent)" of message i. */
void imap_outflags(size_t i);

/* "TAG OK text\r\n" and friends (text without CRLF). */
void imap_ok(char const *text);
void imap_no(char const *text);
void imap_bad(char const *text);

/* The capability list (without "CAPABILITY "). */
char const *imap_capabilities(void);

/* Tells the client what changed in the selected folder (after syncing it when sync is set).
 * expunge: EXPUNGE (or VANISHED) responses allowed now. */
void imap_sess_update(int sync, int expunge);

/* "* VANISHED [(EARLIER)] uids" for the UIDs expunged after modseq (those in the UID set when
 * nset is not 0); nothing when there are none. */
void imap_sess_vanished(uint64_t modseq, imap_range const *set, size_t nset, int earlier);

/* Turns CONDSTORE on (ENABLE, or a command that uses it); the first time, with a folder
 * selected, says "* OK [HIGHESTMODSEQ n]" (RFC 7162 3.1). */
void imap_sess_condstore(void);

/* The permanent flags line and the keyword list: "* FLAGS (...)" and "* OK [PERMANENTFLAGS". */
void imap_sess_flags(void);

/* Resolves a sequence set or UID set (is_uid) against the selected folder into a list of
 * indexes in msg[] (ascending). Returns the count, -1 on a bad set (after "BAD"), -2 on
 * memory trouble (after "NO"). *out is malloc'ed (free it). Gone messages are included for
 * sequence sets, skipped for UID sets. */
long imap_sess_set(char const *s, size_t len, int is_uid, size_t **out);

/* Maps flag atoms (\Seen ... and keywords) of a list or single atom to bits. create: make
 * unknown keywords. Returns 1, or 0 after "BAD" (bad flag) or "NO" (no room). */
int imap_sess_flagbits(imap_cmd const *c, uint32_t i, int create, uint32_t *flags,
                       uint32_t *kw);

/* The mailbox name of argument a, converted to modified UTF-7 when UTF8=ACCEPT is on, into
 * out (room for MAILSTORE_NAME_MAX + 1, NUL-terminated). 1 ok, 0 bad. */
int imap_sess_mboxname(imap_arg const *a, char *out, size_t *outlen);

/* Reads message i of the selected folder into a buffer of the session (valid until the next
 * call). Returns 1 with *s, *len and *mtime (may be NULL) set, 0 when it is gone. */
int imap_sess_read(size_t i, char const **s, size_t *len, time_t *mtime);

/* Makes the cache entry of message i from its parsed content and queues it (lib/msgcache);
 * e gets the strings (valid until the next call). 1 ok, 0 not cached, -1 out of memory. */
struct mime_msg_s;
int imap_cache_build(size_t i, struct mime_msg_s const *mm, time_t mtime, msgcache_ent *e);

/* The cache entry of message i, or 0. */
int imap_cache_get(size_t i, msgcache_ent *e);

/* After messages were added or removed: refreshes the account's quota record (lib/quotastate)
 * from maildirsize, when $MAILROOT and $USER say which. */
void imap_sess_quota_changed(void);

/* Commands in lib/imap_fetch.c, lib/imap_search.c and lib/imap_mbox.c */
void imap_cmd_fetch(imap_cmd *c, uint32_t first);
void imap_cmd_search(imap_cmd *c, uint32_t first);
void imap_cmd_list(imap_cmd *c, int lsub);
void imap_cmd_status(imap_cmd *c);
void imap_cmd_select(imap_cmd *c, int readonly);
void imap_cmd_create(imap_cmd *c);
void imap_cmd_delete(imap_cmd *c);
void imap_cmd_rename(imap_cmd *c);
void imap_cmd_subscribe(imap_cmd *c, int on);
void imap_unselect(void);

#endif
