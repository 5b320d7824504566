/* pop3-maildir: the POP3 TRANSACTION and UPDATE states over one Maildir (after login).
 *
 * Run by auth-check (which pop3-serve runs) with HOME = the Maildir and USER = the account.
 * Holds the user's mail and nothing of the network before login: the session arrives on fd 0/1
 * (pop3-serve has already put the TLS fds there after STLS), the rest of a pipelined client's
 * input in $POP3_INPUT. Writes the +OK that answers PASS / AUTH itself.
 */
#include <dirent.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/direntry.h>
#include <skalibs/djbunix.h>
#include <skalibs/gccattributes.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include "maildir.h"
#include "pagedrop.h"
#include "pop3.h"
#include "pop3io.h"
#include "quotastate.h"

char const *PROG = "pop3-maildir";
#define USAGE "pop3-maildir [-t timeout] [-m maxmessages]"

#define F_CUR 1     /* the file is in cur/ (else new/) */
#define F_DELE 2    /* marked for deletion */
#define F_SEEN 4    /* retrieved in this session: gets the S flag at QUIT */
#define F_SIZED 8   /* size known */
#define F_GONE 16   /* the file vanished under us */
#define F_CACHED 32 /* size from the size cache */
#define F_COUNTED 64 /* size counted from the file in this session */
#define F_MAPPED 128 /* the unique part of the name is in the mapped size cache */

typedef struct msg_s msg;
struct msg_s {
  uint32_t name;      /* offset of the NUL-terminated file name in names; with F_MAPPED, of its
                       * unique part in the mapped size cache, the rest being rest[sfx] */
  uint16_t ulen;      /* length of its unique part (before ':') */
  uint16_t flags;
  uint64_t size : 48; /* wire size (CRLF, no stuffing) */
  uint64_t sfx : 16;
};

/* After the sizes are known, the names of the messages that the size cache lists are not kept
 * in names: their unique parts are read from the cache file, mapped (its pages go out of the
 * process while the session rests, and come back from the page cache when a name is needed),
 * and the rest of each name (":2,S", "" in new/), of which a Maildir has a handful, is kept
 * once in names (rest[]). 2,000 messages: 100 kB of names less on the heap. */
#define RESTS 64
static char const *map;
static size_t maplen;
static uint32_t rest_at[RESTS];
static unsigned int nrest;

static stralloc names = STRALLOC_ZERO;
static msg *msgs;
static unsigned long nmsgs;
static unsigned long maxmsgs = 100000;
static int sized;
static char fbuf[16384];
static int lockfd = -1; /* MAILDIR/.pop3.lock, held (flock) for the whole session */

/* The client has been quiet for a while (lib/timedio's rest): the size cache's buffer, the
 * program's text and the stack of the last deep call go out of the session's memory until the
 * next command needs them. */
static void rest(void)
{
  pagedrop_buf(fbuf, sizeof fbuf);
  if (map) pagedrop_file(map, maplen);
  pagedrop_stack();
}

static void die_io(void) gccattr_noreturn;

static void die_io(void)
{
  /* The client is gone or stuck: leave everything as it was (no UPDATE). */
  if (errno == ETIMEDOUT) _exit(99);
  _exit(0);
}

static void put(char const *s)
{
  if (!pop3io_puts(s)) die_io();
}

static void putn(char const *s, size_t len)
{
  if (!pop3io_put(s, len)) die_io();
}

static void putu(uint64_t u)
{
  char fmt[UINT64_FMT];
  putn(fmt, uint64_fmt(fmt, u));
}

/* The file name of m: in names, or put together from the mapped cache into one of four
 * rotating buffers (valid until four more calls). */
static char const *mname(msg const *m)
{
  static char buf[4][256];
  static unsigned int k;
  char *b;
  if (!(m->flags & F_MAPPED)) return names.s + m->name;
  b = buf[k++ & 3];
  memcpy(b, map + m->name, m->ulen);
  strcpy(b + m->ulen, names.s + rest_at[m->sfx]);
  return b;
}

/* The order of unique names: delivery order. A Maildir name starts with the delivery time in
 * seconds; names whose digit runs have the same length compare as bytes (so the time as a
 * number first), a shorter run is an earlier time. The size cache is kept in this order too,
 * so that reading it is one merge with the listing. */
static int keycmp(char const *a, size_t alen, char const *b, size_t blen)
{
  size_t da = 0, db = 0;
  int r;
  while (da < alen && da < 20 && a[da] >= '0' && a[da] <= '9') da++;
  while (db < blen && db < 20 && b[db] >= '0' && b[db] <= '9') db++;
  if (da != db) return da < db ? -1 : 1;
  r = memcmp(a, b, alen < blen ? alen : blen);
  return r ? r : alen < blen ? -1 : alen > blen;
}

/* Listing order: by unique name, then (the same message in new/ and cur/) by file name. */
static int bytime(msg const *x, msg const *y)
{
  char const *a = mname(x), *b = mname(y);
  int r = keycmp(a, x->ulen, b, y->ulen);
  return r ? r : strcmp(a, b);
}

/* Heapsort of msgs: in place, so sorting takes no memory. */
static void sift(unsigned long root, unsigned long n, int (*cmp)(msg const *, msg const *))
{
  for (;;) {
    unsigned long c = 2 * root + 1;
    msg t;
    if (c >= n) return;
    if (c + 1 < n && cmp(&msgs[c], &msgs[c + 1]) < 0) c++;
    if (cmp(&msgs[root], &msgs[c]) >= 0) return;
    t = msgs[root];
    msgs[root] = msgs[c];
    msgs[c] = t;
    root = c;
  }
}

static void msort(int (*cmp)(msg const *, msg const *))
{
  unsigned long i, n = nmsgs;
  if (n < 2) return;
  for (i = n / 2; i-- > 0;) sift(i, n, cmp);
  while (--n) {
    msg t = msgs[0];
    msgs[0] = msgs[n];
    msgs[n] = t;
    sift(0, n, cmp);
  }
}

/* The next entry of d whose name does not start with '.'; 0 at the end (errno 0) or on a
 * read error (errno set). */
static struct dirent *entry(DIR *d)
{
  for (;;) {
    struct dirent *de;
    errno = 0;
    de = readdir(d);
    if (!de || de->d_name[0] != '.') return de;
  }
}

/* Closes d once entry() returned 0: 1 if the whole directory was read, 0 with errno set if
 * reading it failed. */
static int listed(DIR *d)
{
  int e = errno;
  dir_close(d);
  errno = e;
  return !e;
}

/* Counts the entries of one of new/ and cur/ and their name bytes. Returns 1, or 0 with
 * errno set. */
static int count(char const *dir, unsigned long *n, size_t *bytes)
{
  struct dirent *de;
  DIR *d = opendir(dir);
  if (!d) return 0;
  while ((de = entry(d))) {
    (*n)++;
    *bytes += strlen(de->d_name) + 1;
  }
  return listed(d);
}

/* Lists one of new/ and cur/ into msgs, within the room count() found (what arrived since
 * waits for the next session). Returns 1, 0 on error (errno set). */
static int scan(char const *dir, uint32_t flag, unsigned long cap)
{
  struct dirent *de;
  DIR *d = opendir(dir);
  if (!d) return 0;
  while ((de = entry(d))) {
    size_t len = strlen(de->d_name);
    if (nmsgs >= cap || names.len + len + 1 > names.a) continue;
    uint64_t wsize = 0;
    msgs[nmsgs].name = (uint32_t)names.len;
    msgs[nmsgs].flags = (uint16_t)flag;
    msgs[nmsgs].size = 0;
    msgs[nmsgs].sfx = 0;
    {
      char const *colon = memchr(de->d_name, ':', len);
      msgs[nmsgs].ulen = (uint16_t)(colon ? (size_t)(colon - de->d_name) : len);
    }
    memcpy(names.s + names.len, de->d_name, len + 1);
    names.len += len + 1;
    if (pop3_name_wsize(de->d_name, len, &wsize) && wsize < (uint64_t)1 << 48) {
      msgs[nmsgs].size = wsize;
      msgs[nmsgs].flags |= F_SIZED;
    }
    nmsgs++;
  }
  return listed(d);
}

/* The snapshot of the maildrop: new/ and cur/, at most maxmsgs messages, exactly allocated. */
static int listing_load(void)
{
  unsigned long n = 0;
  size_t bytes = 0;
  if (!count("new", &n, &bytes) || !count("cur", &n, &bytes)) return 0;
  if (n > maxmsgs) n = maxmsgs; /* bounded: the rest waits for a later session */
  if (bytes > UINT32_MAX) bytes = UINT32_MAX;
  if (!n) return 1;
  msgs = malloc(n * sizeof *msgs);
  names.s = malloc(bytes);
  if (!msgs || !names.s) return 0;
  names.a = bytes;
  if (!scan("new", 0, n) || !scan("cur", F_CUR, n)) return 0;
  msort(&bytime);
#ifdef __GLIBC__
  malloc_trim(0); /* give back the directory buffers: the session keeps only the listing */
#endif
  return 1;
}

/* Path of a message (relative to the Maildir) into p. */
static void mpath(msg const *m, char *p, size_t max)
{
  snprintf(p, max, "%s/%s", (m->flags & F_CUR) ? "cur" : "new", mname(m));
}

/* The message is no longer where the listing saw it: another program (an IMAP session, a
 * mail reader) moved it to cur/ or changed its flags. Finds it in cur/ by its unique name and
 * records the new name. Returns 1 if found, 0 if not (it was removed), -1 on error. */
static int relocate(msg *m)
{
  char const *u = mname(m);
  size_t ulen = m->ulen;
  DIR *d = opendir("cur");
  int found = 0;
  if (!d) return -1;
  for (;;) {
    struct dirent *de;
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (!strncmp(de->d_name, u, ulen) && (de->d_name[ulen] == ':' || !de->d_name[ulen])) {
      size_t len = strlen(de->d_name);
      if (!strcmp(de->d_name, u) && (m->flags & F_CUR)) continue; /* the name we failed on */
      if (names.len > UINT32_MAX - len - 1 || !stralloc_catb(&names, de->d_name, len + 1)) break;
      m->name = (uint32_t)(names.len - len - 1);
      m->flags = (uint16_t)((m->flags & ~F_MAPPED) | F_CUR);
      found = 1;
      break;
    }
  }
  {
    int e = errno;
    dir_close(d);
    errno = e;
  }
  return found ? 1 : errno ? -1 : 0;
}

static int mopen_here(msg *m);

static int mopen(msg *m)
{
  int fd = mopen_here(m);
  if (fd < 0 && errno == ENOENT) {
    int r = relocate(m);
    if (r == 1) {
      m->flags &= (uint16_t)~F_GONE;
      fd = mopen_here(m);
    } else if (!r)
      errno = ENOENT;
  }
  return fd;
}

static int mopen_here(msg *m)
{
  char p[300];
  int fd;
  struct stat st;
  mpath(m, p, sizeof p);
  /* A message is a regular file: a symlink or anything else in new/ or cur/ counts as gone
   * (O_NOFOLLOW: ELOOP), never as something to read through. */
  fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
    fd_close(fd);
    fd = -1;
    errno = ENOENT;
  }
  if (fd < 0 && (errno == ENOENT || errno == ELOOP)) {
    m->flags |= F_GONE;
    errno = ENOENT;
  }
  return fd;
}

/* The size cache: MAILDIR/.pop3.sizes holds "UNIQUE SIZE\n" lines in listing order (UNIQUE is
 * the part of the name before ':'), the wire sizes of messages whose names do not carry
 * ",W=". A message's content never changes, so an entry stays true for as long as the message
 * exists. The file is read and rewritten (tmp + rename, so it is always whole) under the session
 * lock; it is a cache: when missing or unwritable, the sizes are counted from the files. */
#define SIZECACHE ".pop3.sizes"
#define SIZECACHE_TMP ".pop3.sizes.tmp"

/* Applies one cache line to the messages (in listing order), advancing *i. Returns 1 if
 * the entry matched a message, 0 if it is stale. */
static int cache_line(char const *s, size_t len, unsigned long *i)
{
  char const *sp;
  uint64_t size;
  size_t k;
  if (!len) return 0;
  sp = s + len;
  while (sp > s && sp[-1] != ' ') sp--;
  if (sp == s || sp == s + len || (size_t)(s + len - sp) > 14) return 0; /* 48 bits */
  size = 0;
  for (k = 0; sp + k < s + len; k++) {
    if (sp[k] < '0' || sp[k] > '9') return 0;
    size = size * 10 + (uint64_t)(sp[k] - '0');
  }
  k = (size_t)(sp - 1 - s);
  while (*i < nmsgs) {
    int c = keycmp(mname(&msgs[*i]), msgs[*i].ulen, s, k);
    if (c > 0) return 0;
    if (!c) {
      if (!(msgs[*i].flags & F_SIZED)) {
        msgs[*i].size = size;
        msgs[*i].flags |= F_SIZED | F_CACHED;
      }
      (*i)++;
      return 1;
    }
    (*i)++;
  }
  return 0;
}

/* Reads the cache into the messages (in listing order). Returns the stale entries. */
static unsigned long cache_read(void)
{
  unsigned long i = 0, stale = 0;
  size_t have = 0;
  int skipping = 0;
  int fd = open(SIZECACHE, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) strerr_warnwu2sys("open ", SIZECACHE);
    return 0;
  }
  for (;;) {
    char *nl, *p;
    ssize_t r = read(fd, fbuf + have, sizeof fbuf - have);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_warnwu2sys("read ", SIZECACHE);
      break;
    }
    if (!r) break;
    have += (size_t)r;
    p = fbuf;
    while ((nl = memchr(p, '\n', have - (size_t)(p - fbuf)))) {
      if (!skipping && !cache_line(p, (size_t)(nl - p), &i)) stale++;
      skipping = 0;
      p = nl + 1;
    }
    have -= (size_t)(p - fbuf);
    memmove(fbuf, p, have);
    if (have == sizeof fbuf) {
      /* a line longer than the buffer: not ours, skip it */
      have = 0;
      skipping = 1;
      stale++;
    }
  }
  fd_close(fd);
  return stale;
}

/* Rewrites the cache from the messages (in listing order). Failure is only a warning. */
static void cache_write(void)
{
  unsigned long i;
  size_t len = 0;
  int ok = 1;
  int fd = open(SIZECACHE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    strerr_warnwu2sys("create ", SIZECACHE_TMP);
    return;
  }
  for (i = 0; i < nmsgs && ok; i++) {
    msg const *m = &msgs[i];
    char const *n = mname(m);
    size_t ul = m->ulen;
    if (!(m->flags & (F_CACHED | F_COUNTED)) || (m->flags & F_GONE)) continue;
    if (ul > 300 || memchr(n, ' ', ul) || memchr(n, '\n', ul)) continue;
    if (sizeof fbuf - len < ul + UINT64_FMT + 2) {
      if (fd_write(fd, fbuf, len) != (ssize_t)len) ok = 0;
      len = 0;
    }
    memcpy(fbuf + len, n, ul);
    len += ul;
    fbuf[len++] = ' ';
    len += uint64_fmt(fbuf + len, m->size);
    fbuf[len++] = '\n';
  }
  if (ok && len && fd_write(fd, fbuf, len) != (ssize_t)len) ok = 0;
  if (fd_close(fd), !ok || rename(SIZECACHE_TMP, SIZECACHE) < 0) {
    strerr_warnwu2sys("write ", SIZECACHE);
    unlink(SIZECACHE_TMP);
  }
}

/* The index of the rest of a name in rest_at (with add, added to nn if new), or -1. */
static int rest_index(stralloc *nn, char const *r, int add)
{
  unsigned int j;
  for (j = 0; j < nrest; j++)
    if (!strcmp(nn->s + rest_at[j], r)) return (int)j;
  if (!add || nrest == RESTS || nn->len > UINT32_MAX - 256) return -1;
  rest_at[nrest] = (uint32_t)nn->len;
  if (!stralloc_catb(nn, r, strlen(r) + 1)) return -1;
  return (int)nrest++;
}

/* One merge of the size cache's lines (p, len) with the messages, both in listing order: for
 * each message, the offset of its line (or -1). Without set, counts into *bytes what nn needs
 * for the names that stay (the rests go into nn as they are met); with set, moves the names.
 * Returns 1, or 0 when nn could not grow (nothing moved yet). */
static int names_merge(char const *p, size_t len, stralloc *nn, size_t *bytes, int set)
{
  size_t off = 0;
  unsigned long i;
  for (i = 0; i < nmsgs; i++) {
    msg *m = &msgs[i];
    char const *n = names.s + m->name;
    size_t nlen = strlen(n);
    int r = -1;
    while (off < len) { /* the cache's lines before this message's are stale */
      char const *nl = memchr(p + off, '\n', len - off);
      char const *sp = nl ? memchr(p + off, ' ', (size_t)(nl - (p + off))) : 0;
      int c;
      if (!sp) {
        off = len;
        break;
      }
      c = keycmp(n, m->ulen, p + off, (size_t)(sp - (p + off)));
      if (c < 0) break;
      if (!c) {
        if (nlen < 256) r = rest_index(nn, n + m->ulen, !set); /* set: no growth */
        if (r >= 0 && set) {
          m->name = (uint32_t)off;
          m->sfx = (unsigned int)r;
          m->flags |= F_MAPPED;
        }
        off = (size_t)(nl + 1 - p);
        break;
      }
      off = (size_t)(nl + 1 - p);
    }
    if (r >= 0) continue;
    if (!set) *bytes += nlen + 1;
    else {
      m->name = (uint32_t)nn->len;
      memcpy(nn->s + nn->len, n, nlen + 1); /* room reserved by the first merge */
      nn->len += nlen + 1;
    }
  }
  return 1;
}

/* Moves the names that the size cache lists out of the heap (see rest_at). Anything amiss
 * (no cache, no memory) keeps the names as they are. */
static void names_to_map(void)
{
  stralloc nn = STRALLOC_ZERO;
  struct stat st;
  char *p;
  size_t bytes = 0, len;
  int fd = open(SIZECACHE, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !st.st_size || st.st_size >= UINT32_MAX) {
    fd_close(fd);
    return;
  }
  len = (size_t)st.st_size;
  p = mmap(0, len, PROT_READ, MAP_SHARED, fd, 0);
  fd_close(fd);
  if (p == MAP_FAILED) return;
  nrest = 0;
  (void)names_merge(p, len, &nn, &bytes, 0);
  if (nn.len + bytes > UINT32_MAX || !stralloc_readyplus(&nn, bytes)) {
    stralloc_free(&nn);
    munmap(p, len);
    return;
  }
  (void)names_merge(p, len, &nn, &bytes, 1);
  stralloc_free(&names);
  names = nn;
  map = p;
  maplen = len;
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

/* Wire sizes of every message not sized by its name: from the cache, else counted (once). */
static void sizeall(void)
{
  unsigned long i, counted = 0, stale;
  if (sized) return;
  sized = 1;
  if (!nmsgs) return;
  stale = cache_read();
  for (i = 0; i < nmsgs; i++) {
    msg *m = &msgs[i];
    pop3_wsize w = POP3_WSIZE_ZERO;
    int fd;
    if (m->flags & F_SIZED) continue;
    fd = mopen(m);
    if (fd < 0) {
      if (errno != ENOENT) strerr_diefu2sys(111, "open message ", mname(m));
      m->flags |= F_SIZED;
      continue;
    }
    for (;;) {
      ssize_t r = read(fd, fbuf, sizeof fbuf);
      if (r < 0) {
        if (errno == EINTR) continue;
        strerr_diefu2sys(111, "read message ", mname(m));
      }
      if (!r) break;
      pop3_wiresize_feed(&w, fbuf, (size_t)r);
    }
    fd_close(fd);
    m->size = pop3_wiresize_end(&w);
    m->flags |= F_SIZED | F_COUNTED;
    counted++;
  }
  if (counted || stale) cache_write();
  names_to_map();
}

/* The message numbered by the argument, or NULL after an -ERR. */
static msg *arg_msg(char const *s, size_t len)
{
  unsigned long n;
  if (!pop3_msgnum(s, len, nmsgs, &n)) {
    put("-ERR no such message\r\n");
    return 0;
  }
  if (msgs[n - 1].flags & F_DELE) {
    put("-ERR message already deleted\r\n");
    return 0;
  }
  return &msgs[n - 1];
}

static void send_msg(msg *m, long toplines)
{
  pop3_enc e;
  int fd = mopen(m);
  if (fd < 0) {
    if (errno == ENOENT) {
      put("-ERR [SYS/PERM] message vanished\r\n");
      return;
    }
    put("-ERR [SYS/TEMP] unable to open message\r\n");
    return;
  }
  sizeall();
  put("+OK ");
  putu(m->size);
  put(" octets\r\n");
  pop3_enc_init(&e, toplines);
  while (!e.done) {
    size_t off = 0;
    ssize_t r = read(fd, fbuf, sizeof fbuf);
    if (r < 0) {
      if (errno == EINTR) continue;
      /* The +OK is out: all we can do is end the connection (the client sees no final dot). */
      strerr_diefu2sys(111, "read message ", mname(m));
    }
    if (!r) break;
    while (off < (size_t)r && !e.done) {
      size_t avail, used, o;
      char *out = pop3io_room(16, &avail);
      if (!out) die_io();
      o = pop3_enc_run(&e, fbuf + off, (size_t)r - off, out, avail, &used);
      pop3io_commit(o);
      off += used;
    }
  }
  fd_close(fd);
  {
    size_t avail;
    char *out = pop3io_room(5, &avail);
    if (!out) die_io();
    pop3io_commit(pop3_enc_end(&e, out));
  }
}

static void listing(msg const *m, unsigned long i, int uidl)
{
  char fmt[ULONG_FMT];
  putn(fmt, ulong_fmt(fmt, i + 1));
  put(" ");
  if (uidl) {
    char u[POP3_UIDL_MAX];
    char const *n = mname(m);
    putn(u, pop3_uidl(n, strlen(n), u));
  } else
    putu(m->size);
  put("\r\n");
}

/* The new name of a retrieved message in cur/: its flags plus S, kept sorted. */
static void seen_name(char const *name, char *out, size_t max)
{
  char const *colon = strchr(name, ':');
  char flags[64];
  size_t n = 0, i;
  int has = 0;
  if (colon && colon[1] == '2' && colon[2] == ',') {
    for (i = 3; colon[i] && n < sizeof flags - 2; i++) {
      if (colon[i] == 'S') has = 1;
      flags[n++] = colon[i];
    }
  }
  if (!has) {
    /* insert S in ASCII order */
    size_t at = 0;
    while (at < n && flags[at] < 'S') at++;
    memmove(flags + at + 1, flags + at, n - at);
    flags[at] = 'S';
    n++;
  }
  flags[n] = 0;
  snprintf(out, max, "cur/%.*s:2,%s", (int)(colon ? (size_t)(colon - name) : strlen(name)),
           name, flags);
}

/* The UPDATE state: remove what was deleted, mark seen what was retrieved. */
static int update(void)
{
  unsigned long i;
  int ok = 1;
  char p[300], q[300];
  uint64_t qsize = 0, qcount = 0;
  for (i = 0; i < nmsgs; i++) {
    msg *m = &msgs[i];
    int r, tries;
    if (!(m->flags & (F_DELE | F_SEEN))) continue;
    for (tries = 0; tries < 2; tries++) {
      mpath(m, p, sizeof p);
      if (m->flags & F_DELE) {
        struct stat st;
        int sized = lstat(p, &st) == 0;
        r = unlink(p);
        if (!r && sized) {
          qsize += (uint64_t)st.st_size;
          qcount++;
        }
      } else {
        seen_name(mname(m), q, sizeof q);
        r = strcmp(p, q) ? rename(p, q) : 0;
      }
      /* moved meanwhile (an IMAP client marked it): follow it once */
      if (r < 0 && errno == ENOENT && !tries) {
        if (relocate(m) == 1) continue;
        errno = ENOENT; /* removed by someone else: nothing left to do */
      }
      break;
    }
    if (r < 0 && errno != ENOENT) {
      strerr_warnwu2sys((m->flags & F_DELE) ? "remove " : "rename ", p);
      if (m->flags & F_DELE) ok = 0;
    }
  }
  /* Maildir++ quota: what was removed leaves the maildirsize totals (if the file exists). */
  if (qcount && maildir_quota_add(".", -(int64_t)qsize, -(int64_t)qcount) < 0)
    strerr_warnwu1sys("update maildirsize");
  /* and the quota record smtp-receive reads at RCPT (lib/quotastate), from those totals */
  if (qcount) {
    char const *u = getenv("USER");
    if (u && *u && !quotastate_sync(0, u, strlen(u), "."))
      strerr_warnwu2sys("update the quota record of ", u);
  }
  return ok;
}

/* QUIT: the UPDATE state, a log line, the last reply. */
static void quit(void)
{
  unsigned long i, nr = 0, nd = 0;
  int ok;
  char f1[ULONG_FMT], f2[ULONG_FMT], f3[ULONG_FMT];
  char const *u = getenv("USER");
  for (i = 0; i < nmsgs; i++) {
    if (msgs[i].flags & F_DELE) nd++;
    else if (msgs[i].flags & F_SEEN) nr++;
  }
  f1[ulong_fmt(f1, nmsgs)] = 0;
  f2[ulong_fmt(f2, nr)] = 0;
  f3[ulong_fmt(f3, nd)] = 0;
  strerr_warni8x(u ? u : "?", ": quit: ", f1, " messages, ", f2, " retrieved and kept, ", f3,
                 " deleted");
  ok = update();
  /* The maildrop is released before the answer: a client that reconnects as soon as it reads
   * +OK finds it free (RFC 1939 section 6: the lock goes at the end of the UPDATE state). */
  fd_close(lockfd);
  lockfd = -1;
  put(ok ? "+OK bye\r\n" : "-ERR [SYS/TEMP] some deleted messages not removed\r\n");
  pop3io_flush();
}

static void capa(void)
{
  put("+OK capability list follows\r\n"
      "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
      "IMPLEMENTATION pillarbox\r\n.\r\n");
}

/* Into the Maildir at home, locked for this session, its listing loaded. Returns 1, or 0 when
 * another session holds the lock (the client has been told); other failures exit. */
static int open_maildrop(char const *home)
{
  if (!home || home[0] != '/') {
    put("-ERR [SYS/PERM] no maildrop\r\n");
    pop3io_flush();
    strerr_dief1x(100, "HOME must be the absolute path of the Maildir");
  }
  if (chdir(home) < 0) {
    int e = errno;
    put(e == ENOENT ? "-ERR [SYS/PERM] no maildrop\r\n"
                    : "-ERR [SYS/TEMP] unable to open maildrop\r\n");
    pop3io_flush();
    errno = e;
    strerr_diefu2sys(e == ENOENT ? 100 : 111, "chdir to ", home);
  }
  lockfd = open(".pop3.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lockfd < 0) {
    int e = errno;
    put("-ERR [SYS/TEMP] unable to lock maildrop\r\n");
    pop3io_flush();
    errno = e;
    strerr_diefu2sys(111, "open ", ".pop3.lock");
  }
  if (flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK) {
      put("-ERR [IN-USE] maildrop is in use by another session\r\n");
      pop3io_flush();
      return 0;
    }
    {
      int e = errno;
      put("-ERR [SYS/TEMP] unable to lock maildrop\r\n");
      pop3io_flush();
      errno = e;
    }
    strerr_diefu1sys(111, "lock .pop3.lock");
  }
  if (!listing_load()) {
    int e = errno;
    put("-ERR [SYS/TEMP] unable to read maildrop\r\n");
    pop3io_flush();
    errno = e;
    strerr_diefu2sys(111, "list the Maildir ", home);
  }
  return 1;
}

/* The TRANSACTION state (RFC 1939 5): commands until QUIT (then UPDATE), a dropped connection
 * or the idle timeout. Returns the exit code. */
static int transaction(void)
{
  unsigned long i;
  for (;;) {
    char *line;
    size_t len;
    pop3_cmd c;
    int r = pop3io_getcmd(&line, &len);
    if (r == POP3IO_TIMEOUT) return 99;
    if (r != 1) return 0; /* dropped connection: nothing changes */
    r = pop3_parse(line, len, &c);
    if (r < 0) {
      put(pop3_parse_reply(r));
      continue;
    }
    switch (c.cmd) {
      case POP3_STAT: {
        uint64_t total = 0;
        unsigned long n = 0;
        sizeall();
        for (i = 0; i < nmsgs; i++)
          if (!(msgs[i].flags & F_DELE)) {
            n++;
            total += msgs[i].size;
          }
        put("+OK ");
        putu(n);
        put(" ");
        putu(total);
        put("\r\n");
        break;
      }
      case POP3_LIST:
      case POP3_UIDL: {
        int uidl = c.cmd == POP3_UIDL;
        if (!uidl) sizeall();
        if (c.argc) {
          msg *m = arg_msg(c.arg[0], c.arglen[0]);
          if (!m) break;
          put("+OK ");
          listing(m, (unsigned long)(m - msgs), uidl);
          break;
        }
        put(uidl ? "+OK unique-id listing follows\r\n" : "+OK scan listing follows\r\n");
        for (i = 0; i < nmsgs; i++)
          if (!(msgs[i].flags & F_DELE)) listing(&msgs[i], i, uidl);
        put(".\r\n");
        break;
      }
      case POP3_RETR: {
        msg *m = arg_msg(c.arg[0], c.arglen[0]);
        if (!m) break;
        send_msg(m, -1);
        if (!(m->flags & F_GONE)) m->flags |= F_SEEN;
        break;
      }
      case POP3_TOP: {
        unsigned long lines;
        msg *m = arg_msg(c.arg[0], c.arglen[0]);
        if (!m) break;
        if (!pop3_ulong(c.arg[1], c.arglen[1], &lines)) {
          put("-ERR invalid number of lines\r\n");
          break;
        }
        send_msg(m, (long)lines);
        break;
      }
      case POP3_DELE: {
        msg *m = arg_msg(c.arg[0], c.arglen[0]);
        if (!m) break;
        m->flags |= F_DELE;
        put("+OK message deleted\r\n");
        break;
      }
      case POP3_RSET:
        for (i = 0; i < nmsgs; i++) msgs[i].flags &= (uint16_t)~F_DELE;
        put("+OK\r\n");
        break;
      case POP3_NOOP: put("+OK\r\n"); break;
      case POP3_CAPA: capa(); break;
      case POP3_QUIT: quit(); return 0;
      default: put("-ERR already logged in\r\n"); break;
    }
  }
}

int main(int argc, char const *const *argv)
{
  unsigned int timeout = 600;
  char const *home, *x;
  {
    subgetopt l = SUBGETOPT_ZERO;
    int opt;
    x = getenv("POP3_TIMEOUT");
    if (x && (!uint0_scan(x, &timeout) || !timeout))
      strerr_dief1x(100, "POP3_TIMEOUT must be a positive number of seconds");
    while ((opt = subgetopt_r(argc, argv, "t:m:", &l)) != -1) {
      switch (opt) {
        case 't':
          if (!uint0_scan(l.arg, &timeout) || !timeout) strerr_dieusage(100, USAGE);
          break;
        case 'm':
          if (!ulong0_scan(l.arg, &maxmsgs) || !maxmsgs) strerr_dieusage(100, USAGE);
          break;
        default: strerr_dieusage(100, USAGE);
      }
    }
  }
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) strerr_diefu1sys(111, "ignore SIGPIPE");
  x = getenv("POP3_NOTIFYFD");
  if (x) {
    /* Tell pop3-serve that the login worked: from now on, we answer the client. */
    int fd;
    if (int0_scan(x, &fd) && fd > 2) {
      if (fd_write(fd, "y", 1) < 0) strerr_warnwu1sys("notify pop3-serve");
      fd_close(fd);
    }
  }
  if (!pop3io_init(0, 1, timeout)) strerr_diefu1sys(111, "set up the session fds");
  pop3io_onrest(&rest);
  x = getenv("POP3_INPUT");
  if (x && !pop3io_preload_hex(x))
    strerr_dief1x(100, "POP3_INPUT is not the hex of at most 1024 bytes");

  home = getenv("HOME");
  if (!open_maildrop(home)) return 111;
  put("+OK ");
  putu(nmsgs);
  put(" messages\r\n");

  return transaction();
}
