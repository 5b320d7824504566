/* hdr: see hdr.h */
#include <string.h>
#include <strings.h>

#include "hdr.h"

size_t hdr_field(char const *h, size_t n, char const *name)
{
  size_t l = strlen(name), i;
  if (n <= l || strncasecmp(h, name, l)) return 0;
  for (i = l; i < n && (h[i] == ' ' || h[i] == '\t'); i++)
    ;
  return i < n && h[i] == ':' ? i + 1 : 0;
}

static int trimmed(char const *s, size_t n, int (*f)(void *, char const *, size_t), void *ctx)
{
  while (n && (*s == ' ' || *s == '\t')) { s++; n--; }
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  return n ? f(ctx, s, n) : 1;
}

int hdr_addrlist(char const *s, size_t n, int (*f)(void *, char const *, size_t), void *ctx)
{
  size_t i, lt = 0, gt = 0, blen = 0;
  int q = 0, comment = 0, angle = 0, haveangle = 0;
  char bare[1024];
  for (i = 0; i <= n; i++) {
    char c = i < n ? s[i] : ',';
    if (q) {
      if (c == '\\' && i + 1 < n) { i++; continue; }
      if (c == '"') q = 0;
      if (!angle && blen < sizeof bare) bare[blen++] = c;
      continue;
    }
    if (comment) {
      if (c == '\\' && i + 1 < n) { i++; continue; }
      if (c == '(') comment++;
      else if (c == ')') comment--;
      continue;
    }
    if (c == '(') { comment = 1; continue; }
    if (c == '"') { q = 1; if (!angle && blen < sizeof bare) bare[blen++] = c; continue; }
    if (c == '<' && !angle) { angle = 1; lt = i; continue; }
    if (c == '>' && angle) { angle = 0; gt = i; haveangle = 1; continue; }
    if (angle) continue;
    if (c == ':') { blen = 0; haveangle = 0; continue; } /* a group's name */
    if (c == ',' || c == ';') {
      int r = haveangle ? trimmed(s + lt + 1, gt - lt - 1, f, ctx) : trimmed(bare, blen, f, ctx);
      if (!r) return 0;
      blen = 0;
      haveangle = 0;
      continue;
    }
    if (blen < sizeof bare) bare[blen++] = c;
  }
  return 1;
}

/* states */
#define G_BOL 0    /* at the start of a header line */
#define G_NAME 1   /* matching the name */
#define G_WSP 2    /* name matched, white space before the colon */
#define G_VALUE 3  /* inside the wanted field's value */
#define G_OTHER 4  /* inside another field */
#define G_BODY 5   /* past the header section */
#define G_VBOL 6   /* at the start of a line after the wanted field's line */

void hdr_grab_init(hdr_grab *g, char const *name)
{
  g->name = name;
  g->state = G_BOL;
  g->matched = 0;
  g->count = 0;
  g->toolong = 0;
  g->len = 0;
}

static void keep(hdr_grab *g, char c)
{
  if (g->count != 1) return; /* only the first field's value */
  if (g->len < HDR_VALUE_MAX) g->value[g->len++] = c;
  else g->toolong = 1;
}

void hdr_grab_scan(hdr_grab *g, char const *s, size_t n)
{
  size_t i, l = strlen(g->name);
  for (i = 0; i < n && g->state != G_BODY; i++) {
    char c = s[i];
    switch (g->state) {
      case G_VBOL:
        if (c == ' ' || c == '\t') { keep(g, ' '); g->state = G_VALUE; break; }
        /* fall through */
      case G_BOL:
        if (c == '\n') { g->state = G_BODY; break; }
        g->matched = 0;
        g->state = G_NAME;
        /* fall through */
      case G_NAME:
        if (g->matched < l && (c | 32) == (g->name[g->matched] | 32)) { g->matched++; break; }
        if (g->matched == l && (c == ' ' || c == '\t')) { g->state = G_WSP; break; }
        if (g->matched == l && c == ':') { g->count++; g->state = G_VALUE; break; }
        g->state = c == '\n' ? G_BOL : G_OTHER;
        break;
      case G_WSP:
        if (c == ' ' || c == '\t') break;
        if (c == ':') { g->count++; g->state = G_VALUE; break; }
        g->state = c == '\n' ? G_BOL : G_OTHER;
        break;
      case G_VALUE:
        if (c == '\n') { g->state = G_VBOL; break; }
        keep(g, c == '\r' ? ' ' : c);
        break;
      case G_OTHER:
        if (c == '\n') g->state = G_BOL;
        break;
    }
  }
}
