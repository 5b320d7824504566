/* mime: see mime.h. The structure rules follow Dovecot 2.3's message parser so that IMAP
 * replies agree with it; tests/test_mime_dovecot.py compares the two on a corpus. */
#include <errno.h>
#include <iconv.h>
#include <stddef.h>
#include <string.h>
#include <skalibs/stralloc.h>
#include "mime.h"

typedef unsigned char uchar;

/* ---- character classes (RFC 5322 atext, RFC 2045 token) ---- */

/* 1: atext, 2: alpha/digit/8-bit, 4: atext that is a MIME tspecial ('/', '=', '?') */
static uchar const atext[256] = {
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 4,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 4, 0, 4,
  0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 1, 1,
  1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 0,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2
};
#define IS_ATEXT(c) (atext[(uchar)(c)] != 0)
#define IS_TOKEN(c) ((atext[(uchar)(c)] & 3) != 0 || (c) == '.')

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int memeqci(char const *a, char const *b, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    if (lower((uchar)a[i]) != lower((uchar)b[i])) return 0;
  return 1;
}

static int eqci(char const *a, size_t alen, char const *b)
{
  size_t i;
  for (i = 0; i < alen; i++)
    if (!b[i] || lower((uchar)a[i]) != lower((uchar)b[i])) return 0;
  return !b[alen];
}

static int prefixci(char const *a, size_t alen, char const *b)
{
  size_t i;
  for (i = 0; b[i]; i++)
    if (i >= alen || lower((uchar)a[i]) != lower((uchar)b[i])) return 0;
  return 1;
}

/* ---- wire form ---- */

size_t mime_wire_size(char const *s, size_t len, char prev)
{
  size_t n = len, i = 0;
  while (i < len) {
    char const *p = memchr(s + i, '\n', len - i);
    if (!p) break;
    i = p - s;
    if ((i ? s[i - 1] : prev) != '\r') n++;
    i++;
  }
  return n;
}

/* LFs in s[0..len) and the wire size (bare LFs counted twice), in one pass */
static size_t count_lf_wire(char const *s, size_t len, char prev, size_t *wsize)
{
  size_t n = 0, bare = 0, i = 0;
  while (i < len) {
    char const *p = memchr(s + i, '\n', len - i);
    if (!p) break;
    i = p - s;
    n++;
    if ((i ? s[i - 1] : prev) != '\r') bare++;
    i++;
  }
  *wsize = len + bare;
  return n;
}


static int wire_cat_x(stralloc *sa, char const *s, size_t len, char prev, size_t origin,
                      size_t count, int nulmap)
{
  size_t i = 0, w = 0, end = count > SIZE_MAX - origin ? SIZE_MAX : origin + count;
  size_t room = len > (SIZE_MAX - 16) / 2 ? SIZE_MAX - 16 : 2 * len; /* each LF may gain a CR */
  char *o;
  /* NULs are rare: one look over the whole text, not one per line */
  if (nulmap && !memchr(s, 0, len)) nulmap = 0;
  if (room > count) room = count;
  /* room once for the worst case, then plain copies: a FETCH BODY[] of a folder runs here
   * for every line of every message */
  if (!stralloc_readyplus(sa, room + 16)) return 0;
  o = sa->s + sa->len;
  while (i < len && w < end) {
    char const *p = memchr(s + i, '\n', len - i);
    size_t seg = p ? (size_t)(p - s) - i : len - i; /* bytes before the LF */
    /* copy s[i..i+seg) */
    if (seg) {
      size_t a = w, b = w + seg;
      if (b > origin && a < end) {
        size_t from = a < origin ? origin - a : 0, to = b > end ? end - a : seg, k;
        memcpy(o, s + i + from, to - from);
        if (nulmap && memchr(o, 0, to - from))
          for (k = 0; k < to - from; k++)
            if (!o[k]) o[k] = (char)0x80; /* NUL is sent as 0x80, as Dovecot does */
        o += to - from;
      }
      w += seg;
      i += seg;
    }
    if (!p) break;
    {
      int bare = (i ? s[i - 1] : prev) != '\r';
      if (bare) {
        if (w >= origin && w < end) *o++ = '\r';
        w++;
      }
      if (w >= origin && w < end) *o++ = '\n';
      w++;
      i++;
    }
  }
  sa->len = (size_t)(o - sa->s);
  return 1;
}

int mime_wire_cat(stralloc *sa, char const *s, size_t len, char prev, size_t origin,
                  size_t count)
{
  return wire_cat_x(sa, s, len, prev, origin, count, 1);
}

/* ---- the structure parser ---- */

typedef struct bnd_s bnd;
struct bnd_s {
  char const *b;
  size_t len;
  unsigned int part;
};


static size_t line_end(char const *s, size_t len, size_t pos)
{
  char const *p = memchr(s + pos, '\n', len - pos);
  return p ? (size_t)(p - s) + 1 : len;
}

/* header-derived facts a part needs for structure */
typedef struct hinfo_s hinfo;
struct hinfo_s {
  int ismime;
  char const *ct; /* first Content-Type value */
  size_t ctlen;
};

/* RFC 822 tokenizer over a value */
typedef struct rp_s rp;
struct rp_s {
  char const *p, *e;
  stralloc *comment; /* last comment, when wanted */
};

static int rp_skip_comment(rp *r)
{
  int level = 1;
  char const *start;
  r->p++;
  start = r->p;
  if (r->comment) r->comment->len = 0;
  for (; r->p < r->e; r->p++) {
    if (*r->p == '(') level++;
    else if (*r->p == ')') {
      if (!--level) {
        if (r->comment && !stralloc_catb(r->comment, start, r->p - start)) return -1;
        r->p++;
        return r->p != r->e;
      }
    } else if (*r->p == '\\') {
      if (r->comment && !stralloc_catb(r->comment, start, r->p - start)) return -1;
      start = r->p + 1;
      r->p++;
      if (r->p == r->e) return -1;
    }
  }
  return -1;
}

/* 1: more data, 0: end, -1: broken comment */
static int rp_lwsp(rp *r)
{
  while (r->p < r->e) {
    char ch = *r->p;
    if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') { r->p++; continue; }
    if (ch != '(') break;
    if (rp_skip_comment(r) < 0) return -1;
  }
  return r->p != r->e;
}

/* MIME token appended to sa; returns rp_lwsp's value after it, 0 at end */
static int rp_token(rp *r, stralloc *sa)
{
  char const *start = r->p;
  while (r->p < r->e && IS_TOKEN(*r->p)) r->p++;
  if (!stralloc_catb(sa, start, r->p - start)) return -2;
  if (r->p == r->e) return 0;
  return rp_lwsp(r);
}

static int rp_quoted(rp *r, stralloc *sa)
{
  char const *start;
  r->p++;
  for (start = r->p; r->p < r->e; r->p++) {
    if (*r->p == '"') {
      if (!stralloc_catb(sa, start, r->p - start)) return -2;
      r->p++;
      return rp_lwsp(r);
    } else if (*r->p == '\n') {
      size_t l = r->p - start;
      if (l && start[l - 1] == '\r') l--;
      if (!stralloc_catb(sa, start, l)) return -2;
      start = r->p + 1;
    } else if (*r->p == '\\') {
      r->p++;
      if (r->p == r->e) return -1;
      if (!stralloc_catb(sa, start, r->p - start - 1)) return -2;
      start = r->p;
    }
  }
  return -1;
}

static int rp_atom_or_dot(rp *r, stralloc *sa)
{
  char const *start = r->p;
  while (r->p < r->e && (IS_ATEXT(*r->p) || *r->p == '.')) r->p++;
  if (!stralloc_catb(sa, start, r->p - start)) return -2;
  if (r->p == r->e) return 0;
  return rp_lwsp(r);
}

static int rp_dot_atom(rp *r, stralloc *sa)
{
  char const *start;
  int ret;
  if (r->p == r->e || !IS_ATEXT(*r->p)) return -1;
  for (start = r->p++; r->p < r->e;) {
    if (IS_ATEXT(*r->p)) { r->p++; continue; }
    if (!stralloc_catb(sa, start, r->p - start)) return -2;
    if ((ret = rp_lwsp(r)) <= 0) return ret;
    if (*r->p != '.') return 1;
    r->p++;
    if (!stralloc_catb(sa, ".", 1)) return -2;
    if ((ret = rp_lwsp(r)) <= 0) return ret;
    start = r->p;
  }
  if (!stralloc_catb(sa, start, r->p - start)) return -2;
  return 0;
}

static int rp_phrase(rp *r, stralloc *sa)
{
  int ret;
  if (r->p == r->e) return 0;
  if (*r->p == '.') return -1;
  for (;;) {
    ret = *r->p == '"' ? rp_quoted(r, sa) : rp_atom_or_dot(r, sa);
    if (ret <= 0) return ret;
    if (!IS_ATEXT(*r->p) && *r->p != '"' && *r->p != '.') break;
    if (!stralloc_catb(sa, " ", 1)) return -2;
  }
  return rp_lwsp(r);
}

static int rp_domain_literal(rp *r, stralloc *sa)
{
  char const *start = r->p;
  for (; r->p < r->e; r->p++) {
    if (*r->p == '\\') {
      r->p++;
      if (r->p == r->e) break;
    } else if (*r->p == ']') {
      r->p++;
      if (!stralloc_catb(sa, start, r->p - start)) return -2;
      return rp_lwsp(r);
    }
  }
  return -1;
}

static int rp_domain(rp *r, stralloc *sa)
{
  r->p++; /* '@' */
  if (rp_lwsp(r) <= 0) return -1;
  if (*r->p == '[') return rp_domain_literal(r, sa);
  return rp_dot_atom(r, sa);
}

/* Content-Type "type/subtype" into sa (with the '/'); -1 broken (params not to be read) */
static int rp_content_type(rp *r, stralloc *sa)
{
  size_t st = sa->len, sub;
  int ret;
  if (rp_lwsp(r) <= 0) return -1;
  if ((ret = rp_token(r, sa)) == -2) return -2;
  if (ret <= 0) return -1;           /* "text" alone is kept as the type */
  if (sa->len == st || *r->p != '/') goto bad;
  r->p++;
  if (rp_lwsp(r) <= 0) goto bad;
  if (!stralloc_catb(sa, "/", 1)) return -2;
  sub = sa->len;
  if ((ret = rp_token(r, sa)) == -2) return -2;
  if (ret < 0 || sa->len == sub) goto bad;
  if (r->p < r->e && *r->p != ';') goto bad; /* "text/plain/x", "a/b c" */
  return ret;
bad:
  sa->len = st;
  return -1;
}

/* Parameters (RFC 2045 + RFC 2231 merging as Dovecot does). Names and values go into sa,
 * NUL-separated; off[] gets their start offsets (name, value, name, value...). */
#define PARAMS_MAX 64
typedef struct params_s params;
struct params_s {
  stralloc sa;
  size_t off[PARAMS_MAX * 2];
  unsigned int n;
};

typedef struct rawp_s rawp;
struct rawp_s {
  size_t key, keylen; /* into sa, the name without "*n*" */
  size_t val;
  unsigned int idx;
  int ext;
};

static int params_add(params *ps, char const *k, size_t klen, char const *v, size_t vlen)
{
  if (ps->n >= PARAMS_MAX) return 1;
  ps->off[2 * ps->n] = ps->sa.len;
  if (!stralloc_catb(&ps->sa, k, klen) || !stralloc_0(&ps->sa)) return 0;
  ps->off[2 * ps->n + 1] = ps->sa.len;
  if (!stralloc_catb(&ps->sa, v, vlen) || !stralloc_0(&ps->sa)) return 0;
  ps->n++;
  return 1;
}

static int params_parse(rp *r, params *ps)
{
  stralloc raw = STRALLOC_ZERO; /* key\0value\0 of every parameter */
  size_t roff[PARAMS_MAX * 2];
  rawp rp2231[PARAMS_MAX];
  unsigned int nraw = 0, n2231 = 0, i, j;
  unsigned int lastidx = 0;
  int ok = 1;
  for (;;) {
    size_t kstart, vstart;
    int ret;
    if (r->p == r->e) break;
    if (*r->p != ';') goto broken;
    r->p++;
    if (rp_lwsp(r) <= 0) goto broken;
    kstart = raw.len;
    ret = rp_token(r, &raw);
    if (ret == -2) goto nomem;
    if (ret <= 0) { raw.len = kstart; goto broken; }
    if (!stralloc_0(&raw)) goto nomem;
    vstart = raw.len;
    if (*r->p != '=') { raw.len = kstart; goto broken; }
    r->p++;
    if ((ret = rp_lwsp(r)) <= 0) {
      /* no value */
    } else if (*r->p == '"') {
      ret = rp_quoted(r, &raw);
    } else if (*r->p == '=') {
      char const *st = r->p;
      while (r->p < r->e && *r->p != ';' && *r->p != ' ' && *r->p != '\t' && *r->p != '\r'
             && *r->p != '\n')
        r->p++;
      if (!stralloc_catb(&raw, st, r->p - st)) goto nomem;
    } else {
      ret = rp_token(r, &raw);
    }
    if (ret == -2 || !stralloc_0(&raw)) goto nomem;
    if (nraw < PARAMS_MAX) {
      roff[2 * nraw] = kstart;
      roff[2 * nraw + 1] = vstart;
      nraw++;
    }
    if (ret < 0) goto broken;
    continue;
  broken:
    if (r->p == r->e) break;
    r->p++;
  }
  /* split into plain and RFC 2231 parameters */
  for (i = 0; i < nraw; i++) {
    char const *k = raw.s + roff[2 * i];
    char const *star = strchr(k, '*');
    int plain = 1;
    if (star) {
      char const *p = star;
      unsigned int idx = lastidx;
      int ext;
      if (p[1]) {
        p++;
        idx = 0;
        for (; *p >= '0' && *p <= '9'; p++) idx = idx * 10 + (*p - '0');
      }
      ext = *p == '*';
      if (ext) p++;
      lastidx = idx;
      if (!*p && n2231 < PARAMS_MAX) {
        rp2231[n2231].key = roff[2 * i];
        rp2231[n2231].keylen = star - k;
        rp2231[n2231].val = roff[2 * i + 1];
        rp2231[n2231].idx = idx;
        rp2231[n2231].ext = ext;
        n2231++;
        plain = 0;
      } else if (!*p) plain = 0;
    }
    if (plain && !params_add(ps, k, strlen(k), raw.s + roff[2 * i + 1],
                             strlen(raw.s + roff[2 * i + 1])))
      goto nomem;
  }
  if (n2231) {
    stralloc v = STRALLOC_ZERO;
    /* insertion sort by (key bytes, idx); n2231 <= 64 */
    for (i = 1; i < n2231; i++) {
      rawp t = rp2231[i];
      j = i;
      while (j > 0) {
        rawp const *a = &rp2231[j - 1];
        size_t ml = a->keylen < t.keylen ? a->keylen : t.keylen;
        int c = memcmp(raw.s + a->key, raw.s + t.key, ml);
        if (!c) c = a->keylen < t.keylen ? -1 : a->keylen > t.keylen ? 1 : 0;
        if (c < 0 || (!c && a->idx <= t.idx)) break;
        rp2231[j] = rp2231[j - 1];
        j--;
      }
      rp2231[j] = t;
    }
    for (i = 0; i < n2231; i = j) {
      unsigned int next_idx = 0;
      int good = 1, have_ext = 0;
      for (j = i; j < n2231; j++) {
        if (rp2231[j].keylen != rp2231[i].keylen) break;
        {
          size_t q;
          int same = 1;
          for (q = 0; q < rp2231[i].keylen; q++)
            if (lower((uchar)raw.s[rp2231[i].key + q])
                != lower((uchar)raw.s[rp2231[j].key + q])) {
              same = 0;
              break;
            }
          if (!same) break;
        }
        if (rp2231[j].idx != next_idx) good = 0;
        if (rp2231[j].ext) have_ext = 1;
        next_idx++;
      }
      if (!good) {
        unsigned int q;
        for (q = i; q < j; q++) {
          char num[40];
          size_t nl = 0;
          unsigned int x = rp2231[q].idx;
          char tmp[12];
          size_t tl = 0;
          v.len = 0;
          if (!stralloc_catb(&v, raw.s + rp2231[q].key, rp2231[q].keylen)) goto nomem2;
          num[nl++] = '*';
          do { tmp[tl++] = '0' + x % 10; x /= 10; } while (x);
          while (tl) num[nl++] = tmp[--tl];
          if (rp2231[q].ext) num[nl++] = '*';
          if (!stralloc_catb(&v, num, nl)) goto nomem2;
          if (!params_add(ps, v.s, v.len, raw.s + rp2231[q].val, strlen(raw.s + rp2231[q].val)))
            goto nomem2;
        }
      } else {
        unsigned int q;
        v.len = 0;
        if (!rp2231[i].ext && have_ext && !stralloc_catb(&v, "''", 2)) goto nomem2;
        for (q = i; q < j; q++) {
          char const *val = raw.s + rp2231[q].val;
          if (!rp2231[q].ext && have_ext) {
            for (; *val; val++)
              if (!(*val == '%' ? stralloc_catb(&v, "%25", 3) : stralloc_catb(&v, val, 1)))
                goto nomem2;
          } else if (!stralloc_cats(&v, val)) goto nomem2;
        }
        {
          size_t kl = rp2231[i].keylen;
          char key[MIME_BOUNDARY_MAX + 2];
          char const *kp = raw.s + rp2231[i].key;
          if (have_ext) {
            if (kl > MIME_BOUNDARY_MAX) kl = MIME_BOUNDARY_MAX;
            memcpy(key, kp, kl);
            key[kl++] = '*';
            kp = key;
          }
          if (!params_add(ps, kp, kl, v.s ? v.s : "", v.len)) goto nomem2;
        }
      }
    }
    stralloc_free(&v);
    goto done;
  nomem2:
    stralloc_free(&v);
    goto nomem;
  }
done:
  stralloc_free(&raw);
  return ok;
nomem:
  stralloc_free(&raw);
  return 0;
}

/* Iterates over header fields in h[0..hlen): name [np,nl), value after ':' with leading
 * white space skipped up to the end of the field's last line (line end excluded). */
typedef struct hfield_s hfield;
struct hfield_s {
  char const *name;
  size_t namelen;
  char const *val;
  size_t vallen;
};

static int hdr_next(char const *h, size_t hlen, size_t *pos, hfield *f)
{
  while (*pos < hlen) {
    size_t st = *pos, e = line_end(h, hlen, st), le, colon;
    char const *c;
    if (h[st] == '\n' || (h[st] == '\r' && st + 1 < hlen && h[st + 1] == '\n')) {
      *pos = hlen; /* end of header */
      return 0;
    }
    /* extend over continuation lines */
    while (e < hlen && (h[e] == ' ' || h[e] == '\t')) e = line_end(h, hlen, e);
    *pos = e;
    le = e;
    if (le > st && h[le - 1] == '\n') le--;
    if (le > st && h[le - 1] == '\r') le--;
    c = memchr(h + st, ':', le - st);
    if (!c) continue;
    colon = c - h;
    f->name = h + st;
    f->namelen = colon - st;
    while (f->namelen && (f->name[f->namelen - 1] == ' ' || f->name[f->namelen - 1] == '\t'))
      f->namelen--;
    if (!f->namelen) continue;
    colon++;
    while (colon < le && (h[colon] == ' ' || h[colon] == '\t')) colon++;
    f->val = h + colon;
    f->vallen = le - colon;
    return 1;
  }
  return 0;
}

int mime_header_next(char const *h, size_t hlen, char const *name, size_t namelen,
                     size_t *pos, char const **v, size_t *vlen)
{
  hfield f;
  int c0;
  if (!namelen) return 0;
  c0 = lower((uchar)name[0]);
  for (;;) {
    size_t st = *pos;
    int c;
    if (st >= hlen) return 0;
    c = (uchar)h[st];
    if (lower(c) != c0 && c != '\n' && c != '\r' && c != ' ' && c != '\t') {
      /* a field of another name (its first letter says so): past its lines, unparsed (a
       * SEARCH looks for one field in 10,000 headers) */
      size_t e = line_end(h, hlen, st);
      while (e < hlen && (h[e] == ' ' || h[e] == '\t')) e = line_end(h, hlen, e);
      *pos = e;
      continue;
    }
    if (!hdr_next(h, hlen, pos, &f)) return 0;
    if (f.namelen == namelen && memeqci(f.name, name, namelen)) {
      *v = f.val;
      *vlen = f.vallen;
      return 1;
    }
  }
}

/* Content-Type facts: type/subtype flags and the boundary. Returns 0 on allocation failure. */
typedef struct ctinfo_s ctinfo;
struct ctinfo_s {
  stralloc ts;      /* "type/subtype" as parsed */
  int broken;       /* the type was broken: no parameters */
  params ps;
};

typedef struct pctx_s pctx;
struct pctx_s {
  mime_msg *m;
  char const *s;
  size_t len;
  unsigned int nb;                                  /* boundaries in stk */
  unsigned int cur;                                 /* the innermost open part */
  ctinfo ci;                                        /* scratch */
  /* the tables from here on are written before they are read: not zeroed (11 kB, and
   * SEARCH parses 10,000 headers) */
  bnd stk[MIME_DEPTH_MAX + 1];
  char bbuf[MIME_DEPTH_MAX + 1][MIME_BOUNDARY_MAX]; /* unquoted boundary values */
  unsigned int lastc[MIME_DEPTH_MAX + 1];           /* latest part made at each depth */
};

/* Is s[pos..) a boundary line of an active boundary? Returns the index in stk (innermost
 * first), or -1. *close set when "--" follows the boundary. */
static int boundary_at(pctx const *c, size_t pos, int *close)
{
  char const *s = c->s;
  size_t rest = c->len - pos;
  unsigned int k;
  if (!c->nb || rest < 2 || s[pos] != '-' || s[pos + 1] != '-') return -1;
  pos += 2;
  rest -= 2;
  for (k = c->nb; k--;) {
    bnd const *b = &c->stk[k];
    if (b->len <= rest && !memcmp(s + pos, b->b, b->len)) {
      *close = rest >= b->len + 2 && s[pos + b->len] == '-' && s[pos + b->len + 1] == '-';
      return (int)k;
    }
  }
  return -1;
}

static void ctinfo_free(ctinfo *ci)
{
  stralloc_free(&ci->ts);
  stralloc_free(&ci->ps.sa);
}

static int ct_parse(char const *v, size_t vlen, ctinfo *ci)
{
  rp r = { v, v + vlen, 0 };
  int ret;
  ci->ts.len = 0;
  ci->ps.n = 0;
  ci->ps.sa.len = 0;
  ci->broken = 0;
  if (rp_lwsp(&r) < 0) { ci->broken = 1; return 1; }
  ret = rp_content_type(&r, &ci->ts);
  if (ret == -2) return 0;
  if (ret < 0) { ci->broken = 1; return 1; }
  return params_parse(&r, &ci->ps);
}

static char const *param_get(params const *ps, char const *name, size_t *vlen)
{
  unsigned int i;
  for (i = 0; i < ps->n; i++)
    if (eqci(ps->sa.s + ps->off[2 * i], strlen(ps->sa.s + ps->off[2 * i]), name)) {
      *vlen = strlen(ps->sa.s + ps->off[2 * i + 1]);
      return ps->sa.s + ps->off[2 * i + 1];
    }
  return 0;
}

static unsigned int new_part(pctx *c, unsigned int parent, size_t hdr_off)
{
  mime_msg *m = c->m;
  unsigned int i;
  mime_part *p;
  if (m->n >= m->max) return MIME_NONE;
  if (parent != MIME_NONE && m->part[parent].depth + 1 >= MIME_DEPTH_MAX) return MIME_NONE;
  i = m->n++;
  p = &m->part[i];
  memset(p, 0, sizeof *p);
  p->hdr_off = hdr_off;
  p->parent = parent;
  p->child = p->next = MIME_NONE;
  if (parent != MIME_NONE) {
    mime_part *pp = &m->part[parent];
    p->depth = pp->depth + 1;
    if (pp->child == MIME_NONE) pp->child = i;
    else {
      /* the last child is the latest part made at this depth */
      unsigned int q = c->lastc[p->depth];
      m->part[q].next = i;
    }
    pp->nchild++;
  }
  c->lastc[p->depth] = i;
  return i;
}

/* Closes every open part up to (not including) the owner of boundary k at content_end,
 * then goes past the boundary line at L. Returns the position where parsing goes on and
 * sets *hdr to 1 when a new child part begins there (c->cur is then that child). */
static size_t finish(pctx *c, int k, int close, size_t content_end, size_t L, int *hdr)
{
  mime_msg *m = c->m;
  unsigned int owner = c->stk[k].part, p;
  size_t pos;
  for (p = c->cur; p != owner && p != MIME_NONE; p = m->part[p].parent)
    m->part[p].body_len = content_end > m->part[p].body_off ? content_end - m->part[p].body_off : 0;
  c->cur = owner;
  c->nb = close ? (unsigned int)k : (unsigned int)k + 1;
  pos = line_end(c->s, c->len, L);
  *hdr = 0;
  if (c->nb && c->stk[c->nb - 1].part == owner) {
    unsigned int ch = new_part(c, owner, pos);
    if (ch != MIME_NONE) {
      m->part[ch].flags |= MIME_F_ISMIME;
      c->cur = ch;
      *hdr = 1;
    }
  }
  return pos;
}

/* Scans a body from start for a boundary line. Returns the next position and sets *hdr as
 * finish does, or returns c->len (every open part ends there) when there is none. */
static size_t scan_body(pctx *c, size_t start, int *hdr)
{
  size_t q = start;
  *hdr = 0;
  if (!c->nb) return c->len;
  /* only lines starting with "--" matter: jump from one "\n--" to the next */
  while (q < c->len) {
    int close, k = boundary_at(c, q, &close);
    char const *nl;
    if (k >= 0) {
      size_t ce = q;
      if (q != start) {
        ce--;
        if (ce > start && c->s[ce - 1] == '\r') ce--;
      }
      return finish(c, k, close, ce, q, hdr);
    }
    /* the next "--" at the start of a line: memchr on '-' skips base64 (which has none) and
       most text in one call */
    for (;;) {
      nl = memchr(c->s + q + 1, '-', c->len - q - 1);
      if (!nl) return c->len;
      q = nl - c->s;
      if (c->s[q - 1] == '\n' && q + 1 < c->len && c->s[q + 1] == '-') break;
    }
  }
  return c->len;
}

/* Parses the header of c->cur starting at pos; decides its kind. Returns 0 on allocation
 * failure. On return *pos is where the body scan begins and *hit is the boundary index found
 * inside the header (-1 if none). */
static int parse_header(pctx *c, size_t *pos, int *hit, int *hitclose)
{
  mime_msg *m = c->m;
  mime_part *p = &m->part[c->cur];
  char const *s = c->s;
  size_t q = *pos, prevnl = 0, fields = 0;
  char const *ct = 0;
  size_t ctlen = 0;
  int ismime = p->flags & MIME_F_ISMIME, eoh = 0;
  *hit = -1;
  for (;;) {
    size_t e;
    if (q >= c->len) break;
    if (c->nb) {
      int k = boundary_at(c, q, hitclose);
      if (k >= 0 && c->stk[k].part != c->cur) { *hit = k; break; }
    }
    if (s[q] == '\n' || (s[q] == '\r' && q + 1 < c->len && s[q + 1] == '\n')) {
      q = line_end(s, c->len, q);
      eoh = 1;
      break;
    }
    e = line_end(s, c->len, q);
    while (e < c->len && (s[e] == ' ' || s[e] == '\t')) e = line_end(s, c->len, e);
    {
      hfield f;
      size_t fp = 0;
      if (hdr_next(s + q, e - q, &fp, &f)) {
        if (f.namelen == 12 && memeqci(f.name, "Mime-Version", 12)) ismime = 1;
        else if (f.namelen == 12 && memeqci(f.name, "Content-Type", 12)) {
          ismime = 1;
          if (!ct) { ct = f.val; ctlen = f.vallen; }
        }
      }
    }
    prevnl = s[e - 1] != '\n' ? 0 : (e - q >= 2 && s[e - 2] == '\r') ? 2 : 1;
    fields++;
    q = e;
  }
  if (*hit >= 0) p->hdr_len = fields ? q - prevnl - p->hdr_off : 0;
  else p->hdr_len = q - p->hdr_off;
  p->body_off = p->hdr_off + p->hdr_len;
  if (eoh) p->flags |= MIME_F_EOH;
  if (ismime) p->flags |= MIME_F_ISMIME;
  p->kind = MIME_LEAF;
  {
    int multipart = 0, message = 0, text = 0, digest = 0;
    char const *b = 0;
    size_t blen = 0;
    if (ct) {
      if (!ct_parse(ct, ctlen, &c->ci)) return 0;
      {
        char const *t = c->ci.ts.s ? c->ci.ts.s : "";
        size_t tl = c->ci.ts.len;
        if (eqci(t, tl, "message/rfc822")) message = 1;
        else if (prefixci(t, tl, "text") && (tl == 4 || t[4] == '/')) text = 1;
        else if (prefixci(t, tl, "multipart/")) {
          multipart = 1;
          if (eqci(t + 10, tl - 10, "digest")) digest = 1;
        }
      }
      if (multipart && !c->ci.broken) b = param_get(&c->ci.ps, "boundary", &blen);
    }
    if (!ismime) multipart = message = text = digest = 0, b = 0;
    if (!ct || !ismime) {
      if (p->parent != MIME_NONE && (m->part[p->parent].flags & MIME_F_DIGEST)) message = 1;
      else text = 1;
    }
    if (text) p->flags |= MIME_F_TEXT;
    if (digest) p->flags |= MIME_F_DIGEST;
    if (multipart) {
      p->kind = MIME_MULTIPART;
      if (eoh && b && blen <= MIME_BOUNDARY_MAX && c->nb < MIME_DEPTH_MAX) {
        memcpy(c->bbuf[c->nb], b, blen);
        c->stk[c->nb].b = c->bbuf[c->nb];
        c->stk[c->nb].len = blen;
        c->stk[c->nb].part = c->cur;
        c->nb++;
      }
    } else if (message) p->kind = MIME_MESSAGE;
  }
  *pos = q;
  return 1;
}

unsigned int mime_parse(mime_msg *m, char const *s, size_t len, mime_part *part,
                        unsigned int max)
{
  pctx c;
  size_t pos = 0;
  unsigned int i;
  int ok = 1;
  m->s = s;
  m->len = len;
  m->part = part;
  m->n = 0;
  m->max = max;
  if (!max) return 0;
  memset(&c, 0, offsetof(pctx, stk));
  c.m = m;
  c.s = s;
  c.len = len;
  c.cur = new_part(&c, MIME_NONE, 0);
  for (;;) {
    int hit, hitclose, hdr;
    mime_part *p;
    if (!parse_header(&c, &pos, &hit, &hitclose)) { ok = 0; break; }
    p = &m->part[c.cur];
    if (p->kind == MIME_MESSAGE) {
      unsigned int ch = new_part(&c, c.cur, hit >= 0 ? p->body_off : pos);
      if (ch == MIME_NONE) p->kind = MIME_LEAF;
      else { c.cur = ch; continue; }
    }
    if (hit >= 0) pos = finish(&c, hit, hitclose, p->body_off, pos, &hdr);
    else pos = scan_body(&c, pos, &hdr);
    /* epilogues and parts past the table: keep scanning */
    while (!hdr && pos < len && c.nb) pos = scan_body(&c, pos, &hdr);
    if (!hdr) break;
  }
  /* everything still open ends at the end */
  for (i = c.cur; i != MIME_NONE; i = m->part[i].parent)
    if (ok) m->part[i].body_len = len > m->part[i].body_off ? len - m->part[i].body_off : 0;
  for (i = 0; i < m->n; i++) {
    mime_part *p = &m->part[i];
    if (p->body_off > len) p->body_off = len;
    if (p->body_off + p->body_len > len) p->body_len = len - p->body_off;
    p->hdr_wsize = mime_wire_size(s + p->hdr_off, p->hdr_len, p->hdr_off ? s[p->hdr_off - 1] : 0);
    p->body_lines = count_lf_wire(s + p->body_off, p->body_len,
                                  p->body_off ? s[p->body_off - 1] : 0, &p->body_wsize);
  }
  ctinfo_free(&c.ci);
  return m->n;
}

void mime_header_only(mime_msg *m, char const *s, size_t len, mime_part *part)
{
  memset(part, 0, sizeof *part);
  part->hdr_len = len;
  part->body_off = len;
  part->parent = part->child = part->next = MIME_NONE;
  part->kind = MIME_LEAF;
  m->s = s;
  m->len = len;
  m->part = part;
  m->n = 1;
  m->max = 1;
}

/* ---- IMAP strings (Dovecot's choices of quoted or literal) ---- */

static int cat_num(stralloc *sa, size_t n)
{
  char b[24];
  size_t l = 0, i;
  char t[24];
  do { t[l++] = '0' + n % 10; n /= 10; } while (n);
  for (i = 0; i < l; i++) b[i] = t[l - 1 - i];
  return stralloc_catb(sa, b, l);
}

static int cat_literal(stralloc *sa, char const *s, size_t len)
{
  return stralloc_catb(sa, "{", 1) && cat_num(sa, len) && stralloc_catb(sa, "}\r\n", 3)
         && stralloc_catb(sa, s, len);
}

/* nstring: quoted unless CR, LF, 8-bit or more than 4 '"'/'\\'; stops at NUL */
static int imap_str(stralloc *sa, char const *s, size_t len)
{
  size_t i, esc = 0;
  char const *z = memchr(s, 0, len);
  if (z) len = z - s;
  for (i = 0; i < len; i++) {
    uchar ch = s[i];
    if (ch == '"' || ch == '\\') {
      if (esc++ < 4) continue;
      return cat_literal(sa, s, len);
    }
    if (ch == '\r' || ch == '\n' || ch >= 0x80) return cat_literal(sa, s, len);
  }
  if (!stralloc_catb(sa, "\"", 1)) return 0;
  for (i = 0; i < len; i++) {
    if ((s[i] == '"' || s[i] == '\\') && !stralloc_catb(sa, "\\", 1)) return 0;
    if (!stralloc_catb(sa, s + i, 1)) return 0;
  }
  return stralloc_catb(sa, "\"", 1);
}

static int imap_nstr(stralloc *sa, char const *s, size_t len)
{
  return s ? imap_str(sa, s, len) : stralloc_cats(sa, "NIL");
}

/* nstring with CR and LF removed (a space put where the next line does not start with
 * white space) */
static int imap_nstr_nolf(stralloc *sa, char const *s, size_t len, stralloc *tmp)
{
  size_t i;
  char const *z;
  if (!s) return stralloc_cats(sa, "NIL");
  z = memchr(s, 0, len);
  if (z) len = z - s;
  if (!memchr(s, '\n', len) && !memchr(s, '\r', len)) return imap_str(sa, s, len);
  tmp->len = 0;
  for (i = 0; i < len; i++) {
    if (s[i] != '\r' && s[i] != '\n') {
      if (!stralloc_catb(tmp, s + i, 1)) return 0;
    } else if (i + 1 < len && s[i + 1] != ' ' && s[i + 1] != '\t' && s[i + 1] != '\r'
               && s[i + 1] != '\n') {
      if (!stralloc_catb(tmp, " ", 1)) return 0;
    }
  }
  return imap_str(sa, tmp->s ? tmp->s : "", tmp->len);
}

/* Dovecot's imap_append_string_for_humans: white space runs collapsed, trimmed; NUL as 0x80 */
static int imap_humans(stralloc *sa, char const *s, size_t size)
{
  size_t i, remove = 0, out = 0;
  int prefix = 1, last = 1, modify = 0;
  for (i = 0; i < size; i++) {
    switch (s[i]) {
    case 0: last = 0; modify = 1; break;
    case '\r': case '\n': case '\t':
      modify = 1;
      /* fall through */
    case ' ':
      if (last) { modify = 1; remove++; }
      last = 1;
      break;
    case '"': case '\\': modify = 1; last = 0; break;
    default:
      if ((uchar)s[i] & 0x80) modify = 1;
      last = 0;
    }
    if (!last) prefix = 0;
  }
  if (last && i > 0 && !prefix) { modify = 1; remove++; }
  if (!modify)
    return stralloc_catb(sa, "\"", 1) && stralloc_catb(sa, s, size) && stralloc_catb(sa, "\"", 1);
  if (size == remove) return stralloc_cats(sa, "\"\"");
  if (!stralloc_catb(sa, "{", 1) || !cat_num(sa, size - remove) || !stralloc_catb(sa, "}\r\n", 3))
    return 0;
  last = 1;
  prefix = 1;
  for (i = 0; i < size; i++) {
    switch (s[i]) {
    case 0:
      if (!stralloc_catb(sa, "\x80", 1)) return 0;
      out++;
      last = 0;
      break;
    case '\r': case '\n': case '\t': case ' ':
      if (!last) {
        if (!stralloc_catb(sa, " ", 1)) return 0;
        out++;
      }
      last = 1;
      break;
    default:
      last = 0;
      if (!stralloc_catb(sa, s + i, 1)) return 0;
      out++;
    }
    if (!last) prefix = 0;
  }
  if (last && i > 0 && !prefix) { sa->len--; out--; }
  (void)out;
  return 1;
}

/* ---- addresses (RFC 5322 with the obsolete forms, as Dovecot's message-address) ---- */

typedef struct aw_s aw; /* address writer: one IMAP address list */
struct aw_s {
  stralloc *out;
  stralloc str, comment, name, route, mbox, dom;
  int has_name, has_route, has_mbox, has_dom;
  int count;
  int nomem;
  int disp;      /* 1: write "Name <box@dom>, group: a@b;" (SEARCH) instead of IMAP lists */
  int in_group;
  int first;
};

static void aw_reset(aw *a)
{
  a->has_name = a->has_route = a->has_mbox = a->has_dom = 0;
  a->name.len = a->route.len = a->mbox.len = a->dom.len = 0;
}

static void aw_emit_disp(aw *a)
{
  /* Dovecot's message_address_write (what SEARCH FROM etc. match against) */
  stralloc *o = a->out;
  int ok = 1;
  a->count++;
  if (!a->has_dom && (!a->in_group ? 1 : !a->has_mbox)) {
    if (!a->in_group) {
      if (!a->first) ok = stralloc_catb(o, ", ", 2);
      ok = ok && stralloc_catb(o, a->mbox.s ? a->mbox.s : "", a->has_mbox ? a->mbox.len : 0)
           && stralloc_catb(o, ": ", 2);
      a->first = 1;
    } else {
      ok = stralloc_catb(o, ";", 1);
      a->first = 0;
    }
    a->in_group = !a->in_group;
  } else {
    if (!a->first) ok = stralloc_catb(o, ", ", 2);
    a->first = 0;
    if ((!a->has_name || !a->name.len) && !a->has_route) {
      ok = ok && stralloc_catb(o, a->mbox.s ? a->mbox.s : "", a->mbox.len)
           && stralloc_catb(o, "@", 1) && stralloc_catb(o, a->dom.s ? a->dom.s : "", a->dom.len);
    } else {
      if (a->has_name) /* the name decoded (RFC 2047), as the search compares it */
        ok = ok && mime_header_decode(o, a->name.s ? a->name.s : "", a->name.len)
             && stralloc_catb(o, " ", 1);
      ok = ok && stralloc_catb(o, "<", 1);
      if (a->has_route)
        ok = ok && stralloc_catb(o, a->route.s ? a->route.s : "", a->route.len)
             && stralloc_catb(o, ":", 1);
      ok = ok && stralloc_catb(o, a->mbox.s ? a->mbox.s : "", a->mbox.len)
           && stralloc_catb(o, "@", 1) && stralloc_catb(o, a->dom.s ? a->dom.s : "", a->dom.len)
           && stralloc_catb(o, ">", 1);
    }
  }
  if (!ok) a->nomem = 1;
  aw_reset(a);
}

static void aw_emit(aw *a)
{
  stralloc *o = a->out;
  if (a->nomem) return;
  if (a->disp) {
    aw_emit_disp(a);
    return;
  }
  if (!a->count++ && !stralloc_catb(o, "(", 1)) { a->nomem = 1; return; }
  if (!stralloc_catb(o, "(", 1)
      || !(a->has_name ? imap_humans(o, a->name.s ? a->name.s : "", a->name.len)
                       : stralloc_cats(o, "NIL"))
      || !stralloc_catb(o, " ", 1)
      || !imap_nstr(o, a->has_route ? (a->route.s ? a->route.s : "") : 0, a->route.len)
      || !stralloc_catb(o, " ", 1)
      || !imap_nstr(o, a->has_mbox ? (a->mbox.s ? a->mbox.s : "") : 0, a->mbox.len)
      || !stralloc_catb(o, " ", 1)
      || !imap_nstr(o, a->has_dom ? (a->dom.s ? a->dom.s : "") : 0, a->dom.len)
      || !stralloc_catb(o, ")", 1))
    a->nomem = 1;
  aw_reset(a);
}

static int set_sa(stralloc *d, stralloc const *s)
{
  d->len = 0;
  return stralloc_catb(d, s->s ? s->s : "", s->len) && (d->s || stralloc_ready(d, 1));
}

static int ad_local(aw *a, rp *r)
{
  int ret;
  a->str.len = 0;
  ret = *r->p == '"' ? rp_quoted(r, &a->str) : rp_dot_atom(r, &a->str);
  if (ret == -2) { a->nomem = 1; return -1; }
  if (ret < 0) return -1;
  if (!set_sa(&a->mbox, &a->str)) a->nomem = 1;
  a->has_mbox = 1;
  return ret;
}

static int ad_domain(aw *a, rp *r)
{
  int ret;
  a->str.len = 0;
  ret = rp_domain(r, &a->str);
  if (ret == -2) { a->nomem = 1; return -1; }
  if (ret < 0) return -1;
  if (!set_sa(&a->dom, &a->str)) a->nomem = 1;
  a->has_dom = 1;
  return ret;
}

static int ad_domain_list(aw *a, rp *r)
{
  int ret;
  a->str.len = 0;
  for (;;) {
    if (r->p == r->e) return 0;
    if (*r->p != '@') break;
    if (a->str.len && !stralloc_catb(&a->str, ",", 1)) { a->nomem = 1; return -1; }
    if (!stralloc_catb(&a->str, "@", 1)) { a->nomem = 1; return -1; }
    ret = rp_domain(r, &a->str);
    if (ret == -2) { a->nomem = 1; return -1; }
    if (ret <= 0) return ret;
    while (rp_lwsp(r) > 0 && *r->p == ',') r->p++;
  }
  if (!set_sa(&a->route, &a->str)) a->nomem = 1;
  a->has_route = 1;
  return 1;
}

static int ad_angle(aw *a, rp *r)
{
  int ret;
  r->p++;
  if ((ret = rp_lwsp(r)) <= 0) return ret;
  if (*r->p == '@') {
    if (ad_domain_list(a, r) <= 0 || *r->p != ':') {
      a->route.len = 0;
      if (!stralloc_cats(&a->route, "INVALID_ROUTE")) a->nomem = 1;
      a->has_route = 1;
      return -1;
    }
    r->p++;
    if ((ret = rp_lwsp(r)) <= 0) return ret;
  }
  if ((ret = ad_local(a, r)) <= 0) return ret;
  if (*r->p == '@' && (ret = ad_domain(a, r)) <= 0) return ret;
  if (*r->p != '>') return -1;
  r->p++;
  return rp_lwsp(r);
}

static int ad_name_addr(aw *a, rp *r)
{
  int ret;
  a->str.len = 0;
  ret = rp_phrase(r, &a->str);
  if (ret == -2) { a->nomem = 1; return -1; }
  if (ret <= 0 || *r->p != '<') return -1;
  if (a->str.len) {
    if (!set_sa(&a->name, &a->str)) a->nomem = 1;
    a->has_name = 1;
  }
  if (ad_angle(a, r) < 0) {
    a->dom.len = 0;
    if (!stralloc_cats(&a->dom, "SYNTAX_ERROR")) a->nomem = 1;
    a->has_dom = 1;
  }
  return r->p != r->e;
}

static int ad_addr_spec(aw *a, rp *r)
{
  int ret, ret2;
  a->comment.len = 0;
  ret = ad_local(a, r);
  if (ret != 0 && r->p < r->e && *r->p == '@') {
    ret2 = ad_domain(a, r);
    if (ret2 <= 0) ret = ret2;
  }
  if (a->comment.len) {
    if (!set_sa(&a->name, &a->comment)) a->nomem = 1;
    a->has_name = 1;
  }
  return ret;
}

static void ad_fixed(aw *a)
{
  if (!a->has_mbox) {
    a->mbox.len = 0;
    if (!stralloc_cats(&a->mbox, a->disp ? "" : "MISSING_MAILBOX")) a->nomem = 1;
    a->has_mbox = 1;
  }
  if (!a->has_dom) {
    a->dom.len = 0;
    if (!stralloc_cats(&a->dom, a->disp ? "" : "MISSING_DOMAIN")) a->nomem = 1;
    a->has_dom = 1;
  }
  aw_emit(a);
}

static int ad_mailbox(aw *a, rp *r)
{
  char const *start = r->p;
  int ret;
  if ((ret = ad_name_addr(a, r)) < 0) {
    aw_reset(a);
    r->p = start;
    ret = ad_addr_spec(a, r);
  }
  ad_fixed(a);
  return ret;
}

static int ad_group(aw *a, rp *r)
{
  int ret;
  a->str.len = 0;
  ret = rp_phrase(r, &a->str);
  if (ret == -2) { a->nomem = 1; return -1; }
  if (ret <= 0 || *r->p != ':') return -1;
  r->p++;
  ret = rp_lwsp(r);
  if (!set_sa(&a->mbox, &a->str)) a->nomem = 1;
  a->has_mbox = 1;
  aw_emit(a);
  if (ret > 0 && *r->p != ';') {
    for (;;) {
      if (ad_mailbox(a, r) <= 0) { ret = -1; break; }
      if (*r->p != ',') break;
      r->p++;
      if (rp_lwsp(r) <= 0) { ret = -1; break; }
    }
  }
  if (ret >= 0) {
    if (r->p == r->e || *r->p != ';') ret = -1;
    else {
      r->p++;
      ret = rp_lwsp(r);
    }
  }
  aw_emit(a);
  return ret == 0 ? 0 : 1;
}

static int ad_address(aw *a, rp *r)
{
  char const *start = r->p;
  int ret;
  if ((ret = ad_group(a, r)) < 0) {
    aw_reset(a);
    r->p = start;
    ret = ad_mailbox(a, r);
  }
  return ret;
}

/* Appends the IMAP address list of the values v[0..n) (every occurrence of the field, in
 * order, as one list; NIL when there is no address). */
/* keep: 6 strallocs the caller reuses across calls (0: allocated and freed here) */
static int addresses_x(stralloc *sa, char const *const *v, size_t const *vlen, unsigned int n,
                       int disp, stralloc *keep)
{
  static aw const zero;
  aw a = zero;
  unsigned int k;
  int ret;
  if (keep) {
    a.str = keep[0], a.comment = keep[1], a.name = keep[2];
    a.route = keep[3], a.mbox = keep[4], a.dom = keep[5];
  }
  a.out = sa;
  a.disp = disp;
  a.first = 1;
  for (k = 0; k < n && !a.nomem; k++) {
    rp r = { v[k], v[k] + vlen[k], 0 };
    r.comment = &a.comment;
    if (rp_lwsp(&r) <= 0) continue;
    for (;;) {
      if ((ret = ad_address(&a, &r)) == 0) break;
      if (a.nomem) break;
      if (r.p == r.e || *r.p != ',') break;
      r.p++;
      if ((ret = rp_lwsp(&r)) <= 0) {
        if (ret < 0) { aw_reset(&a); ad_fixed(&a); }
        break;
      }
    }
  }
  if (keep) {
    keep[0] = a.str, keep[1] = a.comment, keep[2] = a.name;
    keep[3] = a.route, keep[4] = a.mbox, keep[5] = a.dom;
  } else {
    stralloc_free(&a.str);
    stralloc_free(&a.comment);
    stralloc_free(&a.name);
    stralloc_free(&a.route);
    stralloc_free(&a.mbox);
    stralloc_free(&a.dom);
  }
  if (a.nomem) return 0;
  if (disp) return 1;
  return a.count ? stralloc_catb(sa, ")", 1) : stralloc_cats(sa, "NIL");
}

static int imap_addresses(stralloc *sa, char const *const *v, size_t const *vlen, unsigned int n,
                          stralloc *keep)
{
  return addresses_x(sa, v, vlen, n, 0, keep);
}

/* 1 when the value holds something besides white space and comments (Dovecot parses an
 * address field only then; an empty Sender: counts as absent) */
static int has_content(char const *v, size_t len)
{
  rp r = { v, v + len, 0 };
  return rp_lwsp(&r) > 0;
}

/* A field value with its line breaks removed (Dovecot's full_value), into sa */
static int unfold(stralloc *sa, char const *v, size_t len)
{
  size_t i = 0;
  sa->len = 0;
  if (!stralloc_ready(sa, len + 1)) return 0;
  while (i < len) {
    if (v[i] == '\n') { i++; continue; }
    if (v[i] == '\r' && i + 1 < len && v[i + 1] == '\n') { i += 2; continue; }
    sa->s[sa->len++] = v[i++];
  }
  return 1;
}

/* ---- ENVELOPE ---- */

static int is_envfield(hfield const *f, char const *name)
{
  return eqci(f->name, f->namelen, name);
}

/* The envelope of the header h[0..hlen), without the outer parentheses. Later fields
 * replace earlier ones, as in Dovecot. */
#define ENV_OCC_MAX 32 /* occurrences of one address field that are listed */
static int envelope_cat(stralloc *sa, char const *h, size_t hlen)
{
  static char const *const names[10] = { "Date", "Subject", "From", "Sender", "Reply-To",
                                         "To", "Cc", "Bcc", "In-Reply-To", "Message-ID" };
  char const *v[10][ENV_OCC_MAX];
  size_t vl[10][ENV_OCC_MAX];
  unsigned int n[10] = { 0 };
  stralloc t = STRALLOC_ZERO;
  stralloc keep[6] = { STRALLOC_ZERO, STRALLOC_ZERO, STRALLOC_ZERO, STRALLOC_ZERO,
                       STRALLOC_ZERO, STRALLOC_ZERO };
  hfield f;
  size_t pos = 0;
  unsigned int i;
  int r = 0;
  while (hdr_next(h, hlen, &pos, &f))
    for (i = 0; i < 10; i++)
      if (is_envfield(&f, names[i])) {
        /* strings: the last one counts; addresses: all of them, in order */
        unsigned int k = (i >= 2 && i <= 7) ? n[i] : 0;
        if (k < ENV_OCC_MAX) {
          v[i][k] = f.val;
          vl[i][k] = f.vallen;
          n[i] = k + 1;
        }
        break;
      }
  for (i = 3; i <= 4; i++) {
    unsigned int k, any = 0;
    for (k = 0; k < n[i]; k++) any |= has_content(v[i][k], vl[i][k]);
    if (!any) n[i] = 0;
  }
  for (i = 3; i <= 4; i++)
    if (!n[i]) {
      memcpy(v[i], v[2], sizeof v[2]);
      memcpy(vl[i], vl[2], sizeof vl[2]);
      n[i] = n[2];
    }
  if (!n[0]) { if (!stralloc_cats(sa, "NIL")) goto end; }
  else if (!unfold(&t, v[0][0], vl[0][0]) || !imap_str(sa, t.s, t.len)) goto end;
  if (!stralloc_catb(sa, " ", 1)) goto end;
  if (!(n[1] ? imap_humans(sa, v[1][0], vl[1][0]) : stralloc_cats(sa, "NIL"))) goto end;
  for (i = 2; i < 8; i++)
    if (!stralloc_catb(sa, " ", 1) || !imap_addresses(sa, v[i], vl[i], n[i], keep)) goto end;
  for (i = 8; i < 10; i++) {
    if (!stralloc_catb(sa, " ", 1)) goto end;
    if (!n[i]) { if (!stralloc_cats(sa, "NIL")) goto end; }
    else if (!unfold(&t, v[i][0], vl[i][0]) || !imap_str(sa, t.s, t.len)) goto end;
  }
  r = 1;
end:
  stralloc_free(&t);
  for (i = 0; i < 6; i++) stralloc_free(&keep[i]);
  return r;
}

int mime_envelope(stralloc *sa, mime_msg const *m, unsigned int i)
{
  mime_part const *p;
  if (i >= m->n) return stralloc_cats(sa, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
  p = &m->part[i];
  if (i && p->kind == MIME_MESSAGE && p->child != MIME_NONE) p = &m->part[p->child];
  return stralloc_catb(sa, "(", 1) && envelope_cat(sa, m->s + p->hdr_off, p->hdr_len)
         && stralloc_catb(sa, ")", 1);
}

/* ---- BODYSTRUCTURE ---- */

typedef struct pdata_s pdata; /* the Content-* facts of a part, as Dovecot keeps them */
struct pdata_s {
  int has_ct;
  stralloc type, sub;   /* when has_ct */
  int has_sub;
  params ctp;
  char const *id, *md5, *desc, *loc, *cte;
  size_t idl, md5l, descl, locl, ctel;
  int has_disp;
  stralloc disp;
  params dp;
  stralloc lang;        /* NUL-separated */
  unsigned int nlang;
  stralloc tmp;
};

static void pdata_free(pdata *d)
{
  stralloc_free(&d->type);
  stralloc_free(&d->sub);
  stralloc_free(&d->ctp.sa);
  stralloc_free(&d->disp);
  stralloc_free(&d->dp.sa);
  stralloc_free(&d->lang);
  stralloc_free(&d->tmp);
}

static int pdata_get(pdata *d, mime_part const *p, char const *s)
{
  hfield f;
  size_t pos = 0;
  int seen_ct = 0, seen_cte = 0, seen_lang = 0;
  d->has_ct = d->has_sub = d->has_disp = 0;
  d->id = d->md5 = d->desc = d->loc = d->cte = 0;
  d->ctp.n = d->dp.n = 0;
  d->ctp.sa.len = d->dp.sa.len = 0;
  d->nlang = 0;
  d->lang.len = 0;
  if (!(p->flags & MIME_F_ISMIME)) return 1;
  while (hdr_next(s + p->hdr_off, p->hdr_len, &pos, &f)) {
    char const *n = f.name + 8;
    size_t nl = f.namelen - 8;
    if (f.namelen < 8 || !memeqci(f.name, "Content-", 8)) continue;
    if (eqci(n, nl, "ID")) { if (!d->id) d->id = f.val, d->idl = f.vallen; }
    else if (eqci(n, nl, "MD5")) { if (!d->md5) d->md5 = f.val, d->md5l = f.vallen; }
    else if (eqci(n, nl, "Type")) {
      if (!seen_ct) {
        rp r = { f.val, f.val + f.vallen, 0 };
        stralloc ts = STRALLOC_ZERO;
        int ret;
        char const *slash;
        seen_ct = 1;
        d->has_ct = 1;
        rp_lwsp(&r);
        ret = rp_content_type(&r, &ts);
        if (ret == -2) { stralloc_free(&ts); return 0; }
        slash = ts.s ? memchr(ts.s, '/', ts.len) : 0;
        d->type.len = d->sub.len = 0;
        if (!stralloc_catb(&d->type, ts.s ? ts.s : "", slash ? (size_t)(slash - ts.s) : ts.len)
            || !stralloc_0(&d->type)) { stralloc_free(&ts); return 0; }
        if (slash) {
          d->has_sub = 1;
          if (!stralloc_catb(&d->sub, slash + 1, ts.len - (slash + 1 - ts.s))) {
            stralloc_free(&ts);
            return 0;
          }
        }
        if (!stralloc_0(&d->sub)) { stralloc_free(&ts); return 0; }
        d->type.len--;
        d->sub.len--;
        stralloc_free(&ts);
        if (ret >= 0 && !params_parse(&r, &d->ctp)) return 0;
      }
    } else if (eqci(n, nl, "Transfer-Encoding")) {
      if (!seen_cte) {
        rp r = { f.val, f.val + f.vallen, 0 };
        char const *st;
        seen_cte = 1;
        rp_lwsp(&r);
        st = r.p;
        while (r.p < r.e && IS_TOKEN(*r.p)) r.p++;
        if (r.p > st) {
          char const *en = r.p;
          if (r.p == r.e || rp_lwsp(&r) == 0) d->cte = st, d->ctel = en - st;
        }
      }
    } else if (eqci(n, nl, "Language")) {
      if (!seen_lang) {
        rp r = { f.val, f.val + f.vallen, 0 };
        seen_lang = 1;
        rp_lwsp(&r);
        while (r.p < r.e && IS_ATEXT(*r.p)) {
          char const *st = r.p;
          while (r.p < r.e && IS_ATEXT(*r.p)) r.p++;
          if (!stralloc_catb(&d->lang, st, r.p - st) || !stralloc_0(&d->lang)) return 0;
          d->nlang++;
          if (r.p < r.e) rp_lwsp(&r);
          if (r.p == r.e || *r.p != ',') break;
          r.p++;
          rp_lwsp(&r);
        }
      }
    } else if (eqci(n, nl, "Location")) { if (!d->loc) d->loc = f.val, d->locl = f.vallen; }
    else if (eqci(n, nl, "Description")) { if (!d->desc) d->desc = f.val, d->descl = f.vallen; }
    else if (eqci(n, nl, "Disposition")) {
      if (!d->dp.n) {
        rp r = { f.val, f.val + f.vallen, 0 };
        char const *st;
        rp_lwsp(&r);
        st = r.p;
        while (r.p < r.e && IS_TOKEN(*r.p)) r.p++;
        d->disp.len = 0;
        if (!stralloc_catb(&d->disp, st, r.p - st)) return 0;
        d->has_disp = 1;
        if (r.p < r.e && rp_lwsp(&r) < 0) continue;
        d->dp.n = 0;
        d->dp.sa.len = 0;
        if (!params_parse(&r, &d->dp)) return 0;
      }
    }
  }
  return 1;
}

static int params_write(stralloc *sa, params const *ps, int default_charset)
{
  unsigned int i;
  int seen = 0;
  if (!default_charset && !ps->n) return stralloc_cats(sa, "NIL");
  if (!stralloc_catb(sa, "(", 1)) return 0;
  for (i = 0; i < ps->n; i++) {
    char const *k = ps->sa.s + ps->off[2 * i], *v = ps->sa.s + ps->off[2 * i + 1];
    if (i && !stralloc_catb(sa, " ", 1)) return 0;
    if (default_charset && eqci(k, strlen(k), "charset")) seen = 1;
    if (!imap_str(sa, k, strlen(k)) || !stralloc_catb(sa, " ", 1) || !imap_str(sa, v, strlen(v)))
      return 0;
  }
  if (default_charset && !seen) {
    if (i && !stralloc_catb(sa, " ", 1)) return 0;
    if (!stralloc_cats(sa, "\"charset\" \"us-ascii\"")) return 0;
  }
  return stralloc_catb(sa, ")", 1);
}

static int common_write(stralloc *sa, pdata *d)
{
  unsigned int i;
  size_t o = 0;
  if (!stralloc_catb(sa, " ", 1)) return 0;
  if (!d->has_disp) {
    if (!stralloc_cats(sa, "NIL")) return 0;
  } else if (!stralloc_catb(sa, "(", 1) || !imap_str(sa, d->disp.s ? d->disp.s : "", d->disp.len)
             || !stralloc_catb(sa, " ", 1) || !params_write(sa, &d->dp, 0)
             || !stralloc_catb(sa, ")", 1))
    return 0;
  if (!stralloc_catb(sa, " ", 1)) return 0;
  if (!d->nlang) {
    if (!stralloc_cats(sa, "NIL")) return 0;
  } else {
    if (!stralloc_catb(sa, "(", 1)) return 0;
    for (i = 0; i < d->nlang; i++) {
      size_t l = strlen(d->lang.s + o);
      if (i && !stralloc_catb(sa, " ", 1)) return 0;
      if (!imap_str(sa, d->lang.s + o, l)) return 0;
      o += l + 1;
    }
    if (!stralloc_catb(sa, ")", 1)) return 0;
  }
  return stralloc_catb(sa, " ", 1) && imap_nstr_nolf(sa, d->loc, d->locl, &d->tmp);
}

#define EMPTY_BODY "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
#define EMPTY_BODYSTRUCTURE \
  "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)"

static int bs_write(stralloc *sa, mime_msg const *m, unsigned int i, int ext, pdata *d,
                    unsigned int depth)
{
  mime_part const *p = &m->part[i];
  if (depth > MIME_DEPTH_MAX + 2) return stralloc_cats(sa, "NIL");
  if (p->kind == MIME_MULTIPART) {
    unsigned int c;
    if (p->child == MIME_NONE) {
      if (!stralloc_cats(sa, ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY)) return 0;
    } else
      for (c = p->child; c != MIME_NONE; c = m->part[c].next)
        if (!stralloc_catb(sa, "(", 1) || !bs_write(sa, m, c, ext, d, depth + 1)
            || !stralloc_catb(sa, ")", 1))
          return 0;
    if (!pdata_get(d, p, m->s)) return 0;
    if (!stralloc_catb(sa, " ", 1)
        || !imap_str(sa, d->sub.s ? d->sub.s : "", d->has_ct ? d->sub.len : 0))
      return 0;
    if (!ext) return 1;
    return stralloc_catb(sa, " ", 1) && params_write(sa, &d->ctp, 0) && common_write(sa, d);
  } else {
    int text = 0;
    if (!pdata_get(d, p, m->s)) return 0;
    if (p->kind == MIME_MESSAGE) {
      if (!stralloc_cats(sa, "\"message\" \"rfc822\"")) return 0;
    } else if (!d->has_ct) {
      text = 1;
      if (!stralloc_cats(sa, "\"text\" \"plain\"")) return 0;
    } else {
      text = eqci(d->type.s, d->type.len, "text");
      if (!imap_str(sa, d->type.s, d->type.len) || !stralloc_catb(sa, " ", 1)
          || !imap_str(sa, d->sub.s, d->sub.len))
        return 0;
    }
    if (!stralloc_catb(sa, " ", 1) || !params_write(sa, &d->ctp, text)) return 0;
    if (!stralloc_catb(sa, " ", 1) || !imap_nstr_nolf(sa, d->id, d->idl, &d->tmp)) return 0;
    if (!stralloc_catb(sa, " ", 1) || !imap_nstr_nolf(sa, d->desc, d->descl, &d->tmp)) return 0;
    if (!stralloc_catb(sa, " ", 1)) return 0;
    if (!(d->cte ? imap_str(sa, d->cte, d->ctel) : stralloc_cats(sa, "\"7bit\""))) return 0;
    if (!stralloc_catb(sa, " ", 1) || !cat_num(sa, p->body_wsize)) return 0;
    if (text) {
      if (!stralloc_catb(sa, " ", 1) || !cat_num(sa, p->body_lines)) return 0;
    } else if (p->kind == MIME_MESSAGE) {
      mime_part const *c = &m->part[p->child];
      /* the child overwrote d: this part's own fields are read again after it */
      if (!stralloc_cats(sa, " (") || !envelope_cat(sa, m->s + c->hdr_off, c->hdr_len)
          || !stralloc_cats(sa, ") (") || !bs_write(sa, m, p->child, ext, d, depth + 1)
          || !stralloc_catb(sa, ")", 1) || !stralloc_catb(sa, " ", 1)
          || !cat_num(sa, p->body_lines))
        return 0;
      if (!ext) return 1;
      if (!pdata_get(d, p, m->s)) return 0;
    }
    if (!ext) return 1;
    return stralloc_catb(sa, " ", 1) && imap_nstr_nolf(sa, d->md5, d->md5l, &d->tmp)
           && common_write(sa, d);
  }
}

int mime_bodystructure(stralloc *sa, mime_msg const *m, unsigned int i, int ext)
{
  static pdata const zero;
  pdata d = zero;
  int r;
  if (i >= m->n) return stralloc_cats(sa, ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY);
  r = stralloc_catb(sa, "(", 1) && bs_write(sa, m, i, ext, &d, 0) && stralloc_catb(sa, ")", 1);
  pdata_free(&d);
  return r;
}

/* ---- sections ---- */

static int kw(char const *s, size_t len, size_t *pos, char const *w)
{
  size_t l = strlen(w);
  if (len - *pos < l || !memeqci(s + *pos, w, l)) return 0;
  *pos += l;
  return 1;
}

int mime_section_parse(char const *s, size_t len, mime_section *sec)
{
  size_t pos = 0;
  sec->nnum = 0;
  sec->what = MIME_SEC_ALL;
  sec->nfield = 0;
  while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
    unsigned long n = 0;
    if (s[pos] == '0') return 0;
    while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
      n = n * 10 + (s[pos++] - '0');
      if (n > 0xfffffffUL) return 0;
    }
    if (sec->nnum >= MIME_SECTION_DEPTH) return 0;
    sec->num[sec->nnum++] = (unsigned int)n;
    if (pos == len) return 1;
    if (s[pos] != '.') return 0;
    pos++;
    if (pos == len) return 0;
  }
  if (pos == len) return !sec->nnum;
  if (kw(s, len, &pos, "HEADER.FIELDS")) {
    sec->what = MIME_SEC_FIELDS;
    if (kw(s, len, &pos, ".NOT")) sec->what = MIME_SEC_FIELDS_NOT;
    if (pos >= len || s[pos] != ' ') return 0;
    pos++;
    if (pos >= len || s[pos] != '(') return 0;
    pos++;
    for (;;) {
      char const *st;
      if (pos >= len) return 0;
      if (s[pos] == '"') {
        /* quoted: keep it as written between the quotes (no escapes in field names) */
        st = s + ++pos;
        while (pos < len && s[pos] != '"') {
          if (s[pos] == '\\' || s[pos] == '\r' || s[pos] == '\n') return 0;
          pos++;
        }
        if (pos >= len) return 0;
        if (sec->nfield >= MIME_FIELDS_MAX) return 0;
        sec->field[sec->nfield] = st;
        sec->fieldlen[sec->nfield++] = s + pos - st;
        pos++;
      } else {
        st = s + pos;
        while (pos < len && s[pos] != ' ' && s[pos] != ')' && s[pos] != '(' && s[pos] != '"'
               && (uchar)s[pos] > 0x20 && (uchar)s[pos] < 0x7f && s[pos] != '{')
          pos++;
        if (s + pos == st) return 0;
        if (sec->nfield >= MIME_FIELDS_MAX) return 0;
        sec->field[sec->nfield] = st;
        sec->fieldlen[sec->nfield++] = s + pos - st;
      }
      if (pos >= len) return 0;
      if (s[pos] == ')') { pos++; break; }
      if (s[pos] != ' ') return 0;
      pos++;
    }
    return pos == len;
  }
  if (kw(s, len, &pos, "HEADER")) sec->what = MIME_SEC_HEADER;
  else if (kw(s, len, &pos, "TEXT")) sec->what = MIME_SEC_TEXT;
  else if (kw(s, len, &pos, "MIME")) {
    if (!sec->nnum) return 0;
    sec->what = MIME_SEC_MIME;
  } else return 0;
  return pos == len;
}

unsigned int mime_section_part(mime_msg const *m, mime_section const *sec)
{
  unsigned int i = 0, k;
  if (!m->n) return MIME_NONE;
  for (k = 0; k < sec->nnum; k++) {
    mime_part const *p = &m->part[i];
    unsigned int n = sec->num[k];
    if (p->kind == MIME_MULTIPART) {
      unsigned int c = p->child;
      while (c != MIME_NONE && n > 1) c = m->part[c].next, n--;
      if (c == MIME_NONE) return MIME_NONE;
      i = c;
    } else {
      /* a leaf is its own part 1; only a message goes deeper (as Dovecot) */
      if (n != 1 || (k + 1 < sec->nnum && p->kind != MIME_MESSAGE)) return MIME_NONE;
    }
    if (m->part[i].kind == MIME_MESSAGE && k + 1 < sec->nnum) {
      if (m->part[i].child == MIME_NONE) return MIME_NONE;
      i = m->part[i].child;
    }
  }
  return i;
}

int mime_section_range(mime_msg const *m, mime_section const *sec, size_t *off, size_t *len,
                       char *prev)
{
  unsigned int i = mime_section_part(m, sec);
  mime_part const *p;
  if (i == MIME_NONE) return -1;
  p = &m->part[i];
  if (sec->nnum && (sec->what == MIME_SEC_HEADER || sec->what == MIME_SEC_TEXT
                    || sec->what == MIME_SEC_FIELDS || sec->what == MIME_SEC_FIELDS_NOT)) {
    if (p->kind != MIME_MESSAGE || p->child == MIME_NONE) return -1;
    p = &m->part[p->child];
  }
  switch (sec->what) {
  case MIME_SEC_ALL:
    if (!sec->nnum) *off = 0, *len = m->len;
    else *off = p->body_off, *len = p->body_len;
    break;
  case MIME_SEC_HEADER:
  case MIME_SEC_MIME:
    *off = p->hdr_off, *len = p->hdr_len;
    break;
  case MIME_SEC_TEXT:
    *off = p->body_off, *len = p->body_len;
    break;
  default:
    *off = p->hdr_off, *len = p->hdr_len;
    *prev = *off ? m->s[*off - 1] : 0;
    return 0;
  }
  *prev = *off ? m->s[*off - 1] : 0;
  return 1;
}

int mime_section_cat(stralloc *sa, mime_msg const *m, mime_section const *sec, size_t origin,
                     size_t count)
{
  size_t off, len, pos;
  char prev;
  int r = mime_section_range(m, sec, &off, &len, &prev);
  stralloc t = STRALLOC_ZERO;
  char const *h;
  int eoh;
  if (r < 0) return 1;
  if (r > 0) return mime_wire_cat(sa, m->s + off, len, prev, origin, count);
  /* HEADER.FIELDS [.NOT]: the matching fields as stored, then an empty line */
  h = m->s + off;
  pos = 0;
  {
    /* the empty line is sent only when the header had one */
    unsigned int i = mime_section_part(m, sec);
    if (sec->nnum) i = m->part[i].child;
    eoh = sec->what == MIME_SEC_FIELDS || (m->part[i].flags & MIME_F_EOH);
  }
  while (pos < len) {
    size_t st = pos, e = line_end(h, len, st);
    char const *c;
    unsigned int k;
    int match = 0;
    if (h[st] == '\n' || (h[st] == '\r' && st + 1 < len && h[st + 1] == '\n')) break;
    while (e < len && (h[e] == ' ' || h[e] == '\t')) e = line_end(h, len, e);
    pos = e;
    c = memchr(h + st, ':', e - st);
    {
      /* a line without a colon is a field named by the whole line */
      size_t nl = c ? (size_t)(c - (h + st)) : e - st;
      if (!c) {
        if (nl && h[st + nl - 1] == '\n') nl--;
        if (nl && h[st + nl - 1] == '\r') nl--;
      }
      while (nl && (h[st + nl - 1] == ' ' || h[st + nl - 1] == '\t')) nl--;
      for (k = 0; k < sec->nfield; k++)
        if (sec->fieldlen[k] == nl && memeqci(h + st, sec->field[k], nl)) { match = 1; break; }
    }
    if (match != (sec->what == MIME_SEC_FIELDS_NOT)) {
      if (!stralloc_catb(&t, h + st, e - st)) goto nomem;
      if (h[e - 1] != '\n' && !stralloc_catb(&t, "\n", 1)) goto nomem;
    }
  }
  if (eoh && !stralloc_catb(&t, "\n", 1)) goto nomem;
  r = mime_wire_cat(sa, t.s ? t.s : "", t.len, 0, origin, count);
  stralloc_free(&t);
  return r;
nomem:
  stralloc_free(&t);
  return 0;
}

/* ---- transfer encodings ---- */

static int b64val(uchar c)
{
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

static int hexval(uchar c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* base64 decoding. strict: white space only between the characters (else -1); lenient
 * (encoded words, search): other characters skipped. Stops at '=' padding. */
static int b64_cat_x(stralloc *sa, char const *s, size_t len, int strict)
{
  unsigned int acc = 0, nb = 0;
  size_t i;
  if (!stralloc_readyplus(sa, len / 4 * 3 + 3)) return 0;
  for (i = 0; i < len; i++) {
    int v = b64val(s[i]);
    if (s[i] == '=') break;
    if (v < 0) {
      if (strict && s[i] != '\n' && s[i] != '\r' && s[i] != ' ' && s[i] != '\t') return -1;
      continue;
    }
    acc = (acc << 6) | (unsigned int)v;
    if (++nb == 4) {
      sa->s[sa->len++] = (char)(acc >> 16);
      sa->s[sa->len++] = (char)(acc >> 8);
      sa->s[sa->len++] = (char)acc;
      acc = 0;
      nb = 0;
    }
  }
  if (strict) {
    if (nb == 1) return -1;
    for (; i < len; i++)
      if (s[i] != '=' && s[i] != '\n' && s[i] != '\r' && s[i] != ' ' && s[i] != '\t') return -1;
  }
  if (nb == 2) sa->s[sa->len++] = (char)(acc >> 4);
  else if (nb == 3) {
    sa->s[sa->len++] = (char)(acc >> 10);
    sa->s[sa->len++] = (char)(acc >> 2);
  }
  return 1;
}

static int b64_cat(stralloc *sa, char const *s, size_t len)
{
  return b64_cat_x(sa, s, len, 0);
}

/* quoted-printable: "=XX", soft breaks, trailing white space removed; invalid '=' kept;
 * hard line breaks as crlf ("\r\n") or "\n" */
static int qp_cat_x(stralloc *sa, char const *s, size_t len, int header, int crlf, int strict)
{
  size_t i = 0;
  if (!stralloc_readyplus(sa, len + len / 8 + 2)) return 0;
  while (i < len) {
    size_t e = i, le;
    char const *p = memchr(s + i, '\n', len - i);
    int haslf = p != 0;
    e = p ? (size_t)(p - s) : len;
    le = e;
    if (le > i && s[le - 1] == '\r') le--;
    if (!header)
      while (le > i && (s[le - 1] == ' ' || s[le - 1] == '\t')) le--;
    for (; i < le; i++) {
      char ch = s[i];
      if (ch == '=' ) {
        int a, b;
        if (i + 1 == le) { haslf = -1; i++; break; } /* soft line break */
        if (i + 2 < le && (a = hexval(s[i + 1])) >= 0 && (b = hexval(s[i + 2])) >= 0) {
          char o = (char)(a * 16 + b);
          if (!stralloc_catb(sa, &o, 1)) return 0;
          i += 2;
          continue;
        }
        if (strict) return -1;
      } else if (ch == '_' && header) ch = ' ';
      if (!stralloc_catb(sa, &ch, 1)) return 0;
    }
    if (haslf > 0 && !(crlf ? stralloc_catb(sa, "\r\n", 2) : stralloc_catb(sa, "\n", 1)))
      return 0;
    i = p ? e + 1 : len;
  }
  return 1;
}

static int qp_cat(stralloc *sa, char const *s, size_t len, int header, int crlf)
{
  return qp_cat_x(sa, s, len, header, crlf, 0);
}

/* 1 identity, 2 base64, 3 quoted-printable, 0 unknown, -1 allocation failure. The field is
 * read even without MIME-Version (as Dovecot's BINARY does). */
static int cte_kind(mime_msg const *m, mime_part const *p)
{
  static pdata const zero;
  pdata d = zero;
  mime_part q = *p;
  int k = 1;
  q.flags |= MIME_F_ISMIME;
  if (!pdata_get(&d, &q, m->s)) k = -1;
  else if (d.cte) {
    if (eqci(d.cte, d.ctel, "base64")) k = 2;
    else if (eqci(d.cte, d.ctel, "quoted-printable")) k = 3;
    else if (eqci(d.cte, d.ctel, "7bit") || eqci(d.cte, d.ctel, "8bit")
             || eqci(d.cte, d.ctel, "binary"))
      k = 1;
    else k = 0;
  }
  pdata_free(&d);
  return k;
}

int mime_binary_cat(stralloc *sa, mime_msg const *m, unsigned int i)
{
  mime_part const *p;
  int k, r;
  size_t l0 = sa->len;
  if (i >= m->n) return 1;
  p = &m->part[i];
  k = p->kind == MIME_LEAF ? cte_kind(m, p) : 1;
  if (k < 0) return 0;
  if (!k) return -1;
  if (k == 2) r = b64_cat_x(sa, m->s + p->body_off, p->body_len, 1);
  else if (k == 3) r = qp_cat_x(sa, m->s + p->body_off, p->body_len, 0, 1, 1);
  else {
    /* as is (NUL kept: then it is binary, sent as literal8) */
    if (!wire_cat_x(sa, m->s + p->body_off, p->body_len,
                    p->body_off ? m->s[p->body_off - 1] : 0, 0, SIZE_MAX, 0))
      return 0;
    return memchr(sa->s + l0, 0, sa->len - l0) ? 2 : 1;
  }
  if (r < 0) {
    sa->len = l0;
    return -3;
  }
  return r ? 2 : 0;
}

int mime_binary_size(mime_msg const *m, unsigned int i, size_t *size)
{
  stralloc t = STRALLOC_ZERO;
  int r;
  if (i >= m->n) {
    *size = 0;
    return 1;
  }
  if (m->part[i].kind != MIME_LEAF || cte_kind(m, &m->part[i]) == 1) {
    *size = m->part[i].body_wsize;
    return 1;
  }
  r = mime_binary_cat(&t, m, i);
  *size = t.len;
  stralloc_free(&t);
  return r;
}

/* ---- charsets and RFC 2047 ---- */

static unsigned short const cp1252[32] = {
  0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160,
  0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd, 0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022,
  0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178
};

static int cat_utf8(stralloc *sa, unsigned int c)
{
  char b[3];
  if (c < 0x80) { b[0] = (char)c; return stralloc_catb(sa, b, 1); }
  if (c < 0x800) {
    b[0] = (char)(0xc0 | (c >> 6));
    b[1] = (char)(0x80 | (c & 0x3f));
    return stralloc_catb(sa, b, 2);
  }
  b[0] = (char)(0xe0 | (c >> 12));
  b[1] = (char)(0x80 | ((c >> 6) & 0x3f));
  b[2] = (char)(0x80 | (c & 0x3f));
  return stralloc_catb(sa, b, 3);
}

/* length of a valid UTF-8 sequence at s (1..4), 0 if invalid */
static size_t utf8_seq(char const *s, size_t len)
{
  uchar c = s[0];
  size_t n, i;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) n = 3;
  else if (c >= 0xf0 && c <= 0xf4) n = 4;
  else return 0;
  if (len < n) return 0;
  for (i = 1; i < n; i++)
    if (((uchar)s[i] & 0xc0) != 0x80) return 0;
  return n;
}

enum { CS_UTF8, CS_LATIN1, CS_CP1252, CS_LATIN9, CS_OTHER };

static int charset_kind(char const *c, size_t l)
{
  if (!l || eqci(c, l, "utf-8") || eqci(c, l, "utf8") || eqci(c, l, "us-ascii")
      || eqci(c, l, "ascii"))
    return CS_UTF8;
  if (eqci(c, l, "iso-8859-1") || eqci(c, l, "latin1") || eqci(c, l, "iso8859-1"))
    return CS_LATIN1;
  if (eqci(c, l, "windows-1252") || eqci(c, l, "cp1252")) return CS_CP1252;
  if (eqci(c, l, "iso-8859-15")) return CS_LATIN9;
  return CS_OTHER;
}

/* Appends s[0..len) in charset cs as UTF-8; invalid UTF-8 bytes are read as Latin-1 */
static int to_utf8(stralloc *sa, char const *s, size_t len, int cs)
{
  size_t i = 0;
  while (i < len) {
    uchar c = s[i];
    if (c < 0x80) {
      size_t j = i;
      while (j < len && (uchar)s[j] < 0x80) j++;
      if (!stralloc_catb(sa, s + i, j - i)) return 0;
      i = j;
      continue;
    }
    if (cs == CS_UTF8 || cs == CS_OTHER) {
      size_t n = utf8_seq(s + i, len - i);
      if (n) {
        if (!stralloc_catb(sa, s + i, n)) return 0;
        i += n;
        continue;
      }
    }
    {
      unsigned int u = c;
      if (cs == CS_CP1252 && c < 0xa0) u = cp1252[c - 0x80];
      else if (cs == CS_LATIN9) {
        switch (c) {
        case 0xa4: u = 0x20ac; break;
        case 0xa6: u = 0x160; break;
        case 0xa8: u = 0x161; break;
        case 0xb4: u = 0x17d; break;
        case 0xb8: u = 0x17e; break;
        case 0xbc: u = 0x152; break;
        case 0xbd: u = 0x153; break;
        case 0xbe: u = 0x178; break;
        }
      }
      if (!cat_utf8(sa, u)) return 0;
      i++;
    }
  }
  return 1;
}

/* Appends s[0..len) in the charset named cs[0..csl) as UTF-8: the common charsets by the
 * tables above, any other through iconv (glibc's); when iconv does not know the charset or
 * the text is invalid in it, the bytes are taken as UTF-8 (Latin-1 where invalid). */
static int charset_to_utf8(stralloc *sa, char const *s, size_t len, char const *cs, size_t csl)
{
  int k = charset_kind(cs, csl);
  char name[64];
  iconv_t cd;
  size_t l0 = sa->len;
  char *in = (char *)s, *out;
  size_t inleft = len, outleft;
  if (k != CS_OTHER || csl >= sizeof name) return to_utf8(sa, s, len, k);
  memcpy(name, cs, csl);
  name[csl] = 0;
  cd = iconv_open("UTF-8", name);
  if (cd == (iconv_t)-1) return to_utf8(sa, s, len, CS_OTHER);
  while (inleft) {
    if (!stralloc_readyplus(sa, inleft * 4 + 16)) { iconv_close(cd); return 0; }
    out = sa->s + sa->len;
    outleft = sa->a - sa->len;
    if (iconv(cd, &in, &inleft, &out, &outleft) == (size_t)-1 && errno != E2BIG) {
      sa->len = l0;
      iconv_close(cd);
      return to_utf8(sa, s, len, CS_OTHER);
    }
    sa->len = out - sa->s;
  }
  iconv_close(cd);
  return 1;
}

/* An encoded word at v[i..): =?charset[*lang]?B|Q?text?= ; sets its end, the charset and
 * the encoded text. */
static int ew_at(char const *v, size_t len, size_t i, size_t *end, char const **cs,
                 size_t *csl, int *b64, char const **t, size_t *tl)
{
  size_t p = i + 2, q;
  if (len - i < 8 || v[i] != '=' || v[i + 1] != '?') return 0;
  q = p;
  while (q < len && v[q] != '?' && v[q] != ' ' && v[q] != '\t' && v[q] != '\n') q++;
  if (q >= len || v[q] != '?' || q == p) return 0;
  *cs = v + p;
  *csl = q - p;
  {
    char const *star = memchr(*cs, '*', *csl);
    if (star) *csl = star - *cs;
  }
  q++;
  if (q + 2 >= len || v[q + 1] != '?') return 0;
  if (v[q] == 'B' || v[q] == 'b') *b64 = 1;
  else if (v[q] == 'Q' || v[q] == 'q') *b64 = 0;
  else return 0;
  q += 2;
  *t = v + q;
  while (q + 1 < len && !(v[q] == '?' && v[q + 1] == '=')) {
    if (v[q] == ' ' || v[q] == '\t' || v[q] == '\n' || v[q] == '\r') return 0;
    q++;
  }
  if (q + 1 >= len) return 0;
  *tl = v + q - *t;
  *end = q + 2;
  return 1;
}

int mime_header_decode(stralloc *sa, char const *v, size_t vlen)
{
  size_t i = 0, start = sa->len, wsstart = 0;
  int lastew = 0;
  stralloc raw = STRALLOC_ZERO;
  while (i < vlen) {
    size_t end, csl, tl;
    char const *cs, *t;
    int b64;
    uchar c = v[i];
    if (c == '\r' || c == '\n') { i++; continue; }
    if (c == '=' && ew_at(v, vlen, i, &end, &cs, &csl, &b64, &t, &tl)) {
      if (lastew) sa->len = wsstart; /* white space between encoded words goes */
      raw.len = 0;
      if (!(b64 ? b64_cat(&raw, t, tl) : qp_cat(&raw, t, tl, 1, 0))) goto nomem;
      if (!charset_to_utf8(sa, raw.s ? raw.s : "", raw.len, cs, csl)) goto nomem;
      i = end;
      lastew = 1;
      wsstart = sa->len;
      continue;
    }
    if (c == ' ' || c == '\t') {
      if (!stralloc_catb(sa, " ", 1)) goto nomem;
      i++;
      continue;
    }
    {
      size_t j = i;
      while (j < vlen && v[j] != ' ' && v[j] != '\t' && v[j] != '\r' && v[j] != '\n'
             && !(v[j] == '=' && j + 1 < vlen && v[j + 1] == '?'))
        j++;
      if (j == i) j++;
      if (!to_utf8(sa, v + i, j - i, CS_UTF8)) goto nomem;
      i = j;
      lastew = 0;
    }
  }
  /* trim */
  if (sa->s) {
    size_t a = start, b = sa->len;
    while (a < b && sa->s[a] == ' ') a++;
    while (b > a && sa->s[b - 1] == ' ') b--;
    memmove(sa->s + start, sa->s + a, b - a);
    sa->len = start + (b - a);
  }
  stralloc_free(&raw);
  return 1;
nomem:
  stralloc_free(&raw);
  return 0;
}

/* ---- search ---- */

long mime_find_ci(char const *hay, size_t hlen, char const *needle, size_t nlen)
{
  size_t i = 0;
  uchar f, F;
  if (!nlen) return 0;
  if (nlen > hlen) return -1;
  f = (uchar)lower((uchar)needle[0]);
  F = (f >= 'a' && f <= 'z') ? (uchar)(f - 32) : f;
  while (i + nlen <= hlen) {
    char const *a = memchr(hay + i, f, hlen - nlen + 1 - i);
    char const *b = f != F ? memchr(hay + i, F, hlen - nlen + 1 - i) : 0;
    size_t j;
    if (!a || (b && b < a)) a = b;
    if (!a) return -1;
    j = a - hay;
    if (memeqci(hay + j, needle, nlen)) return (long)j;
    i = j + 1;
  }
  return -1;
}

static int is_address_field(char const *n, size_t l)
{
  static char const *const names[] = { "From", "Sender", "Reply-To", "To", "Cc", "Bcc",
                                       "Resent-From", "Resent-Sender", "Resent-To",
                                       "Resent-Cc", "Resent-Bcc" };
  unsigned int i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (eqci(n, l, names[i])) return 1;
  return 0;
}

int mime_search_header(mime_msg const *m, unsigned int i, char const *name, size_t namelen,
                       char const *needle, size_t nlen, stralloc *tmp)
{
  mime_part const *p;
  size_t pos = 0, vl;
  char const *v;
  if (i >= m->n) return 0;
  p = &m->part[i];
  if (p->kind == MIME_MESSAGE && p->child != MIME_NONE && i) p = &m->part[p->child];
  while (mime_header_next(m->s + p->hdr_off, p->hdr_len, name, namelen, &pos, &v, &vl)) {
    if (!nlen) return 1;
    tmp->len = 0;
    if (is_address_field(name, namelen)) {
      /* addresses are matched in their normalized form, comments dropped (as Dovecot) */
      if (!addresses_x(tmp, &v, &vl, 1, 1, 0)) return -1;
    } else if (!mime_header_decode(tmp, v, vl)) return -1;
    if (mime_find_ci(tmp->s, tmp->len, needle, nlen) >= 0) return 1;
  }
  return 0;
}

/* the decoded header of part p into tmp (field: value lines) */
static int header_text(stralloc *tmp, mime_msg const *m, mime_part const *p)
{
  hfield f;
  size_t pos = 0;
  while (hdr_next(m->s + p->hdr_off, p->hdr_len, &pos, &f))
    if (!stralloc_catb(tmp, f.name, f.namelen) || !stralloc_catb(tmp, ": ", 2)
        || !mime_header_decode(tmp, f.val, f.vallen) || !stralloc_catb(tmp, "\n", 1))
      return 0;
  return 1;
}

int mime_search_text(mime_msg const *m, int text, char const *needle, size_t nlen,
                     stralloc *tmp)
{
  unsigned int i;
  stralloc raw = STRALLOC_ZERO;
  int r = 0;
  static pdata const zero;
  if (!m->n) return 0;
  if (!nlen) return 1;
  for (i = 0; i < m->n && !r; i++) {
    mime_part const *p = &m->part[i];
    tmp->len = 0;
    if ((text && !i) || (i && p->parent != MIME_NONE && m->part[p->parent].kind == MIME_MESSAGE)) {
      if (!header_text(tmp, m, p)) { r = -1; break; }
      if (mime_find_ci(tmp->s, tmp->len, needle, nlen) >= 0) { r = 1; break; }
      tmp->len = 0;
    }
    if (p->kind != MIME_LEAF || !(p->flags & MIME_F_TEXT)) continue;
    {
      pdata d = zero;
      int k;
      size_t cl, csl = 0;
      char const *c;
      char csname[64];
      if (!pdata_get(&d, p, m->s)) { pdata_free(&d); r = -1; break; }
      c = param_get(&d.ctp, "charset", &cl);
      if (c && cl < sizeof csname) {
        memcpy(csname, c, cl);
        csl = cl;
      }
      pdata_free(&d);
      k = cte_kind(m, p);
      raw.len = 0;
      if (!(k == 2 ? b64_cat(&raw, m->s + p->body_off, p->body_len)
            : k == 3 ? qp_cat(&raw, m->s + p->body_off, p->body_len, 0, 0)
                     : stralloc_catb(&raw, m->s + p->body_off, p->body_len))) {
        r = -1;
        break;
      }
      if (!charset_to_utf8(tmp, raw.s ? raw.s : "", raw.len, csname, csl)) { r = -1; break; }
      if (mime_find_ci(tmp->s, tmp->len, needle, nlen) >= 0) r = 1;
    }
  }
  stralloc_free(&raw);
  return r;
}

/* ---- dates ---- */

static int64_t days_from_civil(int64_t y, unsigned int mo, unsigned int d)
{
  int64_t era;
  unsigned int yoe, doy, doe;
  y -= mo <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = (unsigned int)(y - era * 400);
  doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void dskip(char const *s, size_t len, size_t *i)
{
  for (;;) {
    while (*i < len && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\r' || s[*i] == '\n'))
      (*i)++;
    if (*i < len && s[*i] == '(') {
      int level = 0;
      while (*i < len) {
        if (s[*i] == '\\') (*i)++;
        else if (s[*i] == '(') level++;
        else if (s[*i] == ')' && !--level) { (*i)++; break; }
        (*i)++;
      }
      continue;
    }
    break;
  }
}

static int dnum(char const *s, size_t len, size_t *i, unsigned int maxdig, long *n)
{
  size_t st = *i;
  long v = 0;
  while (*i < len && s[*i] >= '0' && s[*i] <= '9' && *i - st < maxdig)
    v = v * 10 + (s[(*i)++] - '0');
  if (*i == st) return 0;
  *n = v;
  return (int)(*i - st);
}

int mime_date_parse(char const *s, size_t len, int64_t *t, int *zone)
{
  static char const months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
  size_t i = 0;
  long day, mon = -1, year, hh, mm, ss = 0;
  int yd, z = 0, k;
  dskip(s, len, &i);
  /* optional day name and comma */
  if (i + 3 <= len && ((s[i] | 32) >= 'a' && (s[i] | 32) <= 'z')) {
    while (i < len && ((s[i] | 32) >= 'a' && (s[i] | 32) <= 'z')) i++;
    dskip(s, len, &i);
    if (i < len && s[i] == ',') i++;
    dskip(s, len, &i);
  }
  if (!dnum(s, len, &i, 2, &day) || day < 1 || day > 31) return 0;
  dskip(s, len, &i);
  if (i + 3 > len) return 0;
  for (k = 0; k < 12; k++)
    if (lower((uchar)s[i]) == months[3 * k] && lower((uchar)s[i + 1]) == months[3 * k + 1]
        && lower((uchar)s[i + 2]) == months[3 * k + 2])
      mon = k + 1;
  if (mon < 0) return 0;
  i += 3;
  while (i < len && ((s[i] | 32) >= 'a' && (s[i] | 32) <= 'z')) i++; /* "June" */
  dskip(s, len, &i);
  if (!(yd = dnum(s, len, &i, 4, &year))) return 0;
  if (yd == 2) year += year < 50 ? 2000 : 1900;
  else if (yd == 3) year += 1900;
  dskip(s, len, &i);
  if (!dnum(s, len, &i, 2, &hh) || hh > 23) return 0;
  dskip(s, len, &i);
  if (i >= len || s[i] != ':') return 0;
  i++;
  dskip(s, len, &i);
  if (!dnum(s, len, &i, 2, &mm) || mm > 59) return 0;
  dskip(s, len, &i);
  if (i < len && s[i] == ':') {
    i++;
    dskip(s, len, &i);
    if (!dnum(s, len, &i, 2, &ss) || ss > 60) return 0;
    dskip(s, len, &i);
  }
  if (i < len && (s[i] == '+' || s[i] == '-')) {
    long hm;
    int sign = s[i] == '-' ? -1 : 1;
    i++;
    if (dnum(s, len, &i, 4, &hm) == 4 && hm % 100 < 60) z = sign * (int)(hm / 100 * 60 + hm % 100);
  } else if (i < len) {
    static struct { char const *n; int z; } const zones[] = {
      { "UT", 0 }, { "GMT", 0 }, { "UTC", 0 }, { "EST", -300 }, { "EDT", -240 },
      { "CST", -360 }, { "CDT", -300 }, { "MST", -420 }, { "MDT", -360 }, { "PST", -480 },
      { "PDT", -420 }, { "Z", 0 }
    };
    size_t st = i;
    unsigned int q;
    while (i < len && ((s[i] | 32) >= 'a' && (s[i] | 32) <= 'z')) i++;
    for (q = 0; q < sizeof zones / sizeof zones[0]; q++)
      if (eqci(s + st, i - st, zones[q].n)) { z = zones[q].z; break; }
  }
  {
    static unsigned char const mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (day > mdays[mon - 1]) return 0;
  }
  *t = days_from_civil(year, (unsigned int)mon, (unsigned int)day) * 86400 + hh * 3600 + mm * 60
       + ss - (int64_t)z * 60;
  *zone = z;
  return 1;
}

int mime_date(mime_msg const *m, unsigned int i, int64_t *t, int *zone)
{
  mime_part const *p;
  size_t pos = 0, vl;
  char const *v;
  if (i >= m->n) return 0;
  p = &m->part[i];
  if (p->kind == MIME_MESSAGE && p->child != MIME_NONE && i) p = &m->part[p->child];
  if (!mime_header_next(m->s + p->hdr_off, p->hdr_len, "Date", 4, &pos, &v, &vl)) return 0;
  return mime_date_parse(v, vl, t, zone);
}
