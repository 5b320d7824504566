/* authfail: see authfail.h */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bearssl/bearssl_hash.h>
#include <skalibs/stralloc.h>

#include "authfail.h"
#include "control.h"
#include "ipkey.h"

#define REC 32

static void key_of(char const *ip, unsigned char key[16])
{
  br_sha256_context h;
  unsigned char d[32];
  char k[IPKEY_MAX];
  size_t kl = (!ip || !*ip) ? 0 : ipkey(ip, ipkey_v6prefix(), k);
  br_sha256_init(&h);
  br_sha256_update(&h, k, kl);
  br_sha256_out(&h, d);
  memcpy(key, d, 16);
}

static uint32_t get32(unsigned char const *p)
{
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void put32(unsigned char *p, uint32_t u)
{
  p[0] = u & 255;
  p[1] = (u >> 8) & 255;
  p[2] = (u >> 16) & 255;
  p[3] = (u >> 24) & 255;
}

static int lockfd(int fd, int excl)
{
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = excl ? F_WRLCK : F_RDLCK;
  fl.l_whence = SEEK_SET;
  for (;;) {
    if (fcntl(fd, F_SETLKW, &fl) == 0) return 1;
    if (errno != EINTR) return 0;
  }
}

static int open_table(int create)
{
  stralloc sa = STRALLOC_ZERO;
  int fd;
  if (!mailroot_path(&sa, "authfail/table")) return -1;
  fd = open(sa.s, (create ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0660);
  if (fd < 0 && errno == ENOENT && create) {
    stralloc d = STRALLOC_ZERO;
    if (mailroot_path(&d, "authfail")) {
      if (mkdir(d.s, 0770) == 0 || errno == EEXIST)
        fd = open(sa.s, O_RDWR | O_CREAT | O_CLOEXEC, 0660);
    }
    stralloc_free(&d);
  }
  stralloc_free(&sa);
  return fd;
}

/* Reads the probe window of key into win (AUTHFAIL_PROBE records, zeros past the end of file).
 * Returns the first slot number, or -1 on error. */
static long read_window(int fd, unsigned char const key[16], unsigned char *win)
{
  unsigned long slot = (((unsigned long)key[0] << 8) | key[1]) % AUTHFAIL_SLOTS;
  size_t want = (size_t)AUTHFAIL_PROBE * REC, got = 0;
  off_t off;
  if (slot > AUTHFAIL_SLOTS - AUTHFAIL_PROBE) slot = AUTHFAIL_SLOTS - AUTHFAIL_PROBE;
  off = (off_t)slot * REC;
  memset(win, 0, want);
  while (got < want) {
    ssize_t r = pread(fd, win + got, want - got, off + (off_t)got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (!r) break;
    got += (size_t)r;
  }
  return (long)slot;
}

static int find(unsigned char const *win, unsigned char const key[16])
{
  int i;
  for (i = 0; i < AUTHFAIL_PROBE; i++)
    if (!memcmp(win + i * REC, key, 16)) return i;
  return -1;
}

int authfail_blocked_at(char const *ip, uint32_t now)
{
  unsigned char key[16], win[AUTHFAIL_PROBE * REC];
  int fd, i, r = 0;
  key_of(ip, key);
  fd = open_table(0);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  if (!lockfd(fd, 0) || read_window(fd, key, win) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  close(fd);
  i = find(win, key);
  if (i >= 0 && get32(win + i * REC + 24) > now) r = 1;
  return r;
}

static uint32_t limit(void)
{
  unsigned long u;
  if (control_readuint("authfail-limit", AUTHFAIL_LIMIT, &u) != 1 || !u || u > 100000)
    return AUTHFAIL_LIMIT;
  return (uint32_t)u;
}

static uint32_t block_seconds(void)
{
  unsigned long u;
  if (control_readuint("authfail-block", AUTHFAIL_BLOCK, &u) != 1 || u > 86400 * 30)
    return AUTHFAIL_BLOCK;
  return (uint32_t)u;
}

/* Adds delta (+1 or -1) to ip's count in the current window. Returns 1 if ip is blocked
 * after the update, 0 if not, -1 on error; *countp gets the count, *before whether ip was
 * blocked before the update. now 0 is the clock read once the lock is held: parallel
 * sessions then see the window in the order they update it (a clock read before the wait for
 * the lock could be a second behind the window's start, which used to restart the count). */
static int update(char const *ip, uint32_t now, int delta, uint32_t *countp, int *before)
{
  unsigned char key[16], win[AUTHFAIL_PROBE * REC];
  unsigned char *rec;
  long slot;
  int fd, i, blocked;
  uint32_t start, count, until;
  key_of(ip, key);
  fd = open_table(1);
  if (fd < 0) return -1;
  if (!lockfd(fd, 1)) goto err;
  if (!now) now = (uint32_t)time(0);
  slot = read_window(fd, key, win);
  if (slot < 0) goto err;
  i = find(win, key);
  if (i < 0) {
    /* a free slot, else the one whose activity is oldest */
    uint32_t best = 0xffffffffu;
    int j;
    for (j = 0; j < AUTHFAIL_PROBE; j++) {
      unsigned char *r = win + j * REC;
      uint32_t last = get32(r + 16) > get32(r + 24) ? get32(r + 16) : get32(r + 24);
      static unsigned char const zero[16];
      if (!memcmp(r, zero, 16)) { i = j; break; }
      if (get32(r + 24) > now) continue; /* never evict a live block if avoidable */
      if (last < best) { best = last; i = j; }
    }
    if (i < 0) i = 0;
    memset(win + i * REC, 0, REC);
    memcpy(win + i * REC, key, 16);
  }
  rec = win + i * REC;
  start = get32(rec + 16);
  count = get32(rec + 20);
  until = get32(rec + 24);
  *before = until > now;
  /* a new window once this one is over, or when the clock went back by more than one (a
   * reading a little behind the start, from a caller's own clock, counts in this window) */
  if (now < start ? start - now >= AUTHFAIL_WINDOW : now - start >= AUTHFAIL_WINDOW) {
    start = now;
    count = 0;
  }
  if (delta > 0 && count < 0xffffffffu) count++;
  if (delta < 0 && count) count--;
  if (delta > 0 && count > limit()) until = now + block_seconds();
  *countp = count;
  put32(rec + 16, start);
  put32(rec + 20, count);
  put32(rec + 24, until);
  blocked = until > now;
  {
    size_t done = 0;
    off_t off = (off_t)(slot + i) * REC;
    while (done < REC) {
      ssize_t w = pwrite(fd, rec + done, REC - done, off + (off_t)done);
      if (w < 0) {
        if (errno == EINTR) continue;
        goto err;
      }
      done += (size_t)w;
    }
  }
  close(fd);
  return blocked;
err:
  {
    int e = errno;
    close(fd);
    errno = e;
  }
  return -1;
}

int authfail_record_at(char const *ip, uint32_t now)
{
  uint32_t n;
  int b;
  return update(ip, now, 1, &n, &b);
}

/* "More than LIMIT failures block": attempts 1..LIMIT+1 of a window are checked (the last
 * of them starts the block), any later one is not. */
int authfail_attempt_at(char const *ip, uint32_t now)
{
  uint32_t n;
  int b, r = update(ip, now, 1, &n, &b);
  if (r < 0) return -1;
  return !b && n <= limit() + 1;
}

int authfail_forgive_at(char const *ip, uint32_t now)
{
  uint32_t n;
  int b;
  return update(ip, now, -1, &n, &b) < 0 ? -1 : 0;
}

int authfail_attempt(char const *ip)
{
  return authfail_attempt_at(ip, 0);
}

int authfail_forgive(char const *ip)
{
  return authfail_forgive_at(ip, 0);
}

int authfail_blocked(char const *ip)
{
  return authfail_blocked_at(ip, (uint32_t)time(0));
}

int authfail_record(char const *ip)
{
  return authfail_record_at(ip, 0);
}
