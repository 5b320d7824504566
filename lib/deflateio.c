/* deflateio: see deflateio.h */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <skalibs/stralloc.h>
#include "deflateio.h"
#include "imapio.h"

static z_stream zi, zo;
static int active;
static int more_out; /* the last inflate filled the caller's buffer: more may be waiting */
static int ended;    /* the client's stream ended (Z_STREAM_END): end of input */
static int broken;   /* a corrupt stream was seen by deflateio_pending's look ahead */
static char cbuf[IMAPIO_IBUF];
static char look[256]; /* inflated by deflateio_pending, not yet returned */
static size_t lookpos, looklen;
static stralloc zout = STRALLOC_ZERO;

ssize_t deflateio_read(int fd, char *buf, size_t len)
{
  if (!len) return 0;
  if (len > 0x40000000) len = 0x40000000;
  if (lookpos < looklen) {
    size_t n = looklen - lookpos < len ? looklen - lookpos : len;
    memcpy(buf, look + lookpos, n);
    lookpos += n;
    return (ssize_t)n;
  }
  if (broken) return (errno = EPROTO, -1);
  for (;;) {
    ssize_t n;
    if (ended) return 0;
    if (zi.avail_in || more_out) {
      int r;
      zi.next_out = (Bytef *)buf;
      zi.avail_out = (uInt)len;
      r = inflate(&zi, Z_SYNC_FLUSH);
      if (r == Z_STREAM_END) ended = 1;
      else if (r != Z_OK && r != Z_BUF_ERROR) {
        errno = EPROTO;
        return -1;
      }
      more_out = !ended && !zi.avail_out;
      if (zi.avail_out < len) return (ssize_t)(len - zi.avail_out);
      if (ended) return 0;
      if (zi.avail_in) { /* neither output nor progress: a stream zlib cannot go on with */
        errno = EPROTO;
        return -1;
      }
      more_out = 0;
    }
    n = read(fd, cbuf, sizeof cbuf);
    if (n <= 0) return n;
    zi.next_in = (Bytef *)cbuf;
    zi.avail_in = (uInt)n;
  }
}

/* zlib may hold output after filling a buffer: look ahead, so that "pending" is never said of
 * nothing (IDLE would wait for a command that is not there). */
int deflateio_pending(void)
{
  if (!active) return 0;
  if (lookpos < looklen || broken || zi.avail_in) return 1;
  if (ended || !more_out) return 0;
  {
    int r;
    zi.next_out = (Bytef *)look;
    zi.avail_out = sizeof look;
    r = inflate(&zi, Z_SYNC_FLUSH);
    if (r == Z_STREAM_END) ended = 1;
    else if (r != Z_OK && r != Z_BUF_ERROR) broken = 1;
    more_out = !ended && !broken && !zi.avail_out;
    lookpos = 0;
    looklen = sizeof look - zi.avail_out;
  }
  return lookpos < looklen || broken || zi.avail_in;
}

int deflateio_out(char const *s, size_t len, char const **z, size_t *zlen)
{
  zout.len = 0;
  zo.next_in = (Bytef *)s;
  zo.avail_in = (uInt)len;
  do {
    size_t room;
    int r;
    if (!stralloc_readyplus(&zout, 4096 + len / 4)) return 0;
    room = zout.a - zout.len;
    zo.next_out = (Bytef *)zout.s + zout.len;
    zo.avail_out = (uInt)room;
    r = deflate(&zo, Z_SYNC_FLUSH);
    if (r != Z_OK && r != Z_BUF_ERROR) return (errno = EPROTO, 0);
    zout.len += room - zo.avail_out;
  } while (!zo.avail_out);
  *z = zout.s;
  *zlen = zout.len;
  return 1;
}

static imapio_layer const layer = {deflateio_read, deflateio_pending, deflateio_out};

int deflateio_start(void)
{
  char const *s;
  size_t n = imapio_pending(&s);
  if (active) return 1;
  memset(&zi, 0, sizeof zi);
  memset(&zo, 0, sizeof zo);
  /* raw deflate both ways (negative window bits: no zlib header, RFC 4978 section 3) */
  if (inflateInit2(&zi, -15) != Z_OK) return (errno = ENOMEM, 0);
  if (deflateInit2(&zo, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    inflateEnd(&zi);
    return (errno = ENOMEM, 0);
  }
  if (n > sizeof cbuf) return (errno = ENOBUFS, 0); /* not possible: imapio's buffer is as big */
  memcpy(cbuf, s, n); /* sent after the COMPRESS line: already compressed */
  zi.next_in = (Bytef *)cbuf;
  zi.avail_in = (uInt)n;
  imapio_discard();
  imapio_setlayer(&layer);
  active = 1;
  return 1;
}

int deflateio_active(void)
{
  return active;
}
