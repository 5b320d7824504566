/* msgcache: the per-folder cache of ENVELOPE, BODYSTRUCTURE, BODY, header and size. See
 * msgcache.h. */
#define _DEFAULT_SOURCE /* MAP_POPULATE */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/types.h>
#include "msgcache.h"

#define HEAD "PBC2 V"
#define FILE_MAX 0x7fffff00u /* offsets are 31 bits */
#define HEAD_MAX 48          /* "PBC2 V<uidvalidity> K<10 digits> <10 digits>\n" */
#define MARK_STEP 262144     /* the mark moves when this much past it could be hashed */

uint32_t msgcache_sum(char const *s, size_t len, uint32_t h)
{
  /* FNV-1a's idea, 8 octets a step (a SEARCH checks megabytes of entries) */
  uint64_t x = h ^ ((uint64_t)len << 32);
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    x = (x ^ w) * 0x100000001b3ull;
    x ^= x >> 29;
  }
  for (; i < len; i++) x = (x ^ (unsigned char)s[i]) * 0x100000001b3ull;
  return (uint32_t)(x ^ (x >> 32));
}

/* The header line with mark k into buf (HEAD_MAX); returns its length. The last field is
 * the hash of what precedes it, so that a header read while another session rewrites it in
 * place (no lock is taken to read) is found torn and its mark not believed. */
/* u in exactly 10 digits, zeroes ahead (a field whose place must not depend on its value) */
static void fmt10(char *buf, uint32_t u)
{
  char t[UINT32_FMT];
  size_t d = uint32_fmt(t, u);
  memset(buf, '0', 10 - d);
  memcpy(buf + 10 - d, t, d);
}

static size_t head_fmt(char *buf, uint32_t uidvalidity, uint32_t k)
{
  size_t n = sizeof HEAD - 1;
  memcpy(buf, HEAD, n);
  n += uint32_fmt(buf + n, uidvalidity);
  buf[n++] = ' ';
  buf[n++] = 'K';
  fmt10(buf + n, k);
  n += 10;
  buf[n] = ' ';
  fmt10(buf + n + 1, msgcache_sum(buf, n, 2166136261u));
  n += 11;
  buf[n++] = '\n';
  return n;
}

/* Reads the header at the start of s[0..len): 1 with its length in *hl and its mark in *k
 * (0 when torn), 0 when it is not a header of this UIDVALIDITY. */
static int head_scan(char const *s, size_t len, uint32_t uidvalidity, size_t *hl, size_t *k)
{
  char buf[HEAD_MAX];
  char const *nl;
  uint32_t v, m = 0;
  size_t n, i;
  if (!len) return 0; /* an empty file is not mapped: s may be NULL */
  nl = memchr(s, '\n', len < HEAD_MAX ? len : HEAD_MAX);
  if (!nl || (size_t)(nl - s) <= sizeof HEAD - 1 || memcmp(s, HEAD, sizeof HEAD - 1)) return 0;
  n = uint32_scan(s + sizeof HEAD - 1, &v);
  if (!n || v != uidvalidity) return 0;
  n += sizeof HEAD - 1;
  if ((size_t)(nl - s) != n + 23 || s[n] != ' ' || s[n + 1] != 'K') return 0;
  for (i = n + 2; i < n + 12; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    m = m * 10 + (uint32_t)(s[i] - '0');
  }
  *hl = n + 24;
  *k = head_fmt(buf, uidvalidity, m) == n + 24 && !memcmp(buf, s, n + 24) ? m : 0;
  return 1;
}

static size_t uniqlen(char const *name)
{
  char const *c = strchr(name, ':');
  return c ? (size_t)(c - name) : strlen(name);
}

void msgcache_init(msgcache *c, char const *dir, uint32_t uidvalidity)
{
  msgcache_close(c);
  if (strlen(dir) + sizeof MSGCACHE_FILE + 1 > sizeof c->dir) {
    c->broken = 1;
    return;
  }
  strcpy(c->dir, dir);
  c->uidvalidity = uidvalidity;
  c->broken = 0;
}

void msgcache_close(msgcache *c)
{
  if (c->map) munmap(c->map, c->maplen);
  c->map = 0;
  c->maplen = 0;
  if (c->fd >= 0) fd_close(c->fd);
  c->fd = -1;
  free(c->ix);
  c->ix = 0;
  c->nix = c->aix = 0;
  c->valid = 0;
  c->known = 0;
  c->ixk = 0;
  c->sorted = 1;
  stralloc_free(&c->pend);
  c->npend = 0;
  c->looked = 0;
  c->broken = 1; /* until msgcache_init */
}

static int lockf_w(int fd, int on)
{
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = on ? F_WRLCK : F_UNLCK;
  fl.l_whence = SEEK_SET;
  for (;;) {
    if (fcntl(fd, F_SETLKW, &fl) == 0) return 1;
    if (errno != EINTR) return 0;
  }
}

static int num(char const **p, char const *end, uint64_t *v)
{
  char const *s = *p;
  uint64_t x = 0;
  if (s >= end || *s < '0' || *s > '9') return 0;
  while (s < end && *s >= '0' && *s <= '9') {
    if (x > (UINT64_MAX - 9) / 10) return 0;
    x = x * 10 + (uint64_t)(*s++ - '0');
  }
  if (s >= end || *s != ' ') return 0;
  *p = s + 1;
  *v = x;
  return 1;
}

/* Parses the entry at off within [0, len) of s: 1 with its size in *elen and e filled (name
 * in *nm, *nml), 0 when it does not check out (its hash too, with verify). */
static int parse_ent(char const *s, size_t len, size_t off, size_t *elen, uint32_t *uid,
                     msgcache_ent *e, char const **nm, size_t *nml, int verify)
{
  char const *p = s + off, *end = s + len, *nl, *body;
  uint64_t v[9];
  size_t k;
  if (len - off < 4 || p[0] != 'E' || p[1] != ' ') return 0;
  nl = memchr(p, '\n', (size_t)(end - p) < 512 ? (size_t)(end - p) : 512);
  if (!nl) return 0;
  p += 2;
  for (k = 0; k < 9; k++)
    if (!num(&p, nl, &v[k])) return 0;
  if (p >= nl || !v[2] || v[2] > UINT32_MAX || v[1] > 0xffffffffu) return 0;
  *nm = p;
  *nml = (size_t)(nl - p);
  body = nl + 1;
  {
    size_t envl = (size_t)v[5], bsl = (size_t)v[6], bodyl = (size_t)v[7], hdrl = (size_t)v[8];
    size_t total = envl + bsl + bodyl + hdrl, skip = 2;
    char const *from = s + off;
    if (v[5] > len || v[6] > len || v[7] > len || v[8] > len || total > len) return 0;
    if ((size_t)(end - body) < total + 1 || body[total] != '\n') return 0;
    while (from[skip] != ' ') skip++; /* past <sum> */
    skip++;
    if (verify && msgcache_sum(from + skip, (size_t)(body + total - from) - skip, 2166136261u) !=
        (uint32_t)v[0])
      return 0;
    *uid = (uint32_t)v[1];
    e->mtime = (int64_t)v[2] - 1; /* stored + 1, so that 0 never means a time */
    e->wsize = v[3];
    e->flags = (unsigned int)v[4];
    e->env = body;
    e->envlen = envl;
    e->bs = body + envl;
    e->bslen = bsl;
    e->body = e->bs + bsl;
    e->bodylen = bodyl;
    e->hdr = e->body + bodyl;
    e->hdrlen = hdrl;
    *elen = (size_t)(body + total + 1 - from);
  }
  return 1;
}

static int ixcmp(void const *a, void const *b)
{
  uint32_t x = ((msgcache_ix const *)a)->uid, y = ((msgcache_ix const *)b)->uid;
  return x < y ? -1 : x > y;
}

/* populate: the whole file is about to be read (its first scan in the session): its pages
 * are mapped in one call rather than a fault for every 16 of them */
static int map_file(msgcache *c, size_t size, int populate)
{
  if (c->map && c->maplen == size) return 1;
  if (c->map) munmap(c->map, c->maplen);
  c->map = 0;
  c->maplen = 0;
  if (!size) return 1;
  c->map = mmap(0, size, PROT_READ, MAP_SHARED | (populate ? MAP_POPULATE : 0), c->fd, 0);
  if (c->map == MAP_FAILED) {
    c->map = 0;
    return 0;
  }
  c->maplen = size;
  return 1;
}

static int index_read(msgcache *c, size_t hl);

/* Reads the entries from c->valid to size into the index. 1 all good, 0 stopped at an entry
 * that does not check out (c->valid is its offset), -1 out of memory. */
static int scan(msgcache *c, size_t size)
{
  size_t off = c->valid;
  if (!map_file(c, size, 0)) return -1;
  if (off == 0) {
    size_t hl, k;
    int r;
    if (!head_scan(c->map, size, c->uidvalidity, &hl, &k)) return 0;
    c->known = k <= size ? k : 0;
    c->ixk = 0;
    r = index_read(c, hl);
    if (r < 0) return -1;
    off = r ? c->ixk : hl;
    if (size - off > MARK_STEP) {
      /* most of the file is read from here on: its pages mapped in one call */
      msgcache_rest(c);
      if (!map_file(c, size, 1)) return -1;
    }
    c->valid = off;
  }
  while (off < size) {
    size_t el, nml;
    uint32_t uid;
    msgcache_ent e;
    char const *nm;
    /* the hash is checked when the entry is used (once): a session that reads the index
     * does not hash the whole file */
    if (!parse_ent(c->map, size, off, &el, &uid, &e, &nm, &nml, 0)) return 0;
    if (c->nix == c->aix) {
      size_t na = c->aix ? c->aix * 2 : 256;
      msgcache_ix *x = realloc(c->ix, na * sizeof *x);
      if (!x) return -1;
      c->ix = x;
      c->aix = na;
    }
    if (c->nix && c->ix[c->nix - 1].uid > uid) c->sorted = 0;
    c->ix[c->nix].uid = uid;
    c->ix[c->nix].off = (uint32_t)off;
    c->ix[c->nix].ok = off < c->known; /* before the mark: hashed once, on disk since */
    c->nix++;
    off += el;
    c->valid = off;
  }
  return 1;
}

/* The index (MSGCACHE_INDEX): the UID and offset of every entry before a mark, sorted by
 * UID, so that a session need not walk the entries (10,000 of them, a cache miss each, took
 * a quarter of a short session). It is written by a session that had to walk them; it
 * belongs to one cache file (its inode and the hash of the 64 octets before its mark) and
 * covers only entries before the file's mark, which never change; anything that does not
 * check out is ignored and the entries walked.
 *   "PBI1 V<uidvalidity> I<inode> K<mark> N<count> T<tail hash> S<hash>\n"
 *   then <count> pairs of 4-octet little-endian UID and offset. <hash> covers the line up to
 *   " S" and the pairs. */
static void index_path(msgcache const *c, char *p, char const *suffix, size_t slen)
{
  size_t l = strlen(c->dir);
  memcpy(p, c->dir, l);
  p[l] = '/';
  memcpy(p + l + 1, MSGCACHE_INDEX, sizeof MSGCACHE_INDEX - 1);
  memcpy(p + l + sizeof MSGCACHE_INDEX, suffix, slen);
  p[l + sizeof MSGCACHE_INDEX + slen] = 0;
}

static uint32_t tail_sum(msgcache const *c, size_t k)
{
  size_t t = k < 64 ? k : 64;
  return msgcache_sum(c->map + k - t, t, 2166136261u);
}

static size_t index_head(char *buf, msgcache const *c, uint64_t ino, size_t k, size_t n)
{
  size_t w = 0;
  memcpy(buf, "PBI1 V", 6);
  w = 6;
  w += uint32_fmt(buf + w, c->uidvalidity);
  memcpy(buf + w, " I", 2);
  w += 2;
  w += uint64_fmt(buf + w, ino);
  memcpy(buf + w, " K", 2);
  w += 2;
  w += uint32_fmt(buf + w, (uint32_t)k);
  memcpy(buf + w, " N", 2);
  w += 2;
  w += uint32_fmt(buf + w, (uint32_t)n);
  memcpy(buf + w, " T", 2);
  w += 2;
  w += uint32_fmt(buf + w, tail_sum(c, k));
  return w;
}

/* Fills the (empty) table from the index: 1 (c->ixk is the offset the walk goes on from),
 * 0 no usable index, -1 out of memory. The file is mapped; hl is the header's length. */
static int index_read(msgcache *c, size_t hl)
{
  char p[sizeof c->dir + sizeof MSGCACHE_INDEX + 8], head[128];
  struct stat st, cst;
  unsigned char *buf = 0;
  uint32_t v, k, n, h;
  uint64_t ino;
  size_t len, w, i;
  ssize_t r;
  int fd, ok = 0;
  if (c->known <= hl || fstat(c->fd, &cst) < 0) return 0;
  index_path(c, p, "", 0);
  fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return 0;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 16 ||
      (uint64_t)st.st_size > 128 + 8 * (uint64_t)(c->known / 16))
    goto out;
  len = (size_t)st.st_size;
  buf = malloc(len);
  if (!buf) {
    ok = -1;
    goto out;
  }
  for (w = 0; w < len; w += (size_t)r) {
    r = read(fd, buf + w, len - w);
    if (r < 0 && errno == EINTR) r = 0;
    else if (r <= 0) goto out;
  }
  {
    /* the line: parse its numbers, then format it again and compare (one format) */
    char const *s = (char const *)buf, *e = memchr(s, '\n', len < 128 ? len : 128), *q;
    size_t hw;
    if (!e || memcmp(s, "PBI1 V", 6)) goto out;
    q = s + 6;
    if (!(i = uint32_scan(q, &v)) || v != c->uidvalidity || memcmp(q += i, " I", 2)) goto out;
    q += 2;
    if (!(i = uint64_scan(q, &ino)) || ino != (uint64_t)cst.st_ino || memcmp(q += i, " K", 2))
      goto out;
    q += 2;
    if (!(i = uint32_scan(q, &k)) || k < hl || k > c->known || memcmp(q += i, " N", 2)) goto out;
    q += 2;
    if (!(i = uint32_scan(q, &n)) || (size_t)(e + 1 - s) + 8 * (size_t)n != len) goto out;
    hw = index_head(head, c, ino, k, n);
    if ((size_t)(e - s) <= hw + 2 || memcmp(s, head, hw) || memcmp(s + hw, " S", 2)) goto out;
    if (e - (s + hw + 2) != 10 || uint32_scan(s + hw + 2, &h) != 10) goto out;
    w = (size_t)(e + 1 - s);
    if (msgcache_sum((char const *)buf + w, len - w, msgcache_sum(s, hw, 2166136261u)) != h)
      goto out;
  }
  if (n > c->aix) {
    msgcache_ix *x = realloc(c->ix, n * sizeof *x);
    if (!x) {
      ok = -1;
      goto out;
    }
    c->ix = x;
    c->aix = n;
  }
  for (i = 0; i < n; i++) {
    uint32_t u, o;
    uint32_unpack((char const *)buf + w + 8 * i, &u);
    uint32_unpack((char const *)buf + w + 8 * i + 4, &o);
    if (o < hl || o >= k || (i && c->ix[i - 1].uid > u)) goto out;
    c->ix[i].uid = u;
    c->ix[i].off = o;
    c->ix[i].ok = 1;
  }
  c->nix = n;
  c->ixk = k;
  ok = 1;
out:
  if (ok <= 0) c->nix = 0;
  free(buf);
  fd_close(fd);
  return ok;
}

/* Writes the index of the entries before the mark (the table is sorted): a new file beside,
 * renamed over the old one. Nothing is fsync'ed: a torn one does not check out. */
static void index_write(msgcache *c)
{
  char p[sizeof c->dir + sizeof MSGCACHE_INDEX + 8], t[sizeof c->dir + sizeof MSGCACHE_INDEX + 32];
  char head[128], num[UINT_FMT + 8];
  struct stat cst;
  unsigned char *buf;
  size_t i, n = 0, hw, w;
  uint32_t h;
  int fd;
  if (fstat(c->fd, &cst) < 0) return;
  for (i = 0; i < c->nix; i++)
    if (c->ix[i].off < c->known) n++;
  hw = index_head(head, c, (uint64_t)cst.st_ino, c->known, n);
  buf = malloc(hw + 16 + 8 * n);
  if (!buf) return;
  memcpy(buf, head, hw);
  w = hw + 2 + 10 + 1;
  for (i = 0, n = 0; i < c->nix; i++)
    if (c->ix[i].off < c->known) {
      uint32_pack((char *)buf + w + 8 * n, c->ix[i].uid);
      uint32_pack((char *)buf + w + 8 * n + 4, c->ix[i].off);
      n++;
    }
  /* the hash is written in 10 digits (zeroes ahead) so that the pairs' place is known first */
  h = msgcache_sum((char const *)buf + w, 8 * n, msgcache_sum(head, hw, 2166136261u));
  buf[hw] = ' ';
  buf[hw + 1] = 'S';
  fmt10((char *)buf + hw + 2, h);
  buf[hw + 12] = '\n';
  index_path(c, p, "", 0);
  memcpy(num, ".tmp.", 5);
  i = 5 + uint_fmt(num + 5, (unsigned int)getpid());
  index_path(c, t, num, i);
  fd = open(t, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    size_t len = w + 8 * n;
    if (allwrite(fd, (char const *)buf, len) != len || rename(t, p) < 0) unlink(t);
    fd_close(fd);
  }
  free(buf);
}

static int open_file(msgcache *c, char *p, int flags)
{
  size_t l = strlen(c->dir);
  memcpy(p, c->dir, l);
  p[l] = '/';
  memcpy(p + l + 1, MSGCACHE_FILE, sizeof MSGCACHE_FILE);
  return open(p, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
}

static void forget(msgcache *c)
{
  c->looked = 0;
  if (c->map) munmap(c->map, c->maplen);
  c->map = 0;
  c->maplen = 0;
  if (c->fd >= 0) fd_close(c->fd);
  c->fd = -1;
  c->nix = 0;
  c->valid = 0;
  c->known = 0;
  c->ixk = 0;
  c->sorted = 1;
}

/* Opens the file (creating it) and reads what it holds. A file replaced by another session
 * (started afresh) is opened again. */
static int ready(msgcache *c)
{
  struct stat st;
  char p[sizeof c->dir + sizeof MSGCACHE_FILE + 1];
  if (c->broken) return 0;
  if (c->looked) return 1; /* read at this command's first use */
  if (c->fd >= 0) {
    struct stat now;
    size_t l = strlen(c->dir);
    memcpy(p, c->dir, l);
    p[l] = '/';
    memcpy(p + l + 1, MSGCACHE_FILE, sizeof MSGCACHE_FILE);
    if (fstat(c->fd, &st) < 0 || stat(p, &now) < 0 || now.st_ino != st.st_ino ||
        now.st_dev != st.st_dev)
      forget(c);
  }
  if (c->fd < 0) {
    c->fd = open_file(c, p, O_RDWR | O_CREAT);
    if (c->fd < 0) {
      c->broken = 1;
      return 0;
    }
    c->valid = 0;
  }
  if (fstat(c->fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > FILE_MAX) {
    c->broken = 1;
    return 0;
  }
  {
    if (scan(c, (size_t)st.st_size) < 0) {
      c->broken = 1;
      return 0;
    }
  }
  if (!c->sorted) {
    qsort(c->ix, c->nix, sizeof *c->ix, &ixcmp);
    c->sorted = 1;
  }
  /* the entries before the mark were walked: the next session reads them from an index */
  if (c->known >= c->ixk + MARK_STEP) {
    index_write(c);
    c->ixk = c->known;
  }
  c->looked = 1;
  return 1;
}

int msgcache_get(msgcache *c, uint32_t uid, char const *name, msgcache_ent *e)
{
  size_t lo = 0, hi, ul = uniqlen(name);
  if (!ready(c)) return 0;
  hi = c->nix;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c->ix[mid].uid < uid) lo = mid + 1;
    else hi = mid;
  }
  for (; lo < c->nix && c->ix[lo].uid == uid; lo++) {
    size_t el, nml;
    uint32_t u;
    char const *nm;
    int v = c->ix[lo].ok;
    if (v < 0) continue;
    if (!parse_ent(c->map, c->valid, c->ix[lo].off, &el, &u, e, &nm, &nml, !v)) {
      c->ix[lo].ok = -1;
      continue;
    }
    c->ix[lo].ok = 1;
    if (u == uid && nml == ul && !memcmp(nm, name, ul)) return 1;
  }
  return 0;
}

int msgcache_put(msgcache *c, uint32_t uid, char const *name, msgcache_ent const *e)
{
  char fmt[UINT64_FMT];
  size_t start = c->pend.len, sumat, ul = uniqlen(name);
  uint32_t h;
  if (c->broken || ul > 255 || memchr(name, '\n', ul) || memchr(name, ' ', ul)) return 0;
  if (!stralloc_catb(&c->pend, "E 0000000000 ", 13)) return -1;
  sumat = c->pend.len;
  if (!stralloc_catb(&c->pend, fmt, uint32_fmt(fmt, uid)) || !stralloc_catb(&c->pend, " ", 1) ||
      !stralloc_catb(&c->pend, fmt, uint64_fmt(fmt, (uint64_t)(e->mtime + 1))) ||
      !stralloc_catb(&c->pend, " ", 1) ||
      !stralloc_catb(&c->pend, fmt, uint64_fmt(fmt, e->wsize)) ||
      !stralloc_catb(&c->pend, " ", 1) ||
      !stralloc_catb(&c->pend, fmt, uint_fmt(fmt, e->flags)) ||
      !stralloc_catb(&c->pend, " ", 1) ||
      !stralloc_catb(&c->pend, fmt, uint64_fmt(fmt, e->envlen)) ||
      !stralloc_catb(&c->pend, " ", 1) ||
      !stralloc_catb(&c->pend, fmt, uint64_fmt(fmt, e->bslen)) ||
      !stralloc_catb(&c->pend, " ", 1) ||
      !stralloc_catb(&c->pend, fmt, uint64_fmt(fmt, e->bodylen)) ||
      !stralloc_catb(&c->pend, " ", 1) ||
      !stralloc_catb(&c->pend, fmt, uint64_fmt(fmt, e->hdrlen)) ||
      !stralloc_catb(&c->pend, " ", 1) || !stralloc_catb(&c->pend, name, ul) ||
      !stralloc_catb(&c->pend, "\n", 1) || !stralloc_catb(&c->pend, e->env, e->envlen) ||
      !stralloc_catb(&c->pend, e->bs, e->bslen) ||
      !stralloc_catb(&c->pend, e->body, e->bodylen) ||
      !stralloc_catb(&c->pend, e->hdr, e->hdrlen)) {
    c->pend.len = start;
    return -1;
  }
  if (e->mtime < -1) { /* a date before 1970 is not kept */
    c->pend.len = start;
    return 0;
  }
  h = msgcache_sum(c->pend.s + sumat, c->pend.len - sumat, 2166136261u);
  if (!stralloc_catb(&c->pend, "\n", 1)) {
    c->pend.len = start;
    return -1;
  }
  {
    size_t n = uint32_fmt(fmt, h), k;
    for (k = 0; k < 10 - n; k++) c->pend.s[start + 2 + k] = '0';
    memcpy(c->pend.s + start + 2 + k, fmt, n);
  }
  c->npend++;
  /* bounded: a long FETCH writes as it goes */
  if (c->pend.len > (1u << 20)) return msgcache_done(c, 0) < 0 ? -1 : 1;
  return 1;
}

/* Under the lock of the old file: a new file with the header only, renamed over the old
 * one (never truncated: other sessions may have it mapped); c then holds the new one,
 * locked. */
static int restart(msgcache *c)
{
  char buf[HEAD_MAX], p[sizeof c->dir + sizeof MSGCACHE_FILE + 1];
  char t[sizeof c->dir + sizeof MSGCACHE_FILE + 32];
  size_t n = head_fmt(buf, c->uidvalidity, 0), l = strlen(c->dir), k;
  int fd;
  n = head_fmt(buf, c->uidvalidity, (uint32_t)n); /* nothing to hash yet: marked up to here */
  memcpy(p, c->dir, l);
  p[l] = '/';
  memcpy(p + l + 1, MSGCACHE_FILE, sizeof MSGCACHE_FILE);
  memcpy(t, p, l + sizeof MSGCACHE_FILE);
  k = l + sizeof MSGCACHE_FILE;
  memcpy(t + k, ".tmp.", 5);
  k += 5;
  t[k + uint_fmt(t + k, (unsigned int)getpid())] = 0;
  fd = open(t, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return 0;
  if (!lockf_w(fd, 1) || pwrite(fd, buf, n, 0) != (ssize_t)n || rename(t, p) < 0) {
    unlink(t);
    fd_close(fd);
    return 0;
  }
  forget(c); /* closes the old file: its lock goes */
  c->fd = fd;
  c->valid = n;
  c->known = n;
  return 1;
}

/* Under the lock, after an append that ends at end: when the part of the file past the
 * header's mark has grown by MARK_STEP, the entries in it that others appended (c->valid
 * on; ours, just written from memory, need no hash) are hashed, the file is fdatasync'ed,
 * and only then is the mark moved, so that a mark read after a crash never covers an entry
 * that was not on disk whole. Sessions then use the entries before the mark without hashing
 * them (a SEARCH hashed all 10 MB of a 10,000-message folder's entries in every session).
 * A bad entry (a crash's work) stops the mark before it. 1 done or not needed, 0 error. */
static int mark(msgcache *c, size_t end)
{
  char buf[HEAD_MAX];
  ssize_t r;
  size_t hl, k, off;
  do r = pread(c->fd, buf, sizeof buf, 0);
  while (r < 0 && errno == EINTR);
  if (r <= 0 || !head_scan(buf, (size_t)r, c->uidvalidity, &hl, &k)) return r >= 0;
  if (k < hl) k = hl;
  if (end < k + MARK_STEP || k > c->valid) return 1;
  if (c->valid > k && c->maplen < c->valid && !map_file(c, c->valid, 0)) return 0;
  for (off = k; off < c->valid;) {
    size_t el, nml;
    uint32_t uid;
    msgcache_ent e;
    char const *nm;
    if (!parse_ent(c->map, c->valid, off, &el, &uid, &e, &nm, &nml, 1)) {
      end = off;
      break;
    }
    off += el;
  }
  if (end < k + MARK_STEP) return 1;
  if (fdatasync(c->fd) < 0) return 0;
  hl = head_fmt(buf, c->uidvalidity, (uint32_t)end);
  do r = pwrite(c->fd, buf, hl, 0);
  while (r < 0 && errno == EINTR);
  return r == (ssize_t)hl;
}

int msgcache_done(msgcache *c, size_t live)
{
  int r = 1;
  struct stat st;
  if (c->npend && !c->broken && c->fd < 0) ready(c);
  if (c->npend && !c->broken && c->fd >= 0) {
    if (!lockf_w(c->fd, 1)) r = -1;
    else {
      if (fstat(c->fd, &st) < 0) r = -1;
      else {
        size_t size = (size_t)st.st_size;
        int sr = 1;
        if (size > c->valid) sr = scan(c, size); /* what others appended meanwhile */
        if (sr < 0) r = -1;
        else if (c->valid == 0 || (live && c->nix > 2 * live + 1024)) {
          if (!restart(c)) r = -1;
        } else if (sr == 0 && c->valid < size && ftruncate(c->fd, (off_t)c->valid) < 0)
          r = -1; /* a torn tail (a crash during an append): cut off */
        if (r > 0 && (uint64_t)c->valid + c->pend.len <= FILE_MAX) {
          size_t w = 0;
          while (w < c->pend.len) {
            ssize_t k = pwrite(c->fd, c->pend.s + w, c->pend.len - w, (off_t)(c->valid + w));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
              r = -1;
              break;
            }
            w += (size_t)k;
          }
          /* the new entries are read back (and indexed) at the next use */
          if (r > 0 && live && !mark(c, c->valid + c->pend.len)) r = -1;
        }
      }
      lockf_w(c->fd, 0);
    }
  }
  c->pend.len = 0;
  c->npend = 0;
  if (c->pend.a > (2u << 20)) stralloc_free(&c->pend);
  c->looked = 0; /* the mapping stays for the next command (a FETCH then a SEARCH) */
  return r;
}

void msgcache_rest(msgcache *c)
{
  if (c->map) munmap(c->map, c->maplen);
  c->map = 0;
  c->maplen = 0;
}
