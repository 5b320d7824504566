/* accounts: the text sources control/domains, control/users, control/aliases (formats in
 * doc/formats.md) and their atomic compilation into the .cdb files that lib/lookup reads.
 *
 * Only the admin commands (mail-domain, mail-user, mail-alias, mail-instance) use this module.
 * An edit takes the lock (control/.lock), reads the text, changes whole records, then
 * accounts_save: the new text is compiled into NAME.cdb.tmp first (a junk line anywhere fails
 * the save, naming the line, and leaves text and cdb as they were), then the text is written
 * atomically, then the cdb is renamed into place.
 */
#ifndef PILLARBOX_ACCOUNTS_H
#define PILLARBOX_ACCOUNTS_H

#include <stddef.h>
#include <skalibs/stralloc.h>

#define ACCT_DOMAINS 0
#define ACCT_USERS 1
#define ACCT_ALIASES 2

#define ACCT_PASSWORD_MAX 1024

/* One parsed record (pointers into the line). */
typedef struct acct_rec_s acct_rec;
struct acct_rec_s {
  char const *key;      /* domain, address or "@domain", as written */
  size_t keylen;
  char const *hash;     /* users: crypt hash (may be empty) */
  size_t hashlen;
  char const *maildir;  /* users: Maildir, relative to MAILROOT or absolute */
  size_t maildirlen;
  unsigned long long quota; /* users: bytes, 0 = none */
  char const *targets;  /* aliases: "t1, t2, ..." */
  size_t targetslen;
};

/* The file name of a source ("domains", "users", "aliases"). */
char const *accounts_name(int kind);

/* Parses one meaningful line (already stripped of blanks and comments). Returns 1, or 0 with
 * *why set to a reason. */
int accounts_parse(int kind, char const *s, size_t n, acct_rec *r, char const **why);

/* Calls f(s, n, lineno, data) on each meaningful line of text; stops when f returns <= 0 and
 * returns that value, else 1. */
int accounts_each(char const *s, size_t len,
                  int (*f)(char const *, size_t, unsigned long, void *), void *data);

/* Splits alias targets "a, b ,c" one at a time: from *pos, sets *t and *tn; 1 got one, 0 done. */
int accounts_next_target(char const *s, size_t len, size_t *pos, char const **t, size_t *tn);

/* Compiles text into cdbpath atomically. 1 ok; 0 junk at *line (*why says what, errno EINVAL,
 * old cdb untouched); -1 system error (errno).
 * ACCT_USERS makes two databases: cdbpath (users.cdb, mode 0644: address -> maildir, quota,
 * no hash) and passwd.cdb in the same directory (mode 0600, cdbw_tmpfile's rules: address ->
 * hash); passwd.cdb is put in place first. */
int accounts_compile(int kind, char const *s, size_t len, char const *cdbpath,
                     unsigned long *line, char const **why);

/* The admin side; these die with 100 (junk) or 111 (system) like the programs they serve. */
int accounts_lock(void);                        /* flock(control/.lock); returns the fd */
void accounts_load(int kind, stralloc *text);   /* reads control/NAME (missing: empty) */
void accounts_save(int kind, char const *s, size_t len); /* compile, then write the text */
/* The same, but junk is a warning (naming the line) and a return of 0 instead of death; 1 ok.
 * control/users is written mode 0600 (it holds the hashes), the other sources 0644. */
int accounts_save_try(int kind, char const *s, size_t len);

/* Finds the record whose key folds to key (already folded). Returns 1 and fills r, or 0. */
int accounts_find(int kind, char const *s, size_t len, char const *key, size_t klen,
                  acct_rec *r);

/* The list and rebuild commands of the admin programs. accounts_list calls f on each
 * meaningful line of control/NAME (f prints to buffer_1 and returns -1 on a write error),
 * then flushes; dies 111 on a write error. accounts_rebuild compiles control/NAME again under
 * the lock (accounts_save). */
void accounts_list(int kind, int (*f)(char const *, size_t, unsigned long, void *), void *data);
void accounts_rebuild(int kind);

/* accounts_replace, then accounts_save of the result; dies 111 if out of memory. */
void accounts_replace_save(int kind, char const *s, size_t len, char const *key, size_t klen,
                           char const *line, size_t linelen);

/* The number of records of kind in text whose key is in the domain dom (already folded):
 * "local@dom", and for aliases the catch-all "@dom". Junk lines do not count. */
unsigned long accounts_count_domain(int kind, char const *s, size_t len, char const *dom,
                                    size_t dlen);

/* Copies text into out without the records whose key folds to key; if line is not 0, puts
 * line (a full line, no newline) where the first such record was, or at the end. */
int accounts_replace(int kind, char const *s, size_t len, char const *key, size_t klen,
                     char const *line, size_t linelen, stralloc *out);

/* The alias graph, checked over the text sources (before they are saved), with lib/lookup's
 * rules: exact alias or account, then user+tag's user, then the domain's catch-all; an address
 * being expanded that is an account stops there ("a: a, b" keeps a copy). The texts of
 * control/aliases, control/users and control/domains in t. */
typedef struct acct_texts_s acct_texts;
struct acct_texts_s {
  char const *aliases;
  size_t alen;
  char const *users;
  size_t ulen;
  char const *domains;
  size_t dlen;
};
#define ACCT_GRAPH_OK 0
#define ACCT_GRAPH_LOOP 1  /* path: "a -> b -> a" */
#define ACCT_GRAPH_DEEP 2  /* path: the chain that is over LOOKUP_DEPTH_MAX deep */
#define ACCT_GRAPH_WIDE 3  /* more than LOOKUP_TARGETS_MAX targets examined */
/* Expands the folded key (an address or "@domain") as lookup would. Returns ACCT_GRAPH_* with
 * path (NUL-terminated) naming the problem, or -1 out of memory. */
int accounts_alias_check(acct_texts const *t, char const *key, size_t klen, stralloc *path);

/* Folds target t into out and, if it has a +tag, its user+domain into base (else base empty). */
int accounts_fold_target(char const *t, size_t tn, stralloc *out, stralloc *base);

/* Reads one password line from fd 0 (CR/LF stripped, not empty, no NUL, at most
 * ACCT_PASSWORD_MAX bytes) into a NUL-terminated pw; dies 100 on a bad one. */
void accounts_read_password(stralloc *pw);

#endif
