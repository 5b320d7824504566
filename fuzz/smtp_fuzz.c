/* libFuzzer target: the SMTP command parser, MAIL/RCPT/BDAT argument parsers, the address
 * parser and the DATA / BDAT state machine, on arbitrary bytes. Built by fuzz/Makefile with
 * clang -fsanitize=fuzzer,address,undefined. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <skalibs/stralloc.h>

#include "addr.h"
#include "smtp.h"

char const *PROG = "smtp-fuzz";

static void data_machine(uint8_t const *d, size_t n, int bdat)
{
  smtp_data m;
  char out[64 + 2];
  size_t i = 0, step = n ? (d[0] % 63) + 1 : 1;
  unsigned long long total_in = 0, total_out = 0;
  smtp_data_init(&m, bdat);
  while (i < n) {
    size_t k = n - i < step ? n - i : step, o, used;
    int done;
    used = smtp_data_scan(&m, (char const *)d + i, k, out, &o, &done);
    if (used > k || o > k + 2) abort();
    total_in += used;
    total_out += o;
    i += used;
    if (done) {
      if (bdat) abort(); /* BDAT has no end marker */
      smtp_data_init(&m, 0);
    }
  }
  if (bdat) total_out += smtp_data_finish(&m, out);
  if (total_out > total_in + 1) abort(); /* the machine never makes bytes up */
}

int LLVMFuzzerTestOneInput(uint8_t const *data, size_t size)
{
  static stralloc a = STRALLOC_ZERO;
  smtp_cmd c;
  smtp_mailparams p;
  unsigned long long n;
  int last;
  size_t end;
  char *copy = malloc(size ? size : 1); /* exact size: ASan catches any read past the end */
  if (!copy) return 0;
  memcpy(copy, data, size);

  smtp_parse_cmd(copy, size, &c);
  if (c.arg < copy || c.arg + c.arglen > copy + size) abort();
  smtp_parse_mail(c.arg, c.arglen, &a, &p);
  smtp_parse_rcpt(c.arg, c.arglen, 0, &a, &p);
  smtp_parse_rcpt(c.arg, c.arglen, ADDR_UTF8, &a, &p);
  smtp_parse_bdat(c.arg, c.arglen, 1000000, &n, &last);
  if (addr_parse_path(copy, size, ADDR_ALLOW_NULL, &a, &end) == ADDR_OK) {
    if (end > size) abort();
    if (a.len && addr_check_mailbox(a.s, a.len, ADDR_UTF8) != ADDR_OK) abort();
  }
  addr_parse_path(copy, size, ADDR_LOOSE | ADDR_UTF8, &a, &end);
  addr_check_mailbox(copy, size, 0);
  addr_at(copy, size);
  data_machine(data, size, 0);
  data_machine(data, size, 1);
  free(copy);
  return 0;
}
