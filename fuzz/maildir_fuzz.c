/* libFuzzer target: the pure parsers of lib/maildir (quota definitions, maildirsize, names
 * and flags, the loop scanner) and lib/dsn's bounce builder, on arbitrary bytes.
 *   clang -fsanitize=fuzzer,address,undefined ... maildir_fuzz.c ../lib/maildir.c ../lib/dsn.c
 *   fuzz/maildir_fuzz -max_total_time=600 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <skalibs/stralloc.h>
#include "dsn.h"
#include "maildir.h"

char const *PROG = "maildir_fuzz";

int LLVMFuzzerTestOneInput(uint8_t const *data, size_t size)
{
  char const *s = (char const *)data;
  uint64_t a, b;
  maildir_quota q;
  char const *f;
  size_t fl;
  stralloc out = STRALLOC_ZERO;
  char *z;
  {
    static maildir_loop l;
    size_t h, i;
    maildir_loop_init(&l, "bob@example.test", 16);
    h = maildir_loop_feed(&l, s, size);
    if (h > size) abort();
    maildir_loop_end(&l);
    /* fed in pieces, the verdict and the header length are the same */
    {
      static maildir_loop l2;
      size_t h2 = 0;
      maildir_loop_init(&l2, "bob@example.test", 16);
      for (i = 0; i < size && !l2.done && !l2.verdict; i += 7)
        h2 += maildir_loop_feed(&l2, s + i, size - i < 7 ? size - i : 7);
      maildir_loop_end(&l2);
      if (l2.verdict != l.verdict || (!l.verdict && h2 != h)) abort();
    }
  }
  maildir_quota_parse(s, size, &a, &b);
  maildir_quota_parsefile(s, size, &q);
  maildir_uniqlen(s, size);
  if (maildir_flags(s, size, &f, &fl)) {
    if (f < s || f + fl > s + size) abort();
  }
  maildir_hasflag(s, size, 'S');
  maildir_namesize(s, size, &a);
  if (!maildir_setflags(&out, s, size, s, size)) abort();
  out.len = 0;
  /* dsn: the input is the message; its first bytes also make the recipient fields */
  z = malloc(size + 1);
  if (!z) return 0;
  memcpy(z, s, size);
  z[size] = 0;
  {
    dsn_msg m;
    dsn_rcpt r[2];
    size_t half = strlen(z) / 2;
    m.me = "mx.example.test";
    m.to = z;
    m.queueid = z + half;
    m.arrival = (time_t)size * 1000;
    m.now = (time_t)size * 1001;
    m.message = s;
    m.messagelen = size;
    r[0].rcpt = z;
    r[0].status = z + half;
    r[0].diagnostic = z;
    r[0].remote_mta = z + half;
    r[0].action_delayed = size & 1;
    r[1] = r[0];
    r[1].diagnostic = 0;
    r[1].remote_mta = 0;
    r[1].action_delayed = !(size & 1);
    if (!dsn_build(&out, &m, r, 2)) abort();
    {
      size_t i;
      for (i = 0; i < out.len; i++) /* CRLF only */
        if (out.s[i] == '\n' && (!i || out.s[i - 1] != '\r')) abort();
    }
  }
  free(z);
  stralloc_free(&out);
  return 0;
}
