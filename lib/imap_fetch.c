/* imap_fetch: FETCH and UID FETCH (RFC 3501 6.4.5, BINARY of RFC 3516, MODSEQ/CHANGEDSINCE of
 * RFC 7162). Message content comes from lib/mime (the one MIME parser); flags from the
 * mailstore. Messages read without .PEEK get \Seen first, in one store for the whole set. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <skalibs/djbunix.h>
#include <skalibs/strerr.h>
#include "imap_sess.h"
#include "mime.h"

#define F_UID 1
#define F_FLAGS 2
#define F_INTERNALDATE 3
#define F_SIZE 4
#define F_ENVELOPE 5
#define F_BODY 6
#define F_BODYSTRUCTURE 7
#define F_RFC822 8
#define F_RFC822_HEADER 9
#define F_RFC822_TEXT 10
#define F_SECTION 11
#define F_BINARY 12
#define F_BINARY_SIZE 13
#define F_MODSEQ 14

#define FITEMS_MAX 64
#define PARTS_MAX 256

typedef struct fitem_s fitem;
struct fitem_s {
  int kind;
  int peek;
  int partial;
  size_t origin, count;
  char const *sec;  /* the section text as sent, for the reply */
  size_t seclen;
  mime_section section;
};

static fitem items[FITEMS_MAX];
static unsigned int nitems;
static mime_part parts[PARTS_MAX];

static int add_simple(int kind)
{
  unsigned int i;
  for (i = 0; i < nitems; i++)
    if (items[i].kind == kind && kind != F_SECTION && kind != F_BINARY && kind != F_BINARY_SIZE)
      return 1;
  if (nitems >= FITEMS_MAX) return 0;
  memset(&items[nitems], 0, sizeof items[nitems]);
  items[nitems++].kind = kind;
  return 1;
}

/* BODY[...]<o.c>, BODY.PEEK[...], BINARY[...], BINARY.PEEK[...], BINARY.SIZE[...] */
static int parse_section(char const *s, size_t len)
{
  fitem *f;
  size_t lb, rb, i;
  int kind, peek = 0;
  char const *open = memchr(s, '[', len);
  if (!open) return 0;
  lb = (size_t)(open - s);
  if (imap_ieq(s, lb, "BODY")) kind = F_SECTION;
  else if (imap_ieq(s, lb, "BODY.PEEK")) kind = F_SECTION, peek = 1;
  else if (imap_ieq(s, lb, "BINARY")) kind = F_BINARY;
  else if (imap_ieq(s, lb, "BINARY.PEEK")) kind = F_BINARY, peek = 1;
  else if (imap_ieq(s, lb, "BINARY.SIZE")) kind = F_BINARY_SIZE, peek = 1;
  else return 0;
  rb = len;
  for (i = len; i > lb; i--)
    if (s[i - 1] == ']') {
      rb = i - 1;
      break;
    }
  if (rb == len) return 0;
  if (nitems >= FITEMS_MAX) return 0;
  f = &items[nitems];
  memset(f, 0, sizeof *f);
  f->kind = kind;
  f->peek = peek;
  f->sec = s + lb + 1;
  f->seclen = rb - lb - 1;
  if (!mime_section_parse(f->sec, f->seclen, &f->section)) return 0;
  if (kind != F_SECTION && f->section.what != MIME_SEC_ALL) return 0;
  i = rb + 1;
  if (i < len) {
    char const *dot, *gt;
    uint64_t o, c;
    if (s[i] != '<' || kind == F_BINARY_SIZE) return 0;
    dot = memchr(s + i, '.', len - i);
    gt = s + len - 1;
    if (*gt != '>' || !dot || dot > gt) return 0;
    if (!imap_number64(s + i + 1, (size_t)(dot - s - i - 1), &o) ||
        !imap_number64(dot + 1, (size_t)(gt - dot - 1), &c) || !c)
      return 0;
    if (o > SIZE_MAX / 2 || c > SIZE_MAX / 2) return 0;
    f->partial = 1;
    f->origin = (size_t)o;
    f->count = (size_t)c;
  }
  nitems++;
  return 1;
}

static int parse_item(imap_arg const *a)
{
  char const *s = a->s;
  size_t len = a->len;
  if (a->type != IMAP_ATOM) return 0;
  if (imap_ieq(s, len, "UID")) return add_simple(F_UID);
  if (imap_ieq(s, len, "FLAGS")) return add_simple(F_FLAGS);
  if (imap_ieq(s, len, "INTERNALDATE")) return add_simple(F_INTERNALDATE);
  if (imap_ieq(s, len, "RFC822.SIZE")) return add_simple(F_SIZE);
  if (imap_ieq(s, len, "ENVELOPE")) return add_simple(F_ENVELOPE);
  if (imap_ieq(s, len, "BODY")) return add_simple(F_BODY);
  if (imap_ieq(s, len, "BODYSTRUCTURE")) return add_simple(F_BODYSTRUCTURE);
  if (imap_ieq(s, len, "RFC822")) return add_simple(F_RFC822);
  if (imap_ieq(s, len, "RFC822.HEADER")) return add_simple(F_RFC822_HEADER);
  if (imap_ieq(s, len, "RFC822.TEXT")) return add_simple(F_RFC822_TEXT);
  if (imap_ieq(s, len, "MODSEQ")) {
    imap_sess_condstore();
    return add_simple(F_MODSEQ);
  }
  return parse_section(s, len);
}

static int macro(imap_arg const *a)
{
  if (a->type != IMAP_ATOM) return 0;
  if (imap_arg_is(a, "ALL"))
    return add_simple(F_FLAGS) && add_simple(F_INTERNALDATE) && add_simple(F_SIZE) &&
           add_simple(F_ENVELOPE);
  if (imap_arg_is(a, "FAST"))
    return add_simple(F_FLAGS) && add_simple(F_INTERNALDATE) && add_simple(F_SIZE);
  if (imap_arg_is(a, "FULL"))
    return add_simple(F_FLAGS) && add_simple(F_INTERNALDATE) && add_simple(F_SIZE) &&
           add_simple(F_ENVELOPE) && add_simple(F_BODY);
  return -1;
}

static int sets_seen(fitem const *f)
{
  return (f->kind == F_SECTION && !f->peek) || f->kind == F_RFC822 ||
         f->kind == F_RFC822_TEXT || (f->kind == F_BINARY && !f->peek);
}

static int needs_content(fitem const *f)
{
  return f->kind != F_UID && f->kind != F_FLAGS && f->kind != F_MODSEQ;
}

/* BODY[], BODY.PEEK[] and RFC822: the whole message, as stored */
static int whole(fitem const *f)
{
  return f->kind == F_RFC822 ||
         (f->kind == F_SECTION && f->section.what == MIME_SEC_ALL && !f->section.nnum);
}

/* what the cache holds: a FETCH of only these reads no message file once it is cached */
static int cacheable(fitem const *f)
{
  return f->kind == F_SIZE || f->kind == F_ENVELOPE || f->kind == F_BODY ||
         f->kind == F_BODYSTRUCTURE || f->kind == F_INTERNALDATE || !needs_content(f);
}

static stralloc c_env = STRALLOC_ZERO, c_bs = STRALLOC_ZERO, c_body = STRALLOC_ZERO;

int imap_cache_build(size_t i, mime_msg const *mm, time_t mtime, msgcache_ent *e)
{
  mailstore_msg const *m = &sess.ms.msg[i];
  c_env.len = c_bs.len = c_body.len = 0;
  if (!mime_envelope(&c_env, mm, 0) || !mime_bodystructure(&c_bs, mm, 0, 1) ||
      !mime_bodystructure(&c_body, mm, 0, 0))
    return -1;
  e->wsize = m->wsize ? m->wsize : mime_wire_size(mm->s, mm->len, 0);
  e->mtime = (int64_t)mtime;
  e->flags = 0;
  e->env = c_env.s;
  e->envlen = c_env.len;
  e->bs = c_bs.s;
  e->bslen = c_bs.len;
  e->body = c_body.s;
  e->bodylen = c_body.len;
  e->hdr = "";
  e->hdrlen = 0;
  if (mm->n && mm->part[0].hdr_len <= MSGCACHE_HDR_MAX) {
    e->hdr = mm->s + mm->part[0].hdr_off;
    e->hdrlen = mm->part[0].hdr_len;
    e->flags |= MSGCACHE_F_HDR;
  }
  if (msgcache_put(&sess.cache, m->uid, mailstore_name(&sess.ms, i), e) < 0) return -1;
  return 1;
}

int imap_cache_get(size_t i, msgcache_ent *e)
{
  mailstore_msg const *m = &sess.ms.msg[i];
  return msgcache_get(&sess.cache, m->uid, mailstore_name(&sess.ms, i), e) > 0;
}

static void out_section_name(fitem const *f)
{
  size_t k;
  imap_out(f->kind == F_SECTION ? "BODY[" : f->kind == F_BINARY ? "BINARY[" : "BINARY.SIZE[");
  /* the section as the client wrote it, upper-cased as Dovecot echoes it (outside quotes) */
  for (k = 0; k < f->seclen; k++) {
    char ch = f->sec[k];
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
    imap_outn(&ch, 1);
  }
  imap_out("]");
  if (f->partial) {
    imap_out("<");
    imap_outu(f->origin);
    imap_out(">");
  }
}

/* One message's FETCH response. Returns 0 when its content could not be read (gone). */
static int fetch_one(size_t i, int addflags)
{
  mailstore_msg *m = &sess.ms.msg[i];
  stralloc *sa = &sess.scratch;
  mime_msg mm;
  msgcache_ent ce;
  time_t mtime = 0;
  int content = 0, first = 1, ok = 1, all_cacheable = 1, cached = 0, want_ent = 0, parsed = 0;
  char const *wmsg = 0;
  size_t wlen = 0;
  unsigned int k;
  for (k = 0; k < nitems; k++) {
    fitem const *f = &items[k];
    if (f->kind == F_ENVELOPE || f->kind == F_BODY || f->kind == F_BODYSTRUCTURE) want_ent = 1;
    if (!cacheable(f)) all_cacheable = 0;
    if (needs_content(f) && !(f->kind == F_SIZE && m->wsize)) content = 1;
  }
  if (content && all_cacheable && imap_cache_get(i, &ce)) {
    cached = 1;
    content = 0;
    mtime = (time_t)ce.mtime;
    if (!m->wsize) m->wsize = ce.wsize;
  }
  if (content) {
    char const *msg;
    size_t len;
    if (!imap_sess_read(i, &msg, &len, &mtime)) return 0;
    m = &sess.ms.msg[i];
    wmsg = msg;
    wlen = len;
    /* the whole message (BODY[], RFC822) needs no structure: not parsed */
    for (k = 0; k < nitems; k++)
      if (needs_content(&items[k]) && !whole(&items[k]) && items[k].kind != F_SIZE &&
          items[k].kind != F_INTERNALDATE)
        parsed = 1;
    if (parsed || want_ent) mime_parse(&mm, msg, len, parts, PARTS_MAX);
    parsed = parsed || want_ent;
    if (!m->wsize) m->wsize = mime_wire_size(msg, len, 0);
    if (want_ent && !imap_cache_get(i, &ce)) {
      int r = imap_cache_build(i, &mm, mtime, &ce);
      if (r < 0) ok = -1;
      cached = r > 0;
    } else if (want_ent)
      cached = 1;
  }
  imap_out("* ");
  imap_outu(i + 1);
  imap_out(" FETCH (");
  if (sess.is_uid) {
    int has = 0;
    for (k = 0; k < nitems; k++)
      if (items[k].kind == F_UID) has = 1;
    if (!has) {
      imap_out("UID ");
      imap_outu(m->uid);
      first = 0;
    }
  }
  for (k = 0; k < nitems; k++) {
    fitem const *f = &items[k];
    if (!first) imap_out(" ");
    first = 0;
    sa->len = 0;
    switch (f->kind) {
      case F_UID:
        imap_out("UID ");
        imap_outu(m->uid);
        break;
      case F_FLAGS:
        imap_out("FLAGS ");
        imap_outflags(i);
        break;
      case F_MODSEQ:
        imap_out("MODSEQ (");
        imap_outu(m->modseq);
        imap_out(")");
        break;
      case F_INTERNALDATE: {
        char d[IMAP_DATETIME_LEN];
        imap_out("INTERNALDATE \"");
        imap_outn(d, imap_datetime_fmt(d, mtime));
        imap_out("\"");
        break;
      }
      case F_SIZE:
        imap_out("RFC822.SIZE ");
        imap_outu(m->wsize);
        break;
      case F_ENVELOPE:
        imap_out("ENVELOPE ");
        if (cached) imap_outn(ce.env, ce.envlen);
        else {
          if (!mime_envelope(sa, &mm, 0)) ok = -1;
          imap_outn(sa->s, sa->len);
        }
        break;
      case F_BODY:
      case F_BODYSTRUCTURE:
        imap_out(f->kind == F_BODY ? "BODY " : "BODYSTRUCTURE ");
        if (cached && f->kind == F_BODY) imap_outn(ce.body, ce.bodylen);
        else if (cached) imap_outn(ce.bs, ce.bslen);
        else {
          if (!mime_bodystructure(sa, &mm, 0, f->kind == F_BODYSTRUCTURE)) ok = -1;
          imap_outn(sa->s, sa->len);
        }
        break;
      case F_RFC822:
      case F_RFC822_HEADER:
      case F_RFC822_TEXT: {
        mime_section sec;
        memset(&sec, 0, sizeof sec);
        sec.what = f->kind == F_RFC822 ? MIME_SEC_ALL
                   : f->kind == F_RFC822_HEADER ? MIME_SEC_HEADER
                                                : MIME_SEC_TEXT;
        if (!parsed && f->kind == F_RFC822) {
          if (!mime_wire_cat(sa, wmsg, wlen, 0, 0, SIZE_MAX)) ok = -1;
        } else if (!mime_section_cat(sa, &mm, &sec, 0, SIZE_MAX))
          ok = -1;
        imap_out(f->kind == F_RFC822 ? "RFC822 " : f->kind == F_RFC822_HEADER ? "RFC822.HEADER "
                                                                              : "RFC822.TEXT ");
        imap_outlit(sa->s, sa->len, 0);
        break;
      }
      case F_SECTION:
        if (!parsed) {
          if (!mime_wire_cat(sa, wmsg, wlen, 0, f->partial ? f->origin : 0,
                             f->partial ? f->count : SIZE_MAX))
            ok = -1;
        } else if (!mime_section_cat(sa, &mm, &f->section, f->partial ? f->origin : 0,
                                     f->partial ? f->count : SIZE_MAX))
          ok = -1;
        out_section_name(f);
        imap_out(" ");
        imap_outlit(sa->s, sa->len, 0);
        break;
      case F_BINARY:
      case F_BINARY_SIZE: {
        unsigned int p = mime_section_part(&mm, &f->section);
        int r;
        size_t bs = 0;
        if (!f->section.nnum) {
          /* BINARY[]: the whole message as it is, sent as literal8 */
          mime_section all;
          memset(&all, 0, sizeof all);
          all.what = MIME_SEC_ALL;
          r = mime_section_cat(sa, &mm, &all, 0, SIZE_MAX) ? 2 : 0;
          bs = sa->len;
        } else if (p == MIME_NONE) {
          r = 1; /* no such part: an empty string, as Dovecot sends */
        } else if (f->kind == F_BINARY) {
          r = mime_binary_cat(sa, &mm, p);
        } else {
          r = mime_binary_size(&mm, p, &bs);
        }
        if (r == 0) ok = -1;
        out_section_name(f);
        imap_out(" ");
        if (r < 0) {
          imap_out(f->kind == F_BINARY ? "NIL" : "0");
          if (ok > 0) ok = r == -1 ? -2 : -4;
        } else if (f->kind == F_BINARY_SIZE) {
          imap_outu(bs);
        } else {
          size_t from = f->partial ? f->origin : 0, cnt;
          if (from > sa->len) from = sa->len;
          cnt = sa->len - from;
          if (f->partial && cnt > f->count) cnt = f->count;
          imap_outlit(sa->s + from, cnt, r == 2);
        }
        break;
      }
    }
  }
  if (addflags) {
    int has = 0;
    for (k = 0; k < nitems; k++)
      if (items[k].kind == F_FLAGS) has = 1;
    if (!has) {
      imap_out(first ? "FLAGS " : " FLAGS ");
      imap_outflags(i);
    }
  }
  if (sess.condstore) {
    int has = 0;
    for (k = 0; k < nitems; k++)
      if (items[k].kind == F_MODSEQ) has = 1;
    if (!has) {
      imap_out(" MODSEQ (");
      imap_outu(m->modseq);
      imap_out(")");
    }
  }
  imap_out(")\r\n");
  m->flags &= ~MS_CHANGED;
  return ok;
}

void imap_cmd_fetch(imap_cmd *c, uint32_t first)
{
  size_t *idx = 0, *seen = 0, nseen = 0, k, seenat = 0;
  long n;
  uint32_t at, end;
  uint64_t changedsince = 0;
  int gone = 0, unknown_cte = 0, parse_err = 0, wantseen = 0, vanished = 0;
  unsigned int i;
  nitems = 0;
  if (first + 1 >= c->nargs || c->arg[first].type != IMAP_ATOM) {
    imap_bad("Error in IMAP command FETCH: Invalid arguments");
    return;
  }
  at = first + 1;
  if (c->arg[at].type == IMAP_LIST) {
    end = c->arg[at].end;
    if (end == at + 1) {
      imap_bad("Error in IMAP command FETCH: Empty list");
      return;
    }
    for (uint32_t j = at + 1; j < end; j = imap_next(c, j))
      if (!parse_item(&c->arg[j])) {
        imap_bad("Error in IMAP command FETCH: Invalid fetch item");
        return;
      }
  } else {
    int r = macro(&c->arg[at]);
    if (r == 0 || (r < 0 && !parse_item(&c->arg[at]))) {
      imap_bad("Error in IMAP command FETCH: Invalid fetch item");
      return;
    }
    end = at + 1;
  }
  /* modifiers: (CHANGEDSINCE n) */
  if (end < c->nargs) {
    uint32_t j;
    if (c->arg[end].type != IMAP_LIST || c->arg[end].end != c->nargs) {
      imap_bad("Error in IMAP command FETCH: Invalid arguments");
      return;
    }
    for (j = end + 1; j < c->nargs; j += 2) {
      if (imap_arg_is(&c->arg[j], "CHANGEDSINCE") && j + 1 < c->nargs &&
          c->arg[j + 1].type == IMAP_ATOM &&
          imap_number64(c->arg[j + 1].s, c->arg[j + 1].len, &changedsince)) {
        imap_sess_condstore();
        add_simple(F_MODSEQ);
      } else if (imap_arg_is(&c->arg[j], "VANISHED") && sess.qresync && sess.is_uid) {
        vanished = 1;
        j--; /* no value */
      } else {
        imap_bad("Error in IMAP command FETCH: Invalid modifier");
        return;
      }
    }
  }
  if (vanished && !changedsince) {
    imap_bad("Error in IMAP command FETCH: VANISHED needs CHANGEDSINCE");
    return;
  }
  imap_sess_update(1, 0);
  n = imap_sess_set(c->arg[first].s, c->arg[first].len, sess.is_uid, &idx);
  if (n < 0) return;
  if (vanished) {
    static imap_range r[IMAP_SEQSET_MAX];
    int nr = imap_seqset(c->arg[first].s, c->arg[first].len, r, IMAP_SEQSET_MAX);
    if (nr > 0) imap_sess_vanished(changedsince, r, (size_t)nr, 1);
  }
  for (i = 0; i < nitems; i++)
    if (sets_seen(&items[i])) wantseen = 1;
  if (wantseen && !sess.readonly && n) {
    seen = malloc((size_t)n * sizeof *seen);
    if (seen) {
      for (k = 0; k < (size_t)n; k++) {
        mailstore_msg const *m = &sess.ms.msg[idx[k]];
        if (!(m->flags & (MS_SEEN | MS_GONE))) seen[nseen++] = idx[k];
      }
      if (nseen && mailstore_store(&sess.ms, seen, nseen, MS_SEEN, 0, 0, 0, 0, 0) < 0)
        strerr_warnwu1sys("set \\Seen");
    }
  }
  for (k = 0; k < (size_t)n; k++) {
    size_t x = idx[k];
    int addflags = 0, r;
    mailstore_msg const *m = &sess.ms.msg[x];
    if (changedsince && m->modseq <= changedsince) continue;
    if (m->flags & MS_GONE) {
      gone = 1;
      continue;
    }
    if (seen && nseen) {
      /* seen[] is ascending like idx[]: a walking pointer instead of a search per message */
      while (seenat < nseen && seen[seenat] < x) seenat++;
      if (seenat < nseen && seen[seenat] == x) addflags = 1;
    }
    r = fetch_one(x, addflags);
    if (!r) gone = 1;
    if (r == -2) unknown_cte = 1;
    if (r == -4) parse_err = 1;
    if (r == -1) strerr_warnwu1x("build a FETCH response: out of memory");
  }
  free(idx);
  free(seen);
  if (msgcache_done(&sess.cache, sess.ms.n) < 0) strerr_warnwu1sys("write the FETCH cache");
  if (sess.scratch.a > 1 << 20) stralloc_free(&sess.scratch);
  if (c_env.a > 1 << 16) stralloc_free(&c_env);
  imap_sess_update(0, 0);
  if (unknown_cte) imap_no("[UNKNOWN-CTE] Unknown Content-Transfer-Encoding");
  else if (parse_err) imap_no("[PARSE] Invalid data in the encoded part");
  else if (gone) imap_no("[EXPUNGEISSUED] Some of the requested messages no longer exist");
  else imap_ok("Fetch completed.");
}
