/* libFuzzer target for lib/imap_parse: a command (literals inline, as imapio_readcmd collects
 * them) never makes the parser read past its input; every node it returns lies inside the
 * buffer, lists end after their children, nesting stays within IMAP_DEPTH_MAX; sequence sets,
 * literal announcements, dates and modified UTF-7 stay in bounds, and modified UTF-7 survives
 * a round trip through UTF-8. Build: make -C fuzz imap_fuzz */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "imap_parse.h"

char const *PROG = "imap_fuzz";

static imap_cmd c;

int LLVMFuzzerTestOneInput(uint8_t const *data, size_t size)
{
  char *buf = malloc(size ? size : 1);
  uint32_t i;
  if (!buf) return 0;
  memcpy(buf, data, size);
  c.nspool = 0;
  if (size && data[0] == 'S') {
    /* one spooled literal at the first '{' */
    char *b = memchr(buf, '{', size);
    if (b) {
      c.nspool = 1;
      c.spool_at[0] = (size_t)(b - buf);
    }
  }
  if (imap_parse(buf, size, &c) == IMAP_OK) {
    if (c.nargs > IMAP_ARGS_MAX) abort();
    for (i = 0; i < c.nargs; i++) {
      imap_arg const *a = &c.arg[i];
      if (a->type == IMAP_LIST) {
        if (a->end <= i || a->end > c.nargs) abort();
      } else if (a->type != IMAP_SPOOLED) {
        if (a->s < buf || a->s + a->len > buf + size) abort();
      }
    }
  }
  {
    static imap_range r[64];
    int n = imap_seqset((char const *)data, size, r, 64);
    if (n > 64) abort();
    if (n > 0) imap_seqset_has(r, (size_t)n, 7, 100);
  }
  {
    uint64_t n;
    int ns;
    size_t at;
    if (imap_literal_tail((char const *)data, size, &n, &ns, &at) == 1 && at >= size) abort();
  }
  {
    time_t t;
    imap_date((char const *)data, size, &t);
    imap_datetime((char const *)data, size, &t);
  }
  {
    char u8[2048], m7[4096];
    long a = size <= 340 ? imap_mutf7_to_utf8((char const *)data, size, u8, sizeof u8) : -1;
    if (a > (long)sizeof u8) abort();
    if (a >= 0) {
      long b = imap_utf8_to_mutf7(u8, (size_t)a, m7, sizeof m7);
      if (b < 0 || (size_t)b != size || memcmp(m7, data, size)) abort();
    }
    a = imap_utf8_to_mutf7((char const *)data, size, m7, sizeof m7);
    if (a > (long)sizeof m7) abort();
  }
  free(buf);
  return 0;
}
