/* accounts: see accounts.h. Record formats: doc/formats.md. */
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/buffer.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include <skalibs/uint64.h>

#include "accounts.h"
#include "addr.h"
#include "cdbmake.h"
#include "control.h"
#include "lookup.h"
#include "passwd.h"

extern char const *PROG;

char const *accounts_name(int kind)
{
  return kind == ACCT_DOMAINS ? "domains" : kind == ACCT_USERS ? "users" : "aliases";
}

static int is_blank(char c)
{
  return c == ' ' || c == '\t';
}

static void trim(char const **s, size_t *n)
{
  while (*n && is_blank(**s)) {
    (*s)++;
    (*n)--;
  }
  while (*n && is_blank((*s)[*n - 1])) (*n)--;
}

/* Offset of the first c outside a quoted local part, or n. */
static size_t unquoted(char const *s, size_t n, char c)
{
  size_t i;
  int q = 0;
  for (i = 0; i < n; i++) {
    if (q) {
      if (s[i] == '\\' && i + 1 < n) i++;
      else if (s[i] == '"') q = 0;
    } else if (s[i] == '"')
      q = 1;
    else if (s[i] == c)
      return i;
  }
  return n;
}

/* A domain alone: checked as the domain of "x@domain". */
static int domain_ok(char const *d, size_t n)
{
  char buf[ADDR_DOMAIN_MAX + 3];
  if (!n || n > ADDR_DOMAIN_MAX) return 0;
  buf[0] = 'x';
  buf[1] = '@';
  memcpy(buf + 2, d, n);
  return addr_check_mailbox(buf, n + 2, ADDR_UTF8) == ADDR_OK;
}

int accounts_next_target(char const *s, size_t len, size_t *pos, char const **t, size_t *tn)
{
  size_t i = *pos, start;
  while (i < len && (is_blank(s[i]) || s[i] == ',')) i++;
  if (i >= len) {
    *pos = i;
    return 0;
  }
  start = i;
  i += unquoted(s + i, len - i, ',');
  *t = s + start;
  *tn = i - start;
  trim(t, tn);
  *pos = i;
  return 1;
}

int accounts_parse(int kind, char const *s, size_t n, acct_rec *r, char const **why)
{
  size_t c;
  memset(r, 0, sizeof *r);
  trim(&s, &n);
  if (kind == ACCT_DOMAINS) {
    if (!domain_ok(s, n)) {
      *why = "not a domain name";
      return 0;
    }
    r->key = s;
    r->keylen = n;
    return 1;
  }
  c = unquoted(s, n, ':');
  if (c == n) {
    *why = "no ':' after the address";
    return 0;
  }
  r->key = s;
  r->keylen = c;
  trim(&r->key, &r->keylen);
  if (kind == ACCT_USERS) {
    char const *f = s + c + 1;
    size_t fn = n - c - 1, k, start, field = 0;
    char const *fs[3];
    size_t fl[3];
    if (addr_check_mailbox(r->key, r->keylen, ADDR_UTF8) != ADDR_OK) {
      *why = "not a valid address";
      return 0;
    }
    for (k = 0, start = 0; k <= fn; k++) {
      if (k == fn || f[k] == ':') {
        if (field >= 3) {
          *why = "too many fields (address:hash:maildir:quota)";
          return 0;
        }
        fs[field] = f + start;
        fl[field] = k - start;
        field++;
        start = k + 1;
      }
    }
    if (field != 3) {
      *why = "too few fields (address:hash:maildir:quota)";
      return 0;
    }
    r->hash = fs[0];
    r->hashlen = fl[0];
    trim(&r->hash, &r->hashlen);
    for (k = 0; k < r->hashlen; k++)
      if ((unsigned char)r->hash[k] <= ' ' || (unsigned char)r->hash[k] >= 127) {
        *why = "bad character in password hash";
        return 0;
      }
    r->maildir = fs[1];
    r->maildirlen = fl[1];
    trim(&r->maildir, &r->maildirlen);
    if (!r->maildirlen) {
      *why = "empty maildir";
      return 0;
    }
    for (k = 0; k < r->maildirlen; k++)
      if ((unsigned char)r->maildir[k] < ' ' || r->maildir[k] == 127) {
        *why = "control character in maildir";
        return 0;
      }
    {
      char const *q = fs[2];
      size_t qn = fl[2], used;
      uint64_t u;
      trim(&q, &qn);
      if (!qn || qn > 20) {
        *why = "bad quota";
        return 0;
      }
      used = uint64_scan(q, &u);
      if (used != qn) {
        *why = "bad quota";
        return 0;
      }
      r->quota = u;
    }
    return 1;
  }
  /* aliases */
  if (r->keylen && r->key[0] == '@') {
    if (!domain_ok(r->key + 1, r->keylen - 1)) {
      *why = "not a valid catch-all @domain";
      return 0;
    }
  } else if (addr_check_mailbox(r->key, r->keylen, ADDR_UTF8) != ADDR_OK) {
    *why = "not a valid address";
    return 0;
  }
  r->targets = s + c + 1;
  r->targetslen = n - c - 1;
  trim(&r->targets, &r->targetslen);
  {
    size_t pos = 0, count = 0;
    char const *t;
    size_t tn;
    while (accounts_next_target(r->targets, r->targetslen, &pos, &t, &tn)) {
      if (addr_check_mailbox(t, tn, ADDR_UTF8) != ADDR_OK) {
        *why = "a target is not a valid address";
        return 0;
      }
      if (++count > LOOKUP_TARGETS_MAX) {
        *why = "too many targets";
        return 0;
      }
    }
    if (!count) {
      *why = "no targets";
      return 0;
    }
  }
  return 1;
}

int accounts_each(char const *s, size_t len,
                  int (*f)(char const *, size_t, unsigned long, void *), void *data)
{
  size_t i = 0;
  unsigned long line = 0;
  while (i < len) {
    size_t j = i, k, b;
    line++;
    while (j < len && s[j] != '\n') j++;
    k = j;
    while (k > i && (is_blank(s[k - 1]) || s[k - 1] == '\r')) k--;
    b = i;
    while (b < k && is_blank(s[b])) b++;
    if (b < k && s[b] != '#') {
      int r = f(s + b, k - b, line, data);
      if (r <= 0) return r;
    }
    i = j + 1;
  }
  return 1;
}

struct compile_s {
  int kind;
  cdbw *w;
  cdbw *pw; /* users: passwd.cdb (the hashes), else 0 */
  stralloc key;
  stralloc val;
  unsigned long line;
  char const *why;
  int syserr;
};

static int compile_line(char const *s, size_t n, unsigned long line, void *data)
{
  struct compile_s *c = data;
  acct_rec r;
  int e;
  c->line = line;
  if (memchr(s, 0, n)) {
    c->why = "NUL byte";
    return 0;
  }
  if (!accounts_parse(c->kind, s, n, &r, &c->why)) return 0;
  if (!addr_fold(r.key, r.keylen, &c->key)) goto sys;
  c->val.len = 0;
  if (c->kind == ACCT_USERS) {
    char fmt[UINT64_FMT];
    if (!stralloc_catb(&c->val, r.maildir, r.maildirlen) || !stralloc_0(&c->val) ||
        !stralloc_catb(&c->val, fmt, uint64_fmt(fmt, (uint64_t)r.quota)) || !stralloc_0(&c->val))
      goto sys;
  } else if (c->kind == ACCT_ALIASES) {
    size_t pos = 0;
    char const *t;
    size_t tn;
    while (accounts_next_target(r.targets, r.targetslen, &pos, &t, &tn))
      if (!stralloc_catb(&c->val, t, tn) || !stralloc_0(&c->val)) goto sys;
  }
  e = cdbw_exists(c->w, c->key.s, c->key.len);
  if (e < 0) goto sys;
  if (e) {
    c->why = "duplicate entry";
    return 0;
  }
  if (!cdbw_add(c->w, c->key.s, c->key.len, c->val.s ? c->val.s : "", c->val.len)) goto sys;
  if (c->pw && !cdbw_add(c->pw, c->key.s, c->key.len, r.hashlen ? r.hash : "", r.hashlen))
    goto sys;
  return 1;
sys:
  c->syserr = 1;
  return -1;
}

/* passwd.cdb beside cdbpath (same directory), into p. 1 ok, 0 no memory. */
static int passwd_path(char const *cdbpath, stralloc *p)
{
  char const *slash = strrchr(cdbpath, '/');
  p->len = 0;
  if (slash && !stralloc_catb(p, cdbpath, slash - cdbpath + 1)) return 0;
  return stralloc_cats(p, "passwd.cdb") && stralloc_0(p);
}

/* Compiles into cdbpath (users: and the hashes into passwd.cdb beside it, mode 0600); calls
 * before(data) once the text is known good, before the new databases are put in place (a
 * failing before aborts the rebuild: -1). */
static int compile(int kind, char const *s, size_t len, char const *cdbpath,
                   unsigned long *line, char const **why, int (*before)(void *), void *data)
{
  struct compile_s c = {kind, 0, 0, STRALLOC_ZERO, STRALLOC_ZERO, 0, 0, 0};
  stralloc pp = STRALLOC_ZERO;
  int r;
  if (kind == ACCT_USERS) {
    if (!passwd_path(cdbpath, &pp)) return -1;
    c.pw = cdbw_start_mode(pp.s, CDBW_PRIVATE);
    if (!c.pw) {
      int e = errno;
      stralloc_free(&pp);
      errno = e;
      return -1;
    }
    stralloc_free(&pp);
  }
  c.w = cdbw_start(cdbpath);
  if (!c.w) {
    if (c.pw) cdbw_abort(c.pw);
    return -1;
  }
  r = accounts_each(s, len, compile_line, &c);
  stralloc_free(&c.key);
  stralloc_free(&c.val);
  if (r <= 0) {
    cdbw_abort(c.w);
    if (c.pw) cdbw_abort(c.pw);
    if (c.syserr) return -1;
    errno = EINVAL;
    *line = c.line;
    *why = c.why;
    return 0;
  }
  if (before && !before(data)) {
    cdbw_abort(c.w);
    if (c.pw) cdbw_abort(c.pw);
    return -1;
  }
  /* the hashes first: an account never shows before its hash (a deleted one loses its hash
   * first); either way a reader in between sees at worst a login refused */
  if (c.pw && !cdbw_finish(c.pw)) {
    cdbw_abort(c.w);
    return -1;
  }
  return cdbw_finish(c.w) ? 1 : -1;
}

int accounts_compile(int kind, char const *s, size_t len, char const *cdbpath,
                     unsigned long *line, char const **why)
{
  return compile(kind, s, len, cdbpath, line, why, 0, 0);
}

/* Dies 100 unless MAILROOT/control is a directory: a wrong MAILROOT is a usage problem. */
static void check_instance(void)
{
  stralloc p = STRALLOC_ZERO;
  struct stat st;
  if (!mailroot_path(&p, "control")) strerr_diefu1sys(111, "allocate");
  if (stat(p.s, &st) < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      strerr_dief4x(100, "MAILROOT=", mailroot(), " is not an instance: no directory ", p.s);
    strerr_diefu2sys(111, "stat ", p.s);
  }
  if (!S_ISDIR(st.st_mode))
    strerr_dief4x(100, "MAILROOT=", mailroot(), " is not an instance: no directory ", p.s);
  stralloc_free(&p);
}

int accounts_lock(void)
{
  stralloc p = STRALLOC_ZERO;
  int fd;
  check_instance();
  if (!mailroot_path(&p, "control/.lock")) strerr_diefu1sys(111, "allocate");
  fd = open(p.s, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) strerr_diefu2sys(111, "open ", p.s);
  if (flock(fd, LOCK_EX) < 0) strerr_diefu2sys(111, "lock ", p.s);
  stralloc_free(&p);
  return fd;
}

static void source_path(stralloc *p, int kind, char const *suffix)
{
  p->len = 0;
  if (!stralloc_cats(p, mailroot()) || !stralloc_cats(p, "/control/") ||
      !stralloc_cats(p, accounts_name(kind)) || !stralloc_cats(p, suffix) || !stralloc_0(p))
    strerr_diefu1sys(111, "allocate");
}

void accounts_load(int kind, stralloc *text)
{
  stralloc p = STRALLOC_ZERO;
  check_instance();
  source_path(&p, kind, "");
  text->len = 0;
  if (!openslurpclose(text, p.s) && errno != ENOENT) strerr_diefu2sys(111, "read ", p.s);
  stralloc_free(&p);
}

struct text_s {
  char const *path;
  char const *s;
  size_t len;
  unsigned int mode; /* control/users holds the hashes: private */
  int failed;
};

/* The text goes in place before the database: the text is the source of truth, and a crash
 * in between leaves a database that the next rebuild brings up to date. */
static int write_text(void *data)
{
  struct text_s *t = data;
  if (cdbw_writefile(t->path, t->s, t->len, t->mode)) return 1;
  t->failed = 1;
  return 0;
}

/* 1 saved; 0 junk (*msg says where and what); dies 111 on system errors. */
static int save(int kind, char const *s, size_t len, stralloc *msg)
{
  stralloc p = STRALLOC_ZERO, c = STRALLOC_ZERO;
  unsigned long line = 0;
  char const *why = "";
  int r;
  source_path(&p, kind, "");
  source_path(&c, kind, ".cdb");
  {
    struct text_s t = {p.s, s, len, kind == ACCT_USERS ? CDBW_PRIVATE : 0644, 0};
    r = compile(kind, s, len, c.s, &line, &why, write_text, &t);
    if (r < 0 && t.failed) strerr_diefu2sys(111, "write ", p.s);
  }
  if (r < 0) strerr_diefu2sys(111, "build the databases of ", p.s);
  if (!r) {
    char fmt[ULONG_FMT];
    msg->len = 0;
    if (!stralloc_cats(msg, p.s) || !stralloc_cats(msg, " line ") ||
        !stralloc_catb(msg, fmt, ulong_fmt(fmt, line)) || !stralloc_cats(msg, ": ") ||
        !stralloc_cats(msg, why) || !stralloc_cats(msg, " (database left unchanged)") ||
        !stralloc_0(msg))
      strerr_diefu1sys(111, "allocate");
  }
  stralloc_free(&p);
  stralloc_free(&c);
  return r;
}

void accounts_save(int kind, char const *s, size_t len)
{
  stralloc msg = STRALLOC_ZERO;
  if (!save(kind, s, len, &msg)) strerr_dief1x(100, msg.s);
}

int accounts_save_try(int kind, char const *s, size_t len)
{
  stralloc msg = STRALLOC_ZERO;
  if (save(kind, s, len, &msg)) return 1;
  strerr_warnw1x(msg.s);
  stralloc_free(&msg);
  return 0;
}

struct find_s {
  int kind;
  char const *key;
  size_t klen;
  acct_rec *r;
  stralloc fold;
  char const *start; /* of the text */
  size_t off;        /* line start of the match */
  int found;
};

static int find_line(char const *s, size_t n, unsigned long line, void *data)
{
  struct find_s *f = data;
  acct_rec r;
  char const *why;
  (void)line;
  if (!accounts_parse(f->kind, s, n, &r, &why)) return 1; /* junk: not ours to judge here */
  if (!addr_fold(r.key, r.keylen, &f->fold)) return -1;
  if (f->fold.len == f->klen && !memcmp(f->fold.s, f->key, f->klen)) {
    if (f->r) *f->r = r;
    f->found = 1;
    return 0;
  }
  return 1;
}

int accounts_find(int kind, char const *s, size_t len, char const *key, size_t klen,
                  acct_rec *r)
{
  struct find_s f = {kind, key, klen, r, STRALLOC_ZERO, s, 0, 0};
  if (accounts_each(s, len, find_line, &f) < 0) strerr_diefu1sys(111, "allocate");
  stralloc_free(&f.fold);
  return f.found;
}

void accounts_list(int kind, int (*f)(char const *, size_t, unsigned long, void *), void *data)
{
  stralloc text = STRALLOC_ZERO;
  accounts_load(kind, &text);
  if (accounts_each(text.s, text.len, f, data) < 0 || !buffer_flush(buffer_1))
    strerr_diefu1sys(111, "write to stdout");
  stralloc_free(&text);
}

void accounts_rebuild(int kind)
{
  stralloc text = STRALLOC_ZERO;
  int lock = accounts_lock();
  accounts_load(kind, &text);
  accounts_save(kind, text.s, text.len);
  close(lock);
  stralloc_free(&text);
}

void accounts_replace_save(int kind, char const *s, size_t len, char const *key, size_t klen,
                           char const *line, size_t linelen)
{
  stralloc out = STRALLOC_ZERO;
  if (!accounts_replace(kind, s, len, key, klen, line, linelen, &out))
    strerr_diefu1sys(111, "allocate");
  accounts_save(kind, out.s, out.len);
  stralloc_free(&out);
}

struct count_s {
  int kind;
  char const *dom;
  size_t dlen;
  unsigned long n;
};

static int count_line(char const *s, size_t n, unsigned long line, void *data)
{
  struct count_s *c = data;
  acct_rec r;
  char const *why;
  size_t at, i;
  (void)line;
  if (!accounts_parse(c->kind, s, n, &r, &why)) return 1;
  at = r.key[0] == '@' ? 0 : addr_at(r.key, r.keylen);
  if (r.keylen - at - 1 != c->dlen) return 1;
  for (i = 0; i < c->dlen; i++) {
    char x = r.key[at + 1 + i];
    if (x >= 'A' && x <= 'Z') x += 32;
    if (x != c->dom[i]) return 1;
  }
  c->n++;
  return 1;
}

unsigned long accounts_count_domain(int kind, char const *s, size_t len, char const *dom,
                                    size_t dlen)
{
  struct count_s c = {kind, dom, dlen, 0};
  accounts_each(s, len, count_line, &c);
  return c.n;
}

int accounts_replace(int kind, char const *s, size_t len, char const *key, size_t klen,
                     char const *line, size_t linelen, stralloc *out)
{
  stralloc fold = STRALLOC_ZERO;
  size_t i = 0;
  int placed = 0;
  out->len = 0;
  while (i < len) {
    size_t j = i, k, b;
    int drop = 0;
    while (j < len && s[j] != '\n') j++;
    k = j;
    while (k > i && (is_blank(s[k - 1]) || s[k - 1] == '\r')) k--;
    b = i;
    while (b < k && is_blank(s[b])) b++;
    if (b < k && s[b] != '#') {
      acct_rec r;
      char const *why;
      if (accounts_parse(kind, s + b, k - b, &r, &why)) {
        if (!addr_fold(r.key, r.keylen, &fold)) goto err;
        drop = fold.len == klen && !memcmp(fold.s, key, klen);
      }
    }
    if (drop) {
      if (line && !placed) {
        if (!stralloc_catb(out, line, linelen) || !stralloc_catb(out, "\n", 1)) goto err;
        placed = 1;
      }
    } else if (!stralloc_catb(out, s + i, j - i) || !stralloc_catb(out, "\n", 1))
      goto err;
    i = j + 1;
  }
  if (line && !placed)
    if (!stralloc_catb(out, line, linelen) || !stralloc_catb(out, "\n", 1)) goto err;
  stralloc_free(&fold);
  return 1;
err:
  stralloc_free(&fold);
  return 0;
}

void accounts_read_password(stralloc *pw)
{
  char buf[ACCT_PASSWORD_MAX + 2];
  size_t n = 0;
  pw->len = 0;
  for (;;) {
    ssize_t r;
    if (n >= sizeof buf) break;
    r = read(0, buf + n, sizeof buf - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "read the password from stdin");
    }
    if (!r) break;
    if (memchr(buf + n, '\n', r)) {
      n += r;
      break;
    }
    n += r;
  }
  {
    char *nl = memchr(buf, '\n', n);
    size_t len = nl ? (size_t)(nl - buf) : n;
    if (!nl && n >= sizeof buf) strerr_dief1x(100, "password too long (1024 bytes at most)");
    if (len && buf[len - 1] == '\r') len--;
    if (!len) strerr_dief1x(100, "empty password refused (give it on stdin)");
    if (len > ACCT_PASSWORD_MAX) strerr_dief1x(100, "password too long (1024 bytes at most)");
    if (len > PASSWD_HASH_MAX)
      strerr_dief1x(100, "password too long (libcrypt hashes 511 bytes at most)");
    if (memchr(buf, 0, len)) strerr_dief1x(100, "NUL byte in password");
    if (!stralloc_catb(pw, buf, len) || !stralloc_0(pw)) strerr_diefu1sys(111, "allocate");
    memset(buf, 0, sizeof buf);
  }
}

/* ---- the alias graph (see accounts.h) ---- */

struct graph_s {
  acct_texts const *t;
  stralloc chain; /* keys being expanded, NUL-separated */
  unsigned int steps;
  stralloc *path;
};

static int in_chain(struct graph_s *g, char const *k, size_t kn)
{
  size_t i = 0;
  while (i < g->chain.len) {
    size_t n = strlen(g->chain.s + i);
    if (n == kn && !memcmp(g->chain.s + i, k, kn)) return 1;
    i += n + 1;
  }
  return 0;
}

/* The chain, then k, as "a -> b -> k" into g->path. -1 no memory, else code. */
static int report(struct graph_s *g, char const *k, size_t kn, int code)
{
  size_t i = 0;
  g->path->len = 0;
  while (i < g->chain.len) {
    size_t n = strlen(g->chain.s + i);
    if (!stralloc_catb(g->path, g->chain.s + i, n) || !stralloc_cats(g->path, " -> ")) return -1;
    i += n + 1;
  }
  if (!stralloc_catb(g->path, k, kn) || !stralloc_0(g->path)) return -1;
  return code;
}

static int is_account(struct graph_s *g, char const *k, size_t kn)
{
  return accounts_find(ACCT_USERS, g->t->users, g->t->ulen, k, kn, 0);
}

static int expand_key(struct graph_s *g, char const *k, size_t kn, acct_rec const *r,
                      unsigned int depth);

/* resolve_exact: 1 handled (*res set), 0 neither alias nor account nor in the chain. */
static int exact(struct graph_s *g, char const *k, size_t kn, unsigned int depth, int *res)
{
  acct_rec r;
  if (in_chain(g, k, kn)) {
    *res = is_account(g, k, kn) ? ACCT_GRAPH_OK : report(g, k, kn, ACCT_GRAPH_LOOP);
    return 1;
  }
  if (accounts_find(ACCT_ALIASES, g->t->aliases, g->t->alen, k, kn, &r)) {
    *res = expand_key(g, k, kn, &r, depth);
    return 1;
  }
  if (is_account(g, k, kn)) {
    *res = ACCT_GRAPH_OK;
    return 1;
  }
  return 0;
}

/* One target t (folded in f, its +tag base in b), as lookup's resolve. */
static int target(struct graph_s *g, stralloc const *f, stralloc const *b, unsigned int depth)
{
  size_t at = addr_at(f->s, f->len);
  acct_rec r;
  int res;
  if (at >= f->len || !at) return ACCT_GRAPH_OK; /* no domain: remote-ish, never ours */
  if (!accounts_find(ACCT_DOMAINS, g->t->domains, g->t->dlen, f->s + at + 1, f->len - at - 1, 0))
    return ACCT_GRAPH_OK; /* remote */
  if (exact(g, f->s, f->len, depth, &res)) return res;
  if (b->len && exact(g, b->s, b->len, depth, &res)) return res;
  if (accounts_find(ACCT_ALIASES, g->t->aliases, g->t->alen, f->s + at, f->len - at, &r)) {
    if (in_chain(g, f->s + at, f->len - at))
      return report(g, f->s + at, f->len - at, ACCT_GRAPH_LOOP);
    return expand_key(g, f->s + at, f->len - at, &r, depth);
  }
  return ACCT_GRAPH_OK; /* a local address that does not exist: a bounce, not a loop */
}

int accounts_fold_target(char const *t, size_t tn, stralloc *out, stralloc *base)
{
  size_t at, i;
  base->len = 0;
  if (!addr_fold(t, tn, out)) return 0;
  at = addr_at(out->s, out->len);
  if (at >= out->len || !at || out->s[0] == '"') return 1;
  for (i = 1; i < at; i++)
    if (out->s[i] == '+') {
      if (!stralloc_catb(base, out->s, i) || !stralloc_catb(base, out->s + at, out->len - at))
        return 0;
      break;
    }
  return 1;
}

static int expand_key(struct graph_s *g, char const *k, size_t kn, acct_rec const *r,
                      unsigned int depth)
{
  size_t mark = g->chain.len, pos = 0;
  char const *t;
  size_t tn;
  int res = ACCT_GRAPH_OK;
  stralloc f = STRALLOC_ZERO, b = STRALLOC_ZERO;
  if (depth >= LOOKUP_DEPTH_MAX) return report(g, k, kn, ACCT_GRAPH_DEEP);
  if (!stralloc_catb(&g->chain, k, kn) || !stralloc_0(&g->chain)) return -1;
  while (accounts_next_target(r->targets, r->targetslen, &pos, &t, &tn)) {
    if (++g->steps > LOOKUP_TARGETS_MAX) {
      res = report(g, k, kn, ACCT_GRAPH_WIDE);
      break;
    }
    if (!accounts_fold_target(t, tn, &f, &b)) {
      res = -1;
      break;
    }
    res = target(g, &f, &b, depth + 1);
    if (res != ACCT_GRAPH_OK) break;
  }
  stralloc_free(&f);
  stralloc_free(&b);
  g->chain.len = mark;
  return res;
}

int accounts_alias_check(acct_texts const *t, char const *key, size_t klen, stralloc *path)
{
  struct graph_s g = {t, STRALLOC_ZERO, 0, path};
  acct_rec r;
  int res = ACCT_GRAPH_OK;
  path->len = 0;
  if (accounts_find(ACCT_ALIASES, t->aliases, t->alen, key, klen, &r))
    res = expand_key(&g, key, klen, &r, 0);
  stralloc_free(&g.chain);
  return res;
}
