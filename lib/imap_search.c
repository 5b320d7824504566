/* imap_search: SEARCH and UID SEARCH (RFC 3501 6.4.4, every key; CHARSET UTF-8; ESEARCH's
 * RETURN (MIN MAX COUNT ALL) of RFC 4731; MODSEQ of RFC 7162). The program is checked once,
 * then evaluated per message straight from the argument tree; a message's content is mapped
 * and parsed (lib/mime) only when a key needs it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <skalibs/djbunix.h>
#include <skalibs/strerr.h>
#include "imap_sess.h"
#include "mime.h"

#define PARTS_MAX 256

typedef struct sctx_s sctx;
struct sctx_s {
  size_t i;        /* the message */
  int loaded;      /* 1 mapped, -1 unreadable */
  char *map;
  size_t len;
  time_t mtime;
  mime_msg mm;
  uint64_t maxmodseq;
  int check;       /* syntax check only */
  int hdr_tried;   /* the cache was looked at for this message */
  int err;         /* -1: memory; -2: bad charset */
};

static mime_part parts[PARTS_MAX];
static stralloc tmp = STRALLOC_ZERO;

/* The search keys, looked up once per command: the check pass notes each key atom's word in
 * kwof[] by its argument index, and the pass over the messages reads it from there (it
 * compared the atom with up to 36 words per key and message). */
#define SEARCH_KEYS X(ALL) X(ANSWERED) X(DELETED) X(DRAFT) X(FLAGGED) X(SEEN) X(RECENT) \
  X(UNANSWERED) X(UNDELETED) X(UNDRAFT) X(UNFLAGGED) X(UNSEEN) X(OLD) X(NEW) X(NOT) X(OR) \
  X(KEYWORD) X(UNKEYWORD) X(LARGER) X(SMALLER) X(BEFORE) X(ON) X(SINCE) X(SENTBEFORE) X(SENTON) \
  X(SENTSINCE) X(FROM) X(TO) X(CC) X(BCC) X(SUBJECT) X(HEADER) X(BODY) X(TEXT) X(UID) X(MODSEQ)
enum kw_e {
  K_NONE = 0,
#define X(w) K_##w,
  SEARCH_KEYS
#undef X
  K_END
};
static char const *const kwname[K_END] = {
  0,
#define X(w) #w,
  SEARCH_KEYS
#undef X
};
static unsigned char kwof[IMAP_ARGS_MAX];

static unsigned char kw_lookup(imap_arg const *a)
{
  unsigned int k;
  for (k = 1; k < K_END; k++)
    if (imap_arg_is(a, kwname[k])) return (unsigned char)k;
  return K_NONE;
}

/* The whole message, parsed (loaded 1); its cache entry is made on the way when missing. */
static int load(sctx *x)
{
  char const *msg;
  msgcache_ent ce;
  if (x->loaded == 1 || x->loaded == -1) return x->loaded > 0;
  x->loaded = -1;
  if (!imap_sess_read(x->i, &msg, &x->len, &x->mtime)) return 0;
  mime_parse(&x->mm, msg, x->len, parts, PARTS_MAX);
  x->map = (char *)msg;
  x->loaded = 1;
  if (!sess.ms.msg[x->i].wsize) sess.ms.msg[x->i].wsize = mime_wire_size(msg, x->len, 0);
  if (!x->hdr_tried && !imap_cache_get(x->i, &ce) &&
      imap_cache_build(x->i, &x->mm, x->mtime, &ce) < 0)
    x->err = -1;
  return 1;
}

/* Enough for the keys on the top-level header, the date and the size: the cached header
 * (loaded 2) when there is one, else the whole message. */
static int load_hdr(sctx *x)
{
  msgcache_ent ce;
  if (x->loaded) return x->loaded > 0;
  x->hdr_tried = 1;
  if (imap_cache_get(x->i, &ce) && (ce.flags & MSGCACHE_F_HDR)) {
    mime_header_only(&x->mm, ce.hdr, ce.hdrlen, parts);
    x->mtime = (time_t)ce.mtime;
    if (!sess.ms.msg[x->i].wsize) sess.ms.msg[x->i].wsize = ce.wsize;
    x->loaded = 2;
    return 1;
  }
  x->hdr_tried = 0;
  return load(x);
}

static void unload(sctx *x)
{
  x->loaded = 0;
  x->map = 0;
}

static long day_of(int64_t t)
{
  return (long)(t >= 0 ? t / 86400 : (t - 86399) / 86400);
}

static int is_set_atom(imap_arg const *a)
{
  return a->type == IMAP_ATOM && a->len &&
         ((a->s[0] >= '0' && a->s[0] <= '9') || a->s[0] == '*');
}

static int key(imap_cmd *c, uint32_t *j, uint32_t end, sctx *x, int *match);

/* Keys until end (a list's contents or the whole program): all must match. */
static int keys(imap_cmd *c, uint32_t j, uint32_t end, sctx *x, int *match)
{
  int all = 1;
  if (j >= end) return 0;
  while (j < end) {
    int m = 1;
    if (!key(c, &j, end, x, &m)) return 0;
    if (!m) {
      all = 0;
      if (!x->check) break;
    }
  }
  *match = all;
  return 1;
}

static int str_arg(imap_cmd *c, uint32_t *j, uint32_t end, imap_arg **a)
{
  if (*j >= end || !imap_is_string(&c->arg[*j])) return 0;
  *a = &c->arg[(*j)++];
  return 1;
}

static int header_match(sctx *x, char const *name, imap_arg const *a)
{
  int r;
  if (!load_hdr(x)) return 0;
  r = mime_search_header(&x->mm, 0, name, strlen(name), a->s, a->len, &tmp);
  if (r < 0) x->err = -1;
  return r > 0;
}

static int key(imap_cmd *c, uint32_t *j, uint32_t end, sctx *x, int *match)
{
  imap_arg *a = &c->arg[*j], *v, *w;
  mailstore_msg const *m = x->check ? 0 : &sess.ms.msg[x->i];
  uint32_t f = m ? m->flags : 0;
  unsigned int kw;
  if (a->type == IMAP_LIST) {
    uint32_t e = a->end;
    int r = keys(c, *j + 1, e, x, match);
    *j = e;
    return r;
  }
  if (a->type != IMAP_ATOM) return 0;
  if (x->check) kwof[*j] = kw_lookup(a);
  kw = kwof[*j];
  (*j)++;
#define FLAGKEY(word, bit, want)         \
  if (kw == K_##word) {                  \
    *match = !!(f & (bit)) == (want);    \
    return 1;                            \
  }
  if (kw == K_ALL) {
    *match = 1;
    return 1;
  }
  FLAGKEY(ANSWERED, MS_ANSWERED, 1)
  FLAGKEY(DELETED, MS_DELETED, 1)
  FLAGKEY(DRAFT, MS_DRAFT, 1)
  FLAGKEY(FLAGGED, MS_FLAGGED, 1)
  FLAGKEY(SEEN, MS_SEEN, 1)
  FLAGKEY(RECENT, MS_RECENT, 1)
  FLAGKEY(UNANSWERED, MS_ANSWERED, 0)
  FLAGKEY(UNDELETED, MS_DELETED, 0)
  FLAGKEY(UNDRAFT, MS_DRAFT, 0)
  FLAGKEY(UNFLAGGED, MS_FLAGGED, 0)
  FLAGKEY(UNSEEN, MS_SEEN, 0)
  FLAGKEY(OLD, MS_RECENT, 0)
  if (kw == K_NEW) {
    *match = (f & MS_RECENT) && !(f & MS_SEEN);
    return 1;
  }
  if (kw == K_NOT) {
    int r;
    if (*j >= end) return 0;
    r = key(c, j, end, x, match);
    *match = !*match;
    return r;
  }
  if (kw == K_OR) {
    int m1 = 0, m2 = 0;
    if (*j >= end || !key(c, j, end, x, &m1)) return 0;
    if (*j >= end || !key(c, j, end, x, &m2)) return 0;
    *match = m1 || m2;
    return 1;
  }
  if (kw == K_KEYWORD || kw == K_UNKEYWORD) {
    int want = kw == K_KEYWORD, k;
    if (!str_arg(c, j, end, &v)) return 0;
    if (x->check) return 1;
    k = mailstore_keyword(&sess.ms, v->s, v->len, 0);
    *match = (k >= 0 && (m->keywords & (1u << k))) == want;
    return 1;
  }
  if (kw == K_LARGER || kw == K_SMALLER) {
    uint64_t n;
    int larger = kw == K_LARGER;
    if (!str_arg(c, j, end, &v) || !imap_number64(v->s, v->len, &n)) return 0;
    if (x->check) return 1;
    if (!sess.ms.msg[x->i].wsize) load_hdr(x); /* sets it */
    *match = larger ? sess.ms.msg[x->i].wsize > n : sess.ms.msg[x->i].wsize < n;
    return 1;
  }
  if (kw == K_BEFORE || kw == K_ON || kw == K_SINCE ||
      kw == K_SENTBEFORE || kw == K_SENTON || kw == K_SENTSINCE) {
    time_t t;
    long d, md;
    int sent = kw == K_SENTBEFORE || kw == K_SENTON || kw == K_SENTSINCE;
    if (!str_arg(c, j, end, &v) || !imap_date(v->s, v->len, &t)) return 0;
    if (x->check) return 1;
    d = day_of((int64_t)t);
    if (!load_hdr(x)) {
      *match = 0;
      return 1;
    }
    if (sent) {
      int64_t st;
      int zone;
      if (mime_date(&x->mm, 0, &st, &zone)) md = day_of(st + (int64_t)zone * 60);
      else md = day_of((int64_t)x->mtime);
    } else
      md = day_of((int64_t)x->mtime);
    if (kw == K_BEFORE || kw == K_SENTBEFORE) *match = md < d;
    else if (kw == K_ON || kw == K_SENTON) *match = md == d;
    else *match = md >= d;
    return 1;
  }
  if (kw == K_FROM || kw == K_TO || kw == K_CC ||
      kw == K_BCC || kw == K_SUBJECT) {
    char name[8];
    size_t k;
    if (!str_arg(c, j, end, &v)) return 0;
    if (x->check) return 1;
    for (k = 0; k < a->len && k < 7; k++) name[k] = a->s[k];
    name[k] = 0;
    *match = header_match(x, name, v);
    return 1;
  }
  if (kw == K_HEADER) {
    char name[256];
    int r;
    if (!str_arg(c, j, end, &w) || !str_arg(c, j, end, &v)) return 0;
    if (x->check) return 1;
    if (w->len >= sizeof name) {
      *match = 0;
      return 1;
    }
    memcpy(name, w->s, w->len);
    name[w->len] = 0;
    if (!load_hdr(x)) {
      *match = 0;
      return 1;
    }
    r = mime_search_header(&x->mm, 0, name, w->len, v->s, v->len, &tmp);
    if (r < 0) x->err = -1;
    *match = r > 0;
    return 1;
  }
  if (kw == K_BODY || kw == K_TEXT) {
    int r;
    if (!str_arg(c, j, end, &v)) return 0;
    if (x->check) return 1;
    if (!load(x)) {
      *match = 0;
      return 1;
    }
    r = mime_search_text(&x->mm, kw == K_TEXT, v->s, v->len, &tmp);
    if (r < 0) x->err = -1;
    *match = r > 0;
    return 1;
  }
  if (kw == K_UID) {
    static imap_range r[IMAP_SEQSET_MAX];
    int nr;
    if (!str_arg(c, j, end, &v)) return 0;
    nr = imap_seqset(v->s, v->len, r, IMAP_SEQSET_MAX);
    if (nr < 0) return 0;
    if (x->check) return 1;
    {
      uint32_t star = 0;
      size_t k = sess.reported < sess.ms.n ? sess.reported : sess.ms.n;
      if (k) star = sess.ms.msg[k - 1].uid;
      *match = imap_seqset_has(r, (size_t)nr, m->uid, star);
    }
    return 1;
  }
  if (kw == K_MODSEQ) {
    uint64_t n;
    /* MODSEQ [entry-name entry-type] n */
    if (*j < end && c->arg[*j].type == IMAP_QUOTED) {
      if (*j + 2 > end) return 0;
      *j += 2;
    }
    if (!str_arg(c, j, end, &v) || !imap_number64(v->s, v->len, &n)) return 0;
    imap_sess_condstore();
    if (x->check) return 1;
    *match = m->modseq >= n;
    if (*match && m->modseq > x->maxmodseq) x->maxmodseq = m->modseq;
    return 1;
  }
  if (is_set_atom(a)) {
    static imap_range r[IMAP_SEQSET_MAX];
    int nr = imap_seqset(a->s, a->len, r, IMAP_SEQSET_MAX);
    size_t k = sess.reported < sess.ms.n ? sess.reported : sess.ms.n;
    if (nr < 0) return 0;
    if (x->check) return 1;
    *match = imap_seqset_has(r, (size_t)nr, (uint32_t)(x->i + 1), (uint32_t)k);
    return 1;
  }
  return 0;
}

void imap_cmd_search(imap_cmd *c, uint32_t first)
{
  uint32_t j = first;
  int esearch = 0, rmin = 0, rmax = 0, rcount = 0, rall = 0, rsave = 0, modseqkey = 0;
  int quiet = 0;
  sctx x;
  size_t k, n, nmatch = 0, *hits = 0;
  uint64_t maxmodseq = 0;
  int ok;
  memset(&x, 0, sizeof x);
  if (j < c->nargs && imap_arg_is(&c->arg[j], "RETURN")) {
    uint32_t e, r;
    j++;
    if (j >= c->nargs || c->arg[j].type != IMAP_LIST) {
      imap_bad("Error in IMAP command SEARCH: Invalid RETURN");
      return;
    }
    e = c->arg[j].end;
    for (r = j + 1; r < e; r++) {
      if (imap_arg_is(&c->arg[r], "MIN")) rmin = 1;
      else if (imap_arg_is(&c->arg[r], "MAX")) rmax = 1;
      else if (imap_arg_is(&c->arg[r], "COUNT")) rcount = 1;
      else if (imap_arg_is(&c->arg[r], "ALL")) rall = 1;
      else if (imap_arg_is(&c->arg[r], "SAVE")) rsave = 1;
      else {
        imap_bad("Error in IMAP command SEARCH: Unknown RETURN option");
        return;
      }
    }
    if (!rmin && !rmax && !rcount && !rsave) rall = 1;
    if (rsave && !rmin && !rmax && !rcount && !rall) esearch = 0; /* SAVE alone: no reply */
    else esearch = 1;
    j = e;
  }
  if (j < c->nargs && imap_arg_is(&c->arg[j], "CHARSET")) {
    imap_arg const *cs;
    if (j + 1 >= c->nargs || !imap_is_string(&c->arg[j + 1])) {
      imap_bad("Error in IMAP command SEARCH: Missing charset");
      return;
    }
    cs = &c->arg[j + 1];
    if (!imap_arg_is(cs, "UTF-8") && !imap_arg_is(cs, "US-ASCII")) {
      imap_no("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
      return;
    }
    j += 2;
  }
  x.check = 1;
  if (!keys(c, j, c->nargs, &x, &ok)) {
    imap_bad("Error in IMAP command SEARCH: Invalid search program");
    return;
  }
  for (k = j; k < c->nargs; k++)
    if (imap_arg_is(&c->arg[k], "MODSEQ")) modseqkey = 1;
  imap_sess_update(1, 0);
  x.check = 0;
  n = sess.reported < sess.ms.n ? sess.reported : sess.ms.n;
  hits = malloc((n ? n : 1) * sizeof *hits);
  if (!hits) {
    imap_no("[SERVERBUG] out of memory");
    return;
  }
  for (k = 0; k < n; k++) {
    int m = 0;
    if (sess.ms.msg[k].flags & MS_GONE) continue;
    x.i = k;
    x.loaded = 0;
    x.hdr_tried = 0;
    x.maxmodseq = 0;
    keys(c, j, c->nargs, &x, &m);
    unload(&x);
    if (m) {
      hits[nmatch++] = k;
      if (sess.ms.msg[k].modseq > maxmodseq) maxmodseq = sess.ms.msg[k].modseq;
    }
  }
  if (tmp.a > 1 << 20) stralloc_free(&tmp);
  if (msgcache_done(&sess.cache, sess.ms.n) < 0) strerr_warnwu1sys("write the SEARCH cache");
  if (rsave) {
    /* SEARCHRES: keep the result as UIDs (they stay right across expunges) */
    uint32_t *sv = malloc((nmatch ? nmatch : 1) * sizeof *sv);
    if (sv) {
      for (k = 0; k < nmatch; k++) sv[k] = sess.ms.msg[hits[k]].uid;
      free(sess.saved);
      sess.saved = sv;
      sess.nsaved = nmatch;
    }
    if (!esearch) quiet = 1;
  }
  if (!quiet && !esearch && sess.rev2) {
    esearch = 1; /* IMAP4rev2 has no SEARCH response */
    rall = 1;
  }
  if (quiet) {
  } else if (esearch) {
    imap_out("* ESEARCH (TAG ");
    imap_outstr(sess.tag, strlen(sess.tag));
    imap_out(")");
    if (sess.is_uid) imap_out(" UID");
    if (nmatch) {
#define VAL(k) (sess.is_uid ? (uint64_t)sess.ms.msg[hits[k]].uid : (uint64_t)hits[k] + 1)
      if (rmin) {
        imap_out(" MIN ");
        imap_outu(VAL(0));
      }
      if (rmax) {
        imap_out(" MAX ");
        imap_outu(VAL(nmatch - 1));
      }
      if (rall) {
        size_t a = 0;
        imap_out(" ALL ");
        while (a < nmatch) {
          size_t b = a;
          while (b + 1 < nmatch && VAL(b + 1) == VAL(b) + 1) b++;
          if (a) imap_out(",");
          imap_outu(VAL(a));
          if (b > a) {
            imap_out(":");
            imap_outu(VAL(b));
          }
          a = b + 1;
        }
      }
    }
    if (rcount) {
      imap_out(" COUNT ");
      imap_outu(nmatch);
    }
    if (modseqkey && nmatch) {
      /* the highest modseq of the messages returned: with MIN/MAX alone, just those */
      if (!rall && !rcount) {
        maxmodseq = 0;
        if (rmin) maxmodseq = sess.ms.msg[hits[0]].modseq;
        if (rmax && sess.ms.msg[hits[nmatch - 1]].modseq > maxmodseq)
          maxmodseq = sess.ms.msg[hits[nmatch - 1]].modseq;
      }
      imap_out(" MODSEQ ");
      imap_outu(maxmodseq);
    }
    imap_out("\r\n");
  } else {
    imap_out("* SEARCH");
    for (k = 0; k < nmatch; k++) {
      imap_out(" ");
      imap_outu(VAL(k));
    }
    if (modseqkey && nmatch) {
      imap_out(" (MODSEQ ");
      imap_outu(maxmodseq);
      imap_out(")");
    }
    imap_out("\r\n");
  }
  free(hits);
  imap_sess_update(0, 0);
  imap_ok("Search completed.");
}
