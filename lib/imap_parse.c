/* imap_parse: the IMAP command grammar. See imap_parse.h. */
#include <string.h>
#include "imap_parse.h"

static int lower(int c)
{
  return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

int imap_ieq(char const *s, size_t len, char const *word)
{
  size_t i;
  for (i = 0; i < len; i++)
    if (!word[i] || lower((unsigned char)s[i]) != lower((unsigned char)word[i])) return 0;
  return !word[len];
}

int imap_arg_is(imap_arg const *a, char const *word)
{
  if (a->type != IMAP_ATOM && a->type != IMAP_QUOTED && a->type != IMAP_LITERAL) return 0;
  return imap_ieq(a->s, a->len, word);
}

int imap_is_string(imap_arg const *a)
{
  return a->type == IMAP_ATOM || a->type == IMAP_QUOTED || a->type == IMAP_LITERAL;
}

int imap_is_nil(imap_arg const *a)
{
  return a->type == IMAP_ATOM && imap_ieq(a->s, a->len, "NIL");
}

uint32_t imap_next(imap_cmd const *c, uint32_t i)
{
  return c->arg[i].type == IMAP_LIST ? c->arg[i].end : i + 1;
}

int imap_number64(char const *s, size_t len, uint64_t *u)
{
  uint64_t v = 0;
  size_t i;
  if (!len || len > 20) return 0;
  for (i = 0; i < len; i++) {
    unsigned d;
    if (s[i] < '0' || s[i] > '9') return 0;
    d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return 0;
    v = v * 10 + d;
  }
  *u = v;
  return 1;
}

int imap_number(char const *s, size_t len, uint32_t *u)
{
  uint64_t v;
  if (!imap_number64(s, len, &v) || v > UINT32_MAX) return 0;
  *u = (uint32_t)v;
  return 1;
}

int imap_literal_tail(char const *line, size_t len, uint64_t *n, int *nonsync, size_t *at)
{
  size_t end, start;
  int plus = 0;
  if (!len || line[len - 1] != '}') return 0;
  end = len - 1;
  if (end && (line[end - 1] == '+' || line[end - 1] == '-')) {
    if (line[end - 1] == '-') return -1;
    plus = 1;
    end--;
  }
  start = end;
  while (start && line[start - 1] >= '0' && line[start - 1] <= '9') start--;
  if (!start || line[start - 1] != '{') return 0;
  if (start == end || !imap_number64(line + start, end - start, n)) return -1;
  start--;
  if (start && line[start - 1] == '~') start--;
  *nonsync = plus;
  *at = start;
  return 1;
}

/* ---- the command parser ---- */

typedef struct pstate_s pstate;
struct pstate_s {
  char *b;
  size_t len, pos;
  imap_cmd *c;
};

static int is_atom_char(unsigned char ch)
{
  if (ch <= 0x20 || ch == 0x7f) return 0;
  switch (ch) {
    case '(': case ')': case '{': case '"': return 0;
    default: return 1;
  }
}

static int spooled(imap_cmd const *c, size_t at)
{
  unsigned int i;
  for (i = 0; i < c->nspool; i++)
    if (c->spool_at[i] == at) return (int)i;
  return -1;
}

static int add(pstate *p, uint16_t type, char *s, size_t len)
{
  imap_arg *a;
  if (p->c->nargs >= IMAP_ARGS_MAX) return IMAP_ETOOMANY;
  a = &p->c->arg[p->c->nargs++];
  a->type = type;
  a->s = s;
  a->len = len;
  a->end = p->c->nargs;
  a->binary = 0;
  a->spool = 0;
  return IMAP_OK;
}

/* At a '{' or '~{': a literal. */
static int literal(pstate *p)
{
  size_t at = p->pos, i = p->pos;
  uint64_t n;
  int bin = 0, sp, r;
  if (p->b[i] == '~') {
    bin = 1;
    i++;
  }
  if (i >= p->len || p->b[i] != '{') return IMAP_ESYNTAX;
  i++;
  {
    size_t d = i;
    while (i < p->len && p->b[i] >= '0' && p->b[i] <= '9') i++;
    if (i == d || !imap_number64(p->b + d, i - d, &n)) return IMAP_ESYNTAX;
  }
  if (i < p->len && p->b[i] == '+') i++;
  if (i >= p->len || p->b[i] != '}') return IMAP_ESYNTAX;
  i++;
  if (i < p->len && p->b[i] == '\r') i++;
  if (i >= p->len || p->b[i] != '\n') return IMAP_ESYNTAX;
  i++;
  sp = spooled(p->c, at);
  if (sp >= 0) {
    r = add(p, IMAP_SPOOLED, 0, (size_t)n);
    if (r) return r;
    p->c->arg[p->c->nargs - 1].spool = (uint8_t)sp;
  } else {
    if (n > p->len - i) return IMAP_ESYNTAX;
    r = add(p, IMAP_LITERAL, p->b + i, (size_t)n);
    if (r) return r;
    i += (size_t)n;
  }
  p->c->arg[p->c->nargs - 1].binary = (uint8_t)bin;
  p->pos = i;
  return IMAP_OK;
}

static int quoted(pstate *p)
{
  size_t i = p->pos + 1, o = p->pos + 1;
  char *start = p->b + o;
  for (;;) {
    unsigned char ch;
    if (i >= p->len) return IMAP_ESYNTAX;
    ch = (unsigned char)p->b[i];
    if (ch == '"') break;
    if (ch == '\r' || ch == '\n' || !ch) return IMAP_ESYNTAX;
    if (ch == '\\') {
      if (i + 1 >= p->len) return IMAP_ESYNTAX;
      ch = (unsigned char)p->b[i + 1];
      if (ch != '\\' && ch != '"') return IMAP_ESYNTAX;
      i++;
    }
    p->b[o++] = (char)ch;
    i++;
  }
  p->pos = i + 1;
  return add(p, IMAP_QUOTED, start, (size_t)(p->b + o - start));
}

/* An atom; '[' runs to its matching ']' (bounded by the line). */
static int atom(pstate *p)
{
  size_t i = p->pos;
  while (i < p->len) {
    unsigned char ch = (unsigned char)p->b[i];
    if (ch == '[') {
      /* to the matching ']' on this line; without one, '[' is an atom character */
      unsigned int depth = 0;
      size_t k = i;
      for (;;) {
        if (k >= p->len) break;
        ch = (unsigned char)p->b[k];
        if (ch == '\r' || ch == '\n' || !ch) break;
        if (ch == '[') depth++;
        else if (ch == ']' && !--depth) break;
        k++;
      }
      if (k < p->len && p->b[k] == ']') {
        i = k + 1;
        continue;
      }
      i++;
      continue;
    }
    if (!is_atom_char(ch)) break;
    i++;
  }
  if (i == p->pos) return IMAP_ESYNTAX;
  {
    int r = add(p, IMAP_ATOM, p->b + p->pos, i - p->pos);
    p->pos = i;
    return r;
  }
}

static int at_end(pstate const *p)
{
  size_t i = p->pos;
  if (i < p->len && p->b[i] == '\r') i++;
  if (i < p->len && p->b[i] == '\n') i++;
  return i == p->len;
}

static int one(pstate *p, unsigned int depth);

/* "(" elements ")" at p->pos. */
static int list(pstate *p, unsigned int depth)
{
  uint32_t me;
  int r;
  if (depth + 1 > IMAP_DEPTH_MAX) return IMAP_EDEPTH;
  r = add(p, IMAP_LIST, 0, 0);
  if (r) return r;
  me = p->c->nargs - 1;
  p->pos++;
  if (p->pos < p->len && p->b[p->pos] != ')') {
    for (;;) {
      r = one(p, depth + 1);
      if (r) return r;
      if (p->pos < p->len && p->b[p->pos] == ' ') {
        p->pos++;
        continue;
      }
      break;
    }
  }
  if (p->pos >= p->len || p->b[p->pos] != ')') return IMAP_ESYNTAX;
  p->pos++;
  p->c->arg[me].end = p->c->nargs;
  return IMAP_OK;
}

/* One element at p->pos (no leading space). */
static int one(pstate *p, unsigned int depth)
{
  unsigned char ch;
  if (p->pos >= p->len) return IMAP_ESYNTAX;
  ch = (unsigned char)p->b[p->pos];
  if (ch == '(') return list(p, depth);
  if (ch == '"') return quoted(p);
  if (ch == '{' || (ch == '~' && p->pos + 1 < p->len && p->b[p->pos + 1] == '{'))
    return literal(p);
  return atom(p);
}

int imap_parse(char *buf, size_t len, imap_cmd *c)
{
  pstate p = {buf, len, 0, c};
  size_t i = 0;
  c->nargs = 0;
  c->tag = buf;
  c->taglen = 0;
  c->name = buf;
  c->namelen = 0;
  /* tag: 1*<any ASTRING-CHAR except "+"> */
  while (i < len && is_atom_char((unsigned char)buf[i]) && buf[i] != '+' && buf[i] != '%' &&
         buf[i] != '*' && buf[i] != ']' && buf[i] != '\\')
    i++;
  if (!i || i > IMAP_TAG_MAX || i >= len || buf[i] != ' ') return IMAP_ENOTAG;
  c->taglen = i;
  i++;
  c->name = buf + i;
  while (i < len && ((buf[i] >= 'A' && buf[i] <= 'Z') || (buf[i] >= 'a' && buf[i] <= 'z') ||
                     (buf[i] >= '0' && buf[i] <= '9') || buf[i] == '-' || buf[i] == '.'))
    i++;
  c->namelen = (size_t)(buf + i - c->name);
  if (!c->namelen) return IMAP_ESYNTAX;
  p.pos = i;
  for (;;) {
    int r;
    if (at_end(&p)) return IMAP_OK;
    if (p.b[p.pos] != ' ') return IMAP_ESYNTAX;
    p.pos++;
    r = one(&p, 0);
    if (r) return r;
  }
}

/* ---- sequence sets ---- */

static int seqnum(char const *s, size_t len, uint32_t *u)
{
  if (len == 1 && s[0] == '*') {
    *u = IMAP_STAR;
    return 1;
  }
  if (!len || s[0] == '0') return 0;
  return imap_number(s, len, u) && *u;
}

int imap_seqset(char const *s, size_t len, imap_range *r, size_t max)
{
  size_t i = 0, n = 0;
  if (!len) return -1;
  while (i <= len) {
    size_t j = i, colon = 0;
    uint32_t a, b;
    while (j < len && s[j] != ',') {
      if (s[j] == ':') {
        if (colon) return -1;
        colon = j;
      }
      j++;
    }
    if (j == i) return -1;
    if (colon) {
      if (!seqnum(s + i, colon - i, &a) || !seqnum(s + colon + 1, j - colon - 1, &b)) return -1;
    } else {
      if (!seqnum(s + i, j - i, &a)) return -1;
      b = a;
    }
    if (n >= max) return -1;
    if (a > b && a != IMAP_STAR && b != IMAP_STAR) {
      uint32_t t = a;
      a = b;
      b = t;
    }
    r[n].lo = a;
    r[n].hi = b;
    n++;
    if (j == len) break;
    i = j + 1;
    if (i == len) return -1;
  }
  return (int)n;
}

int imap_seqset_has(imap_range const *r, size_t n, uint32_t u, uint32_t star)
{
  size_t i;
  for (i = 0; i < n; i++) {
    uint32_t lo = r[i].lo == IMAP_STAR ? star : r[i].lo;
    uint32_t hi = r[i].hi == IMAP_STAR ? star : r[i].hi;
    if (lo > hi) {
      uint32_t t = lo;
      lo = hi;
      hi = t;
    }
    if (u >= lo && u <= hi) return 1;
  }
  return 0;
}

/* ---- dates ---- */

static char const months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static long days_from_civil(long y, unsigned m, unsigned d)
{
  long era;
  unsigned yoe, doy, doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = (unsigned)(y - era * 400);
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (long)doe - 719468;
}

static int digits(char const *s, size_t n, unsigned *v)
{
  size_t i;
  *v = 0;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    *v = *v * 10 + (unsigned)(s[i] - '0');
  }
  return 1;
}

/* "d-Mon-yyyy" at s: returns the octets used (0 bad) and the day count. */
static size_t date_part(char const *s, size_t len, long *days)
{
  size_t i = 0, dl;
  unsigned d, y, m;
  if (len && s[0] == ' ') i = 1;
  dl = i;
  while (dl < len && dl < i + 2 && s[dl] >= '0' && s[dl] <= '9') dl++;
  if (dl == i || !digits(s + i, dl - i, &d) || !d || d > 31) return 0;
  if (dl + 9 > len || s[dl] != '-' || s[dl + 4] != '-') return 0;
  for (m = 0; m < 12; m++)
    if (imap_ieq(s + dl + 1, 3, months[m])) break;
  if (m == 12) return 0;
  if (!digits(s + dl + 5, 4, &y)) return 0;
  *days = days_from_civil((long)y, m + 1, d);
  return dl + 9;
}

int imap_date(char const *s, size_t len, time_t *t)
{
  long days;
  size_t n = date_part(s, len, &days);
  if (!n || n != len || s[0] == ' ') return 0;
  *t = (time_t)days * 86400;
  return 1;
}

int imap_datetime(char const *s, size_t len, time_t *t)
{
  long days;
  unsigned hh, mm, ss, zh, zm;
  size_t n = date_part(s, len, &days);
  long off;
  if (!n || len != n + 15) return 0;
  s += n;
  if (s[0] != ' ' || s[3] != ':' || s[6] != ':' || s[9] != ' ') return 0;
  if (!digits(s + 1, 2, &hh) || !digits(s + 4, 2, &mm) || !digits(s + 7, 2, &ss)) return 0;
  if (hh > 23 || mm > 59 || ss > 60) return 0;
  if ((s[10] != '+' && s[10] != '-') || !digits(s + 11, 2, &zh) || !digits(s + 13, 2, &zm))
    return 0;
  if (zm > 59) return 0;
  off = (long)(zh * 3600 + zm * 60);
  if (s[10] == '-') off = -off;
  *t = (time_t)days * 86400 + hh * 3600 + mm * 60 + ss - off;
  return 1;
}

size_t imap_datetime_fmt(char *s, time_t t)
{
  long days = (long)(t / 86400), secs = (long)(t % 86400);
  long z, era, y;
  unsigned doe, yoe, doy, mp, d, m;
  if (secs < 0) {
    secs += 86400;
    days--;
  }
  z = days + 719468;
  era = (z >= 0 ? z : z - 146096) / 146097;
  doe = (unsigned)(z - era * 146097);
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  y = (long)yoe + era * 400;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  if (y < 0 || y > 9999) y = 1970;
  s[0] = (char)('0' + d / 10);
  s[1] = (char)('0' + d % 10);
  s[2] = '-';
  memcpy(s + 3, months[m - 1], 3);
  s[6] = '-';
  s[7] = (char)('0' + y / 1000);
  s[8] = (char)('0' + y / 100 % 10);
  s[9] = (char)('0' + y / 10 % 10);
  s[10] = (char)('0' + y % 10);
  s[11] = ' ';
  s[12] = (char)('0' + secs / 36000);
  s[13] = (char)('0' + secs / 3600 % 10);
  s[14] = ':';
  s[15] = (char)('0' + secs % 3600 / 600);
  s[16] = (char)('0' + secs % 3600 / 60 % 10);
  s[17] = ':';
  s[18] = (char)('0' + secs % 60 / 10);
  s[19] = (char)('0' + secs % 10);
  memcpy(s + 20, " +0000", 6);
  return IMAP_DATETIME_LEN;
}

/* ---- modified UTF-7 ---- */

static char const b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64val(unsigned char c)
{
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == ',') return 63;
  return -1;
}

static int put_utf8(char *out, size_t max, size_t *o, uint32_t cp)
{
  unsigned char b[4];
  size_t n, k;
  if (cp < 0x80) {
    b[0] = (unsigned char)cp;
    n = 1;
  } else if (cp < 0x800) {
    b[0] = (unsigned char)(0xc0 | (cp >> 6));
    b[1] = (unsigned char)(0x80 | (cp & 0x3f));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = (unsigned char)(0xe0 | (cp >> 12));
    b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    b[2] = (unsigned char)(0x80 | (cp & 0x3f));
    n = 3;
  } else {
    b[0] = (unsigned char)(0xf0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    b[3] = (unsigned char)(0x80 | (cp & 0x3f));
    n = 4;
  }
  if (max - *o < n) return 0;
  for (k = 0; k < n; k++) out[(*o)++] = (char)b[k];
  return 1;
}

long imap_mutf7_to_utf8(char const *s, size_t len, char *out, size_t max)
{
  size_t i = 0, o = 0;
  while (i < len) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c > 0x7e) return -1;
    if (c != '&') {
      if (o >= max) return -1;
      out[o++] = (char)c;
      i++;
      continue;
    }
    i++;
    if (i < len && s[i] == '-') {
      if (o >= max) return -1;
      out[o++] = '&';
      i++;
      continue;
    }
    {
      uint32_t bits = 0, hi = 0;
      unsigned nbits = 0, nunits = 0;
      while (i < len && s[i] != '-') {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) return -1;
        bits = (bits << 6) | (uint32_t)v;
        nbits += 6;
        if (nbits >= 16) {
          uint32_t u = (bits >> (nbits - 16)) & 0xffff;
          nbits -= 16;
          nunits++;
          if (hi) {
            if (u < 0xdc00 || u > 0xdfff) return -1;
            if (!put_utf8(out, max, &o, 0x10000 + ((hi - 0xd800) << 10) + (u - 0xdc00)))
              return -1;
            hi = 0;
          } else if (u >= 0xd800 && u <= 0xdbff) {
            hi = u;
          } else if (u >= 0xdc00 && u <= 0xdfff) {
            return -1;
          } else {
            if (u < 0x80) return -1; /* ASCII is never encoded; controls never allowed */
            if (!put_utf8(out, max, &o, u)) return -1;
          }
        }
        i++;
      }
      if (i >= len || !nunits || hi || nbits >= 6 || (bits & ((1u << nbits) - 1))) return -1;
      i++; /* '-' */
      if (i < len && s[i] == '&') return -1; /* two shifted runs in a row: not canonical */
    }
  }
  return (long)o;
}

int imap_mutf7_valid(char const *s, size_t len)
{
  char tmp[1024];
  if (len > 340) {
    /* long names: check in pieces would split escapes; names are bounded by the caller */
    return 0;
  }
  return imap_mutf7_to_utf8(s, len, tmp, sizeof tmp) >= 0;
}

long imap_utf8_to_mutf7(char const *s, size_t len, char *out, size_t max)
{
  size_t i = 0, o = 0;
  while (i < len) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c <= 0x7e) {
      if (c == '&') {
        if (max - o < 2) return -1;
        out[o++] = '&';
        out[o++] = '-';
      } else {
        if (o >= max) return -1;
        out[o++] = (char)c;
      }
      i++;
      continue;
    }
    if (o >= max) return -1;
    out[o++] = '&';
    {
      uint32_t bits = 0;
      unsigned nbits = 0;
      while (i < len && ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)) {
        uint32_t cp;
        unsigned char b0 = (unsigned char)s[i];
        size_t n, k;
        uint32_t units[2];
        unsigned nu;
        if (b0 < 0x80) return -1; /* control characters are not allowed in names */
        if (b0 >= 0xf0 && b0 <= 0xf4) { n = 4; cp = b0 & 0x07; }
        else if (b0 >= 0xe0) { n = 3; cp = b0 & 0x0f; }
        else if (b0 >= 0xc2 && b0 < 0xe0) { n = 2; cp = b0 & 0x1f; }
        else return -1;
        if (i + n > len) return -1;
        for (k = 1; k < n; k++) {
          unsigned char b = (unsigned char)s[i + k];
          if ((b & 0xc0) != 0x80) return -1;
          cp = (cp << 6) | (b & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
          return -1;
        i += n;
        if (cp >= 0x10000) {
          units[0] = 0xd800 + ((cp - 0x10000) >> 10);
          units[1] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
          nu = 2;
        } else {
          units[0] = cp;
          nu = 1;
        }
        for (k = 0; k < nu; k++) {
          bits = (bits << 16) | units[k];
          nbits += 16;
          while (nbits >= 6) {
            if (o >= max) return -1;
            out[o++] = b64[(bits >> (nbits - 6)) & 0x3f];
            nbits -= 6;
          }
        }
      }
      if (nbits) {
        if (o >= max) return -1;
        out[o++] = b64[(bits << (6 - nbits)) & 0x3f];
      }
      if (o >= max) return -1;
      out[o++] = '-';
    }
  }
  return (long)o;
}
