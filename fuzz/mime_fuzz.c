/* libFuzzer target for lib/mime: parsing any bytes never reads outside them (ASan), every part
 * lies inside the message and inside its parent, nesting stays under MIME_DEPTH_MAX, and every
 * IMAP string builder (BODYSTRUCTURE, BODY, ENVELOPE, each section of each part, BINARY,
 * SEARCH helpers, dates) runs to completion; partial fetches are slices of the full one.
 * Build: make -C fuzz mime_fuzz. Seeds: fuzz/corpus/mime (the shapes of tests/mime_corpus.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mime.h"

char const *PROG = "mime_fuzz";

static mime_part parts[64];

int LLVMFuzzerTestOneInput(uint8_t const *data, size_t size)
{
  mime_msg m;
  stralloc sa = STRALLOC_ZERO, all = STRALLOC_ZERO, tmp = STRALLOC_ZERO;
  char *copy;
  unsigned int n, i;
  static char const *const secs[] = { "", "HEADER", "TEXT", "1", "2", "1.1", "2.1", "1.MIME",
                                      "2.MIME", "1.HEADER", "2.TEXT", "1.2.3",
                                      "HEADER.FIELDS (From Subject)",
                                      "2.HEADER.FIELDS.NOT (To)" };
  int64_t t;
  int z;
  if (size > 65536) return 0;
  copy = malloc(size ? size : 1); /* exactly size bytes: ASan sees any overread */
  memcpy(copy, data, size);
  n = mime_parse(&m, copy, size, parts, 64);
  if (n < 1 || n > 64) abort();
  for (i = 0; i < n; i++) {
    mime_part const *p = &parts[i];
    if (p->hdr_off + p->hdr_len > size || p->body_off + p->body_len > size) abort();
    if (p->body_off < p->hdr_off + p->hdr_len) abort();
    if (p->depth >= MIME_DEPTH_MAX) abort();
    if (i && (p->parent >= i || parts[p->parent].depth + 1 != p->depth)) abort();
    if (i) {
      mime_part const *q = &parts[p->parent];
      if (p->hdr_off < q->body_off || p->body_off + p->body_len > q->body_off + q->body_len)
        abort();
    }
    if (p->body_wsize < p->body_len || p->body_wsize > 2 * p->body_len) abort();
    sa.len = 0;
    if (!mime_bodystructure(&sa, &m, i, 1) || !mime_bodystructure(&sa, &m, i, 0)
        || !mime_envelope(&sa, &m, i))
      abort();
    sa.len = 0;
    if (mime_binary_cat(&sa, &m, i) == 0) abort();
    {
      size_t bs;
      int r = mime_binary_size(&m, i, &bs);
      if (r > 0 && bs != sa.len) abort();
    }
    if (mime_search_header(&m, i, "Subject", 7, "a", 1, &tmp) < 0) abort();
    mime_date(&m, i, &t, &z);
  }
  for (i = 0; i < sizeof secs / sizeof secs[0]; i++) {
    mime_section sec;
    size_t o;
    if (!mime_section_parse(secs[i], strlen(secs[i]), &sec)) abort();
    all.len = 0;
    if (!mime_section_cat(&all, &m, &sec, 0, (size_t)-1)) abort();
    o = size % 7;
    sa.len = 0;
    if (!mime_section_cat(&sa, &m, &sec, o, 5)) abort();
    if (o >= all.len ? sa.len != 0 : (sa.len != (all.len - o < 5 ? all.len - o : 5)
                                      || memcmp(sa.s, all.s + o, sa.len)))
      abort();
  }
  if (mime_search_text(&m, 1, "b", 1, &tmp) < 0) abort();
  {
    mime_section sec;
    mime_section_parse(copy, size < 200 ? size : 200, &sec);
  }
  mime_date_parse(copy, size < 100 ? size : 100, &t, &z);
  sa.len = 0;
  if (!mime_header_decode(&sa, copy, size < 1000 ? size : 1000)) abort();
  stralloc_free(&sa);
  stralloc_free(&all);
  stralloc_free(&tmp);
  free(copy);
  return 0;
}
