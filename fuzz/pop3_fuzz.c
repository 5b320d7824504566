/* libFuzzer target for lib/pop3: the command parser never reads past its input or accepts
 * an over-long line or argument; the wire encoder gives the same bytes whatever the input
 * chunking and output room, ends every line in CRLF, and its unstuffed length matches
 * pop3_wiresize. Build: clang -fsanitize=fuzzer,address,undefined -I../lib pop3_fuzz.c
 * ../lib/pop3.c -l:libskarnet.a */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "pop3.h"

char const *PROG = "pop3_fuzz";

static size_t encode(uint8_t const *in, size_t len, size_t chunk, size_t room, long top,
                     char *res)
{
  pop3_enc e;
  char out[64];
  size_t pos = 0, r = 0;
  pop3_enc_init(&e, top);
  while (pos < len && !e.done) {
    size_t take = len - pos < chunk ? len - pos : chunk, off = 0;
    while (off < take && !e.done) {
      size_t used, o = pop3_enc_run(&e, (char const *)in + pos + off, take - off, out, room,
                                    &used);
      if (o > room) abort();
      memcpy(res + r, out, o);
      r += o;
      off += used;
      if (!used && !o) abort(); /* no progress */
    }
    pos += take;
  }
  r += pop3_enc_end(&e, res + r);
  return r;
}

int LLVMFuzzerTestOneInput(uint8_t const *data, size_t size)
{
  pop3_cmd c;
  int r;
  char *a, *b;
  size_t la, lb, i, stuffed = 0;
  pop3_wsize w = POP3_WSIZE_ZERO;
  char u[POP3_UIDL_MAX];
  uint64_t sz;
  if (size > 4096) return 0;
  {
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    r = pop3_parse(copy, size, &c);
    if (r > 0) {
      if (size > POP3_LINE_MAX) abort();
      for (i = 0; i < c.argc; i++) {
        if (c.arg[i] < copy || c.arg[i] + c.arglen[i] > copy + size) abort();
        if (c.arglen[i] > POP3_ARG_MAX && c.cmd != POP3_PASS && c.cmd != POP3_AUTH) abort();
      }
    }
    free(copy);
  }
  a = malloc(size * 3 + 8);
  b = malloc(size * 3 + 8);
  la = encode(data, size, size ? size : 1, 64, -1, a);
  lb = encode(data, size, 1 + (size % 7), 2 + (size % 5), -1, b);
  if (la != lb || memcmp(a, b, la)) abort();
  /* every LF is preceded by CR; the end is ".\r\n" */
  for (i = 0; i < la; i++)
    if (a[i] == '\n' && (!i || a[i - 1] != '\r')) abort();
  if (la < 3 || memcmp(a + la - 3, ".\r\n", 3)) abort();
  /* unstuffed length without the final dot line = wire size */
  for (i = 0; i + 3 < la; i++)
    if (a[i] == '.' && (!i || a[i - 1] == '\n')) stuffed++;
  pop3_wiresize_feed(&w, (char const *)data, size);
  if (pop3_wiresize_end(&w) != la - 3 - stuffed) abort();
  /* TOP gives a prefix of RETR (before its final dot line) */
  lb = encode(data, size, 3, 5, (long)(size % 4), b);
  if (lb > la || memcmp(a, b, lb - 3)) abort();
  free(a);
  free(b);
  pop3_uidl((char const *)data, size, u);
  pop3_name_wsize((char const *)data, size, &sz);
  return 0;
}
