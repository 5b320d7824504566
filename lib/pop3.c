/* pop3: the POP3 grammar and the wire encoding of stored messages. See pop3.h. */
#include <string.h>
#include <skalibs/sha256.h>
#include "pop3.h"

struct kw {
  char name[5];
  int cmd;
  unsigned char minargs, maxargs;
};

static struct kw const kws[] = {
  {"USER", POP3_USER, 1, 1}, {"PASS", POP3_PASS, 1, 1}, {"APOP", POP3_APOP, 2, 2},
  {"AUTH", POP3_AUTH, 0, 2}, {"STLS", POP3_STLS, 0, 0}, {"CAPA", POP3_CAPA, 0, 0},
  {"QUIT", POP3_QUIT, 0, 0}, {"STAT", POP3_STAT, 0, 0}, {"LIST", POP3_LIST, 0, 1},
  {"RETR", POP3_RETR, 1, 1}, {"DELE", POP3_DELE, 1, 1}, {"NOOP", POP3_NOOP, 0, 0},
  {"RSET", POP3_RSET, 0, 0}, {"TOP", POP3_TOP, 2, 2},   {"UIDL", POP3_UIDL, 0, 1},
};

static char upper(char c)
{
  return (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
}

int pop3_parse(char const *s, size_t len, pop3_cmd *c)
{
  size_t i = 0, n, k;
  char word[5];
  struct kw const *w = 0;
  memset(c, 0, sizeof *c);
  if (len > POP3_LINE_MAX) return POP3_ETOOLONG;
  if (len && s[len - 1] == '\n') len--;
  if (len && s[len - 1] == '\r') len--;
  for (k = 0; k < len; k++) {
    unsigned char u = (unsigned char)s[k];
    if (u < 0x20 || u == 0x7f) return POP3_ESYNTAX;
  }
  while (i < len && s[i] != ' ') i++;
  if (!i || i > 4) return i ? POP3_EUNKNOWN : POP3_ESYNTAX;
  for (k = 0; k < i; k++) word[k] = upper(s[k]);
  word[i] = 0;
  for (k = 0; k < sizeof kws / sizeof *kws; k++)
    if (!strcmp(word, kws[k].name)) { w = &kws[k]; break; }
  if (!w) return POP3_EUNKNOWN;
  c->cmd = w->cmd;
  while (i < len && s[i] == ' ') i++;
  if (w->cmd == POP3_PASS) {
    /* The password is the rest of the line (RFC 1939 section 13: it may hold spaces). */
    if (i >= len) return POP3_ESYNTAX;
    c->argc = 1;
    c->arg[0] = s + i;
    c->arglen[0] = len - i;
    return c->cmd;
  }
  while (i < len) {
    n = i;
    while (i < len && s[i] != ' ') i++;
    if (c->argc >= w->maxargs) return POP3_ESYNTAX;
    /* AUTH's initial response (second argument) is bounded by the line limit only. */
    if (i - n > POP3_ARG_MAX && !(w->cmd == POP3_AUTH && c->argc == 1)) return POP3_EARGLONG;
    c->arg[c->argc] = s + n;
    c->arglen[c->argc] = i - n;
    c->argc++;
    while (i < len && s[i] == ' ') i++;
  }
  if (c->argc < w->minargs) return POP3_ESYNTAX;
  return c->cmd;
}

int pop3_ulong(char const *s, size_t len, unsigned long *n)
{
  unsigned long u = 0;
  size_t i;
  if (!len || len > 9) return 0;
  for (i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    u = u * 10 + (unsigned long)(s[i] - '0');
  }
  *n = u;
  return 1;
}

char const *pop3_parse_reply(int e)
{
  switch (e) {
    case POP3_ETOOLONG: return "-ERR line too long\r\n";
    case POP3_EARGLONG: return "-ERR argument too long\r\n";
    case POP3_EUNKNOWN: return "-ERR unknown command\r\n";
    default: return "-ERR syntax error\r\n";
  }
}

int pop3_msgnum(char const *s, size_t len, unsigned long max, unsigned long *n)
{
  unsigned long u;
  if (!pop3_ulong(s, len, &u) || !u || u > max) return 0;
  *n = u;
  return 1;
}

void pop3_enc_init(pop3_enc *e, long toplines)
{
  e->toplines = toplines;
  e->linelen = 0;
  e->atbol = 1;
  e->lastcr = 0;
  e->inbody = 0;
  e->done = 0;
}

static void endofline(pop3_enc *e)
{
  if (e->toplines >= 0) {
    if (!e->inbody) {
      if (!e->linelen || (e->linelen == 1 && e->lastcr)) {
        e->inbody = 1;
        if (!e->toplines) e->done = 1;
      }
    } else if (!--e->toplines) e->done = 1;
  }
  e->atbol = 1;
  e->linelen = 0;
  e->lastcr = 0;
}

size_t pop3_enc_run(pop3_enc *e, char const *in, size_t inlen, char *out, size_t outmax,
                    size_t *used)
{
  size_t i = 0, o = 0;
  while (i < inlen && !e->done) {
    char const *nl;
    size_t span, n;
    if (e->atbol) {
      if (outmax - o < 2) break;
      if (in[i] == '.') out[o++] = '.';
      e->atbol = 0;
    }
    nl = memchr(in + i, '\n', inlen - i);
    span = nl ? (size_t)(nl - in) - i : inlen - i;
    n = span < outmax - o ? span : outmax - o;
    if (n) {
      memcpy(out + o, in + i, n);
      o += n;
      i += n;
      e->lastcr = out[o - 1] == '\r';
      e->linelen = e->linelen + n > 2 ? 2 : e->linelen + n;
    }
    if (n < span || !nl) break;
    if (outmax - o < 2) break;
    if (!e->lastcr) out[o++] = '\r';
    out[o++] = '\n';
    i++;
    endofline(e);
  }
  *used = i;
  return o;
}

size_t pop3_enc_end(pop3_enc *e, char *out)
{
  size_t o = 0;
  if (!e->atbol) {
    out[o++] = '\r';
    out[o++] = '\n';
    e->atbol = 1;
  }
  memcpy(out + o, ".\r\n", 3);
  return o + 3;
}

void pop3_wiresize_feed(pop3_wsize *w, char const *s, size_t len)
{
  char const *p = s, *end = s + len;
  if (!len) return;
  w->n += len;
  while ((p = memchr(p, '\n', (size_t)(end - p)))) {
    char before = p > s ? p[-1] : w->last;
    if (before != '\r') w->n++;
    p++;
  }
  w->last = s[len - 1];
}

uint64_t pop3_wiresize_end(pop3_wsize const *w)
{
  return w->n + ((w->n && w->last != '\n') ? 2 : 0);
}

int pop3_name_wsize(char const *name, size_t len, uint64_t *size)
{
  size_t i, end = len;
  char const *colon = memchr(name, ':', len);
  if (colon) end = (size_t)(colon - name);
  for (i = 0; i + 3 < end; i++) {
    if (name[i] == ',' && name[i + 1] == 'W' && name[i + 2] == '=') {
      uint64_t u = 0;
      size_t j = i + 3, digits = 0;
      while (j < end && name[j] >= '0' && name[j] <= '9' && digits < 18) {
        u = u * 10 + (uint64_t)(name[j] - '0');
        j++;
        digits++;
      }
      if (!digits || (j < end && name[j] != ',')) return 0;
      *size = u;
      return 1;
    }
  }
  return 0;
}

size_t pop3_uidl(char const *name, size_t len, char *out)
{
  static char const hex[] = "0123456789abcdef";
  char const *colon = memchr(name, ':', len);
  size_t n = colon ? (size_t)(colon - name) : len, i;
  int ok = n >= 1 && n <= POP3_UIDL_MAX;
  for (i = 0; ok && i < n; i++)
    if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e) ok = 0;
  if (ok) {
    memcpy(out, name, n);
    return n;
  }
  {
    SHA256Schedule ctx;
    char d[32];
    sha256_init(&ctx);
    sha256_update(&ctx, name, n);
    sha256_final(&ctx, d);
    out[0] = 'H';
    for (i = 0; i < 20; i++) {
      out[1 + 2 * i] = hex[(unsigned char)d[i] >> 4];
      out[2 + 2 * i] = hex[(unsigned char)d[i] & 15];
    }
    return 41;
  }
}

uint64_t pop3_name_time(char const *name, size_t len)
{
  uint64_t u = 0;
  size_t i;
  for (i = 0; i < len && i < 19 && name[i] >= '0' && name[i] <= '9'; i++)
    u = u * 10 + (uint64_t)(name[i] - '0');
  return u;
}
