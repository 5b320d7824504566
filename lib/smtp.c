/* smtp: see smtp.h */
#include <string.h>
#include <strings.h>

#include <skalibs/stralloc.h>

#include "addr.h"
#include "smtp.h"

static struct {
  char const *name;
  int verb;
} const verbs[] = {
  {"HELO", SMTP_V_HELO}, {"EHLO", SMTP_V_EHLO}, {"MAIL", SMTP_V_MAIL}, {"RCPT", SMTP_V_RCPT},
  {"DATA", SMTP_V_DATA}, {"BDAT", SMTP_V_BDAT}, {"RSET", SMTP_V_RSET}, {"NOOP", SMTP_V_NOOP},
  {"QUIT", SMTP_V_QUIT}, {"VRFY", SMTP_V_VRFY}, {"EXPN", SMTP_V_EXPN}, {"HELP", SMTP_V_HELP},
  {"STARTTLS", SMTP_V_STARTTLS}, {"AUTH", SMTP_V_AUTH},
};

static int is_space(char c) { return c == ' ' || c == '\t'; }

int smtp_parse_cmd(char const *line, size_t len, smtp_cmd *c)
{
  size_t i = 0, v, j;
  int ok = 1;
  for (j = 0; j < len; j++) {
    unsigned char u = (unsigned char)line[j];
    if ((u < 32 && u != '\t') || u == 127) ok = 0;
  }
  while (i < len && !is_space(line[i])) i++;
  v = i;
  c->verb = SMTP_V_UNKNOWN;
  for (j = 0; j < sizeof verbs / sizeof verbs[0]; j++) {
    if (strlen(verbs[j].name) == v && !strncasecmp(line, verbs[j].name, v)) {
      c->verb = verbs[j].verb;
      break;
    }
  }
  while (i < len && is_space(line[i])) i++;
  while (len > i && is_space(line[len - 1])) len--;
  c->arg = line + i;
  c->arglen = len - i;
  return ok;
}

/* A parameter keyword: ALPHA / DIGIT / "-", starting with ALPHA or DIGIT. */
static int is_kwchar(char ch)
{
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-';
}

static int kw_is(char const *k, size_t kl, char const *name)
{
  return strlen(name) == kl && !strncasecmp(k, name, kl);
}

/* Parses "1234" (at most 20 digits) into *u, refusing overflow. */
static int scan_ull(char const *s, size_t n, unsigned long long *u)
{
  unsigned long long r = 0;
  size_t i;
  if (!n || n > 20) return 0;
  for (i = 0; i < n; i++) {
    unsigned int d;
    if (s[i] < '0' || s[i] > '9') return 0;
    d = (unsigned int)(s[i] - '0');
    if (r > (~0ULL - d) / 10) return 0;
    r = r * 10 + d;
  }
  *u = r;
  return 1;
}

typedef int param_func(char const *k, size_t kl, char const *v, size_t vl, int hasv,
                       smtp_mailparams *p);

static int mail_param(char const *k, size_t kl, char const *v, size_t vl, int hasv,
                      smtp_mailparams *p)
{
  if (kw_is(k, kl, "SIZE")) {
    if (!hasv || !scan_ull(v, vl, &p->size)) return SMTP_EPARAMVAL;
    p->has_size = 1;
    return SMTP_OK;
  }
  if (kw_is(k, kl, "BODY")) {
    if (!hasv) return SMTP_EPARAMVAL;
    if (kw_is(v, vl, "7BIT")) p->body = SMTP_BODY_7BIT;
    else if (kw_is(v, vl, "8BITMIME")) p->body = SMTP_BODY_8BITMIME;
    else return SMTP_EPARAM; /* BINARYMIME is not offered */
    return SMTP_OK;
  }
  if (kw_is(k, kl, "SMTPUTF8")) {
    if (hasv) return SMTP_EPARAMVAL;
    p->smtputf8 = 1;
    return SMTP_OK;
  }
  if (kw_is(k, kl, "AUTH")) {
    /* RFC 4954 5: kept for nothing; the value is only checked to be present */
    return hasv ? SMTP_OK : SMTP_EPARAMVAL;
  }
  return SMTP_EPARAM;
}

static int rcpt_param(char const *k, size_t kl, char const *v, size_t vl, int hasv,
                      smtp_mailparams *p)
{
  (void)k; (void)kl; (void)v; (void)vl; (void)hasv; (void)p;
  return SMTP_EPARAM;
}

/* Parses " KEY[=VALUE]..." in s[0..len). */
static int parse_params(char const *s, size_t len, param_func *f, smtp_mailparams *p)
{
  size_t i = 0;
  unsigned int n = 0;
  for (;;) {
    size_t k, kl, v = 0, vl = 0;
    int hasv = 0, r;
    while (i < len && is_space(s[i])) i++;
    if (i >= len) return SMTP_OK;
    if (++n > SMTP_PARAMS_MAX) return SMTP_ESYNTAX;
    k = i;
    while (i < len && is_kwchar(s[i])) i++;
    kl = i - k;
    if (!kl || s[k] == '-') return SMTP_ESYNTAX;
    if (i < len && s[i] == '=') {
      hasv = 1;
      v = ++i;
      while (i < len && (unsigned char)s[i] > 32 && (unsigned char)s[i] < 127 && s[i] != '=') i++;
      vl = i - v;
      if (!vl) return SMTP_EPARAMVAL;
    }
    if (i < len && !is_space(s[i])) return SMTP_ESYNTAX;
    r = f(s + k, kl, s + v, vl, hasv, p);
    if (r != SMTP_OK) return r;
  }
}

static int has_8bit(char const *s, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    if ((unsigned char)s[i] >= 0x80) return 1;
  return 0;
}

static int parse_path_params(char const *arg, size_t len, char const *prefix, unsigned int flags,
                             param_func *f, stralloc *addr, smtp_mailparams *p)
{
  size_t pl = strlen(prefix), end = 0, i;
  int r;
  memset(p, 0, sizeof *p);
  addr->len = 0;
  if (len < pl || strncasecmp(arg, prefix, pl)) return SMTP_ESYNTAX;
  arg += pl;
  len -= pl;
  i = 0;
  while (i < len && is_space(arg[i])) i++;
  if (i >= len || arg[i] != '<') return SMTP_ESYNTAX;
  if (f == rcpt_param && len - i >= 12 && !strncasecmp(arg + i, "<postmaster>", 12) &&
      (len - i == 12 || is_space(arg[i + 12]))) {
    if (!stralloc_catb(addr, "postmaster", 10)) return SMTP_ENOMEM;
    p->postmaster = 1;
    end = i + 12;
  } else {
    r = addr_parse_path(arg + i, len - i, flags | ADDR_UTF8, addr, &end);
    if (r != ADDR_OK) {
      p->addrerr = r;
      addr->len = 0;
      return SMTP_EADDR;
    }
    end += i;
  }
  if (end < len && !is_space(arg[end])) {
    addr->len = 0;
    return SMTP_ESYNTAX;
  }
  r = parse_params(arg + end, len - end, f, p);
  if (r != SMTP_OK) {
    addr->len = 0;
    return r;
  }
  if (!p->smtputf8 && !(flags & ADDR_UTF8) && has_8bit(addr->s, addr->len)) {
    p->addrerr = ADDR_E8BIT;
    addr->len = 0;
    return SMTP_EADDR;
  }
  return SMTP_OK;
}

int smtp_parse_mail(char const *arg, size_t len, stralloc *addr, smtp_mailparams *p)
{
  return parse_path_params(arg, len, "FROM:", ADDR_ALLOW_NULL, &mail_param, addr, p);
}

int smtp_parse_rcpt(char const *arg, size_t len, unsigned int flags, stralloc *addr,
                    smtp_mailparams *p)
{
  return parse_path_params(arg, len, "TO:", flags & ADDR_UTF8, &rcpt_param, addr, p);
}

int smtp_parse_bdat(char const *arg, size_t len, unsigned long long max, unsigned long long *n,
                    int *last)
{
  size_t i = 0;
  while (i < len && arg[i] >= '0' && arg[i] <= '9') i++;
  if (!scan_ull(arg, i, n) || *n > max) return 0;
  *last = 0;
  while (i < len && is_space(arg[i])) i++;
  if (i == len) return 1;
  if (len - i == 4 && !strncasecmp(arg + i, "LAST", 4)) {
    *last = 1;
    return 1;
  }
  return 0;
}

int smtp_reply(stralloc *out, unsigned int code, char const *ecode, char const *text, int more)
{
  char c[4];
  size_t start;
  c[0] = (char)('0' + (code / 100) % 10);
  c[1] = (char)('0' + (code / 10) % 10);
  c[2] = (char)('0' + code % 10);
  c[3] = more ? '-' : ' ';
  if (!stralloc_catb(out, c, 4)) return 0;
  if (ecode && (!stralloc_cats(out, ecode) || !stralloc_catb(out, " ", 1))) return 0;
  start = out->len;
  if (!stralloc_cats(out, text)) return 0;
  for (; start < out->len; start++) {
    unsigned char u = (unsigned char)out->s[start];
    if (u < 32 || u == 127) out->s[start] = '?';
  }
  return stralloc_catb(out, "\r\n", 2);
}

/* States of the data machine */
#define S_BOL 0   /* at the beginning of a line */
#define S_MID 1   /* inside a line */
#define S_CR 2    /* a CR is pending */
#define S_DOT 3   /* a '.' at the beginning of a line is pending */
#define S_DOTCR 4 /* ".\r" at the beginning of a line is pending */

void smtp_data_init(smtp_data *d, int bdat)
{
  d->state = S_BOL;
  d->flags = 0;
  d->bdat = bdat ? 1 : 0;
}

size_t smtp_data_scan(smtp_data *d, char const *in, size_t inlen, char *out, size_t *outlen,
                      int *done)
{
  size_t i, o = 0;
  unsigned int st = d->state;
  *done = 0;
  for (i = 0; i < inlen; i++) {
    char c = in[i];
    if (!c) d->flags |= SMTP_DATA_NUL;
    switch (st) {
      case S_DOTCR:
        if (c == '\n') {
          d->state = S_BOL;
          *outlen = o;
          *done = 1;
          return i + 1;
        }
        d->flags |= SMTP_DATA_BARECR;
        out[o++] = '\r';
        if (c == '\r') st = S_CR;
        else { out[o++] = c; st = S_MID; }
        break;
      case S_CR:
        if (c == '\n') { out[o++] = '\n'; st = S_BOL; break; }
        d->flags |= SMTP_DATA_BARECR;
        out[o++] = '\r';
        if (c != '\r') { out[o++] = c; st = S_MID; }
        break;
      case S_DOT:
        if (c == '\r') { st = S_DOTCR; break; }
        if (c == '\n') d->flags |= SMTP_DATA_BARELF;
        out[o++] = c; /* the leading dot is dropped (RFC 5321 4.5.2) */
        st = S_MID;
        break;
      case S_BOL:
        if (c == '.' && !d->bdat) { st = S_DOT; break; }
        /* fall through */
      default:
        if (c == '\r') { st = S_CR; break; }
        if (c == '\n') d->flags |= SMTP_DATA_BARELF; /* and not a beginning of line */
        out[o++] = c;
        st = S_MID;
        break;
    }
  }
  d->state = st;
  *outlen = o;
  return inlen;
}

size_t smtp_data_finish(smtp_data *d, char *out)
{
  size_t o = 0;
  if (d->state == S_CR || d->state == S_DOTCR) {
    d->flags |= SMTP_DATA_BARECR;
    out[o++] = '\r';
  }
  d->state = S_BOL;
  return o;
}

/* States of the Received: counter: 0..7 at the start of a line with that many bytes of
 * "received" matched; H_NAME the name matched (white space may come before the colon). */
#define H_NAME 8
#define H_MID 9   /* inside a line that is not (or no longer) a match */
#define H_BODY 10 /* past the header section */

void smtp_hops_init(smtp_hops *h)
{
  h->count = 0;
  h->state = 0;
}

void smtp_hops_scan(smtp_hops *h, char const *s, size_t n)
{
  static char const name[] = "received";
  unsigned int st = h->state;
  size_t i = 0;
  while (i < n && st != H_BODY) {
    char c = s[i];
    if (st == H_MID) {
      char const *nl = memchr(s + i, '\n', n - i);
      if (!nl) { i = n; break; }
      i = (size_t)(nl - s) + 1;
      st = 0;
      continue;
    }
    i++;
    if (st < H_NAME) {
      if (!st && c == '\n') st = H_BODY; /* the empty line: the header section ends */
      else if (c == name[st] || c == name[st] - 32) st++;
      else st = c == '\n' ? 0 : H_MID;
    } else { /* H_NAME */
      if (c == ':') {
        if (h->count < (unsigned long)-1) h->count++;
        st = H_MID;
      } else if (c != ' ' && c != '\t') st = c == '\n' ? 0 : H_MID;
    }
  }
  h->state = st;
}

int smtp_rcpt_same(char const *a, size_t alen, char const *b, size_t blen, int local)
{
  size_t at = alen, bt = blen;
  if (alen != blen) return 0;
  while (at && a[at - 1] != '@') at--;
  while (bt && b[bt - 1] != '@') bt--;
  if (at != bt) return 0;
  if (strncasecmp(a + at, b + bt, alen - at)) return 0;
  return local ? !strncasecmp(a, b, at) : !memcmp(a, b, at);
}

int smtp_qualify(char const *arg, size_t len, char const *domain, size_t dlen, stralloc *sa)
{
  char const *lt, *gt;
  size_t n;
  if (!dlen) return 0;
  lt = memchr(arg, '<', len);
  if (!lt) return 0;
  gt = memchr(lt, '>', len - (size_t)(lt - arg));
  n = gt ? (size_t)(gt - lt) - 1 : 0;
  if (!n || memchr(lt + 1, '@', n) || (n == 10 && !strncasecmp(lt + 1, "postmaster", 10)))
    return 0;
  sa->len = 0;
  if (!stralloc_catb(sa, arg, (size_t)(gt - arg)) || !stralloc_catb(sa, "@", 1) ||
      !stralloc_catb(sa, domain, dlen) || !stralloc_catb(sa, gt, len - (size_t)(gt - arg)))
    return -1;
  return 1;
}

int smtp_cat_safe(stralloc *sa, char const *s, size_t n, size_t max)
{
  size_t i;
  if (n > max) n = max;
  for (i = 0; i < n; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
    if (!stralloc_catb(sa, ok ? &c : "?", 1)) return 0;
  }
  return 1;
}

char const *smtp_protocol(int esmtp, int utf8, int tls, int auth)
{
  static char const *const names[8] = {"ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA",
                                       "UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA"};
  if (!esmtp) return "SMTP";
  return names[(utf8 ? 4 : 0) + (tls ? 2 : 0) + (auth ? 1 : 0)];
}

static int cats0(stralloc *sa, char const *s)
{
  return s ? stralloc_cats(sa, s) : 1;
}

int smtp_received(stralloc *sa, smtp_trace const *t)
{
  size_t n = t->helo ? strlen(t->helo) : 0;
  if (!stralloc_cats(sa, "Received: from ") || !smtp_cat_safe(sa, t->helo ? t->helo : "", n, 64) ||
      !stralloc_cats(sa, " ("))
    return 0;
  if (t->host && *t->host &&
      (!smtp_cat_safe(sa, t->host, strlen(t->host), 64) || !stralloc_cats(sa, " ")))
    return 0;
  if (!stralloc_cats(sa, "[") || !smtp_cat_safe(sa, t->ip, strlen(t->ip), 64) ||
      !stralloc_cats(sa, "])\n\tby ") || !cats0(sa, t->me) ||
      !stralloc_cats(sa, " (pillarbox) with ") || !cats0(sa, t->proto))
    return 0;
  if (t->id && *t->id &&
      (!stralloc_cats(sa, " id ") || !smtp_cat_safe(sa, t->id, strlen(t->id), 64)))
    return 0;
  if (t->tlsproto && *t->tlsproto) {
    if (!stralloc_cats(sa, "\n\t(using ") ||
        !smtp_cat_safe(sa, t->tlsproto, strlen(t->tlsproto), 32))
      return 0;
    if (t->cipher && *t->cipher &&
        (!stralloc_cats(sa, " with cipher ") ||
         !smtp_cat_safe(sa, t->cipher, strlen(t->cipher), 64)))
      return 0;
    if (!stralloc_cats(sa, ")")) return 0;
  }
  if (t->rcpt && (!stralloc_cats(sa, "\n\tfor <") || !stralloc_catb(sa, t->rcpt, t->rcptlen) ||
                  !stralloc_cats(sa, ">")))
    return 0;
  return stralloc_cats(sa, "; ") && cats0(sa, t->date) && stralloc_cats(sa, "\n");
}
