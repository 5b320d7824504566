/* unit: COMPRESS=DEFLATE as a layer of lib/imapio (lib/deflateio) */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "deflateio.h"
#include "imapio.h"
#include "check.h"
char const *PROG = "unit-deflateio";

static char big[300000];

/* Raw-deflates in[0..len) with a sync flush into out; returns the length. */
static size_t zc(z_stream *z, char const *in, size_t len, char *out, size_t max)
{
  z->next_in = (Bytef *)in;
  z->avail_in = (uInt)len;
  z->next_out = (Bytef *)out;
  z->avail_out = (uInt)max;
  if (deflate(z, Z_SYNC_FLUSH) != Z_OK) return 0;
  return max - z->avail_out;
}

int main(void)
{
  int a[2], b[2];
  static char zbuf[70000], got[400000];
  z_stream cz, dz;
  stralloc line = STRALLOC_ZERO;
  size_t i, n, total;
  ssize_t r;
  CHECK(pipe(a) == 0 && pipe(b) == 0);
  CHECK(imapio_init(a[0], b[1], 10));
  CHECK(!deflateio_active());
  /* input pipelined behind the COMPRESS line is taken over: here, one compressed line */
  memset(&cz, 0, sizeof cz);
  CHECK(deflateInit2(&cz, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  n = zc(&cz, "b NOOP\r\n", 8, zbuf, sizeof zbuf);
  CHECK(n > 0 && imapio_preload(zbuf, n));
  CHECK(deflateio_start() && deflateio_active());
  CHECK(imapio_buffered()); /* the layer holds it */
  CHECK(imapio_readline(&line, 100) == 1 && line.len == 6 && !memcmp(line.s, "b NOOP", 6));
  /* a big, very compressible input comes back whole through small reads (more output than
   * the caller's buffer from one read of the descriptor) */
  for (i = 0; i < sizeof big; i++) big[i] = "abcdefgh\r\n"[i % 10];
  n = zc(&cz, big, sizeof big, zbuf, sizeof zbuf);
  CHECK(n > 0 && n < sizeof zbuf && write(a[1], zbuf, n) == (ssize_t)n);
  total = 0;
  while (total < sizeof big && (r = deflateio_read(a[0], got + total, 1000)) > 0)
    total += (size_t)r;
  CHECK(total == sizeof big && !memcmp(got, big, sizeof big));
  CHECK(!deflateio_pending());
  r = deflateio_read(a[0], got, 1000);
  CHECK(r < 0 && errno == EAGAIN); /* nothing more: as read(2) on a non-blocking fd */
  /* output: every flush is a complete sync-flushed chunk the client can inflate at once */
  CHECK(imapio_puts("* OK first\r\n") && imapio_flush());
  r = read(b[0], zbuf, sizeof zbuf);
  CHECK(r > 4 && !memcmp(zbuf + r - 4, "\0\0\377\377", 4));
  memset(&dz, 0, sizeof dz);
  CHECK(inflateInit2(&dz, -15) == Z_OK);
  dz.next_in = (Bytef *)zbuf;
  dz.avail_in = (uInt)r;
  dz.next_out = (Bytef *)got;
  dz.avail_out = sizeof got;
  CHECK(inflate(&dz, Z_SYNC_FLUSH) == Z_OK);
  CHECK(sizeof got - dz.avail_out == 12 && !memcmp(got, "* OK first\r\n", 12));
  /* a corrupt stream is an error, not a hang or garbage */
  CHECK(write(a[1], "\377\377\377\377\377\377", 6) == 6);
  r = deflateio_read(a[0], got, 1000);
  CHECK(r < 0 && errno == EPROTO);
  deflateEnd(&cz);
  inflateEnd(&dz);
  return CHECK_DONE();
}
