/* maildir: Maildir and Maildir++ on disk. See maildir.h and doc/maildir.md. */
#define _GNU_SOURCE /* renameat2(RENAME_NOREPLACE) */
#include <dirent.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "groupsync.h"
#include "maildir.h"

#define DIRFLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

static unsigned long uniq_counter;

size_t maildir_hostfmt(char *s, char const *host, size_t len)
{
  size_t w = 0, i;
  for (i = 0; i < len; i++) {
    char c = host[i];
    if (c == '/' || c == ':') {
      if (w + 4 > MAILDIR_HOST_MAX) break;
      s[w++] = '\\';
      s[w++] = '0';
      s[w++] = c == '/' ? '5' : '7';
      s[w++] = c == '/' ? '7' : '2';
    } else {
      if (w + 1 > MAILDIR_HOST_MAX) break;
      s[w++] = c;
    }
  }
  return w;
}

/* this host's name, escaped (maildir_hostfmt), looked up once */
static char const *hostname_escaped(size_t *len)
{
  static char host[MAILDIR_HOST_MAX];
  static size_t hostlen;
  if (!hostlen) {
    char h[MAILDIR_HOST_MAX + 1];
    size_t n;
    if (gethostname(h, sizeof h) < 0) memcpy(h, "localhost", 10);
    h[MAILDIR_HOST_MAX] = 0;
    n = strlen(h);
    if (!n) {
      memcpy(h, "localhost", 10);
      n = 9;
    }
    hostlen = maildir_hostfmt(host, h, n);
  }
  *len = hostlen;
  return host;
}

int maildir_uniqname(stralloc *sa)
{
  struct timeval tv;
  char fmt[ULONG_FMT];
  size_t hostlen;
  char const *host = hostname_escaped(&hostlen);
  if (gettimeofday(&tv, 0) < 0) return -1;
  uniq_counter++;
  if (!stralloc_catb(sa, fmt, ulong_fmt(fmt, (unsigned long)tv.tv_sec)) ||
      !stralloc_catb(sa, ".M", 2) ||
      !stralloc_catb(sa, fmt, ulong_fmt(fmt, (unsigned long)tv.tv_usec)) ||
      !stralloc_catb(sa, "P", 1) ||
      !stralloc_catb(sa, fmt, ulong_fmt(fmt, (unsigned long)getpid())) ||
      !stralloc_catb(sa, "Q", 1) ||
      !stralloc_catb(sa, fmt, ulong_fmt(fmt, uniq_counter)) || !stralloc_catb(sa, ".", 1) ||
      !stralloc_catb(sa, host, hostlen) || !stralloc_0(sa))
    return -1;
  return 1;
}

static void closeif(int *fd)
{
  if (*fd >= 0) {
    int e = errno;
    close(*fd);
    errno = e;
    *fd = -1;
  }
}

/* opens a subdirectory, never through a symlink: ELOOP if it is one */
static int opensub(int dfd, char const *name)
{
  int fd = openat(dfd, name, DIRFLAGS);
  if (fd < 0 && errno == ENOTDIR) {
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) errno = ELOOP;
    else errno = ENOTDIR;
  }
  return fd;
}

/* Opens DIR/SUB as a directory stream (DIR itself may be a symlink): SUB with opensub (never
 * a symlink: ELOOP) when nofollow, else as any relative path. 0 with errno set on failure. */
static DIR *opendir_sub(char const *dir, char const *sub, int nofollow)
{
  DIR *d;
  int fd, dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  fd = nofollow ? opensub(dfd, sub) : openat(dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  close(dfd);
  if (fd < 0) return 0;
  d = fdopendir(fd);
  if (!d) closeif(&fd);
  return d;
}

/* maildir_hold_dirs: the last Maildir's descriptors, and what its directory looked like */
static struct {
  int on, dirfd, tmpfd, newfd;
  stralloc path;
  struct stat st;
} hd = {0, -1, -1, -1, STRALLOC_ZERO, {0}};

void maildir_hold_dirs(void)
{
  hd.on = 1;
}

static int same_time(struct timespec const *a, struct timespec const *b)
{
  return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static void unhold(void)
{
  if (hd.dirfd < 0) return;
  close(hd.dirfd);
  close(hd.tmpfd);
  close(hd.newfd);
  hd.dirfd = -1;
}

/* the held descriptors, if they still serve dir (if dir changed, they are let go); seen: the
 * caller's stat(2) of dir a moment ago, or 0 */
static int held_dirs(maildir_tmp *t, char const *dir, struct stat const *seen)
{
  struct stat st;
  if (hd.dirfd < 0 || strcmp(hd.path.s, dir)) return 0;
  if (seen) st = *seen;
  else if (stat(dir, &st) < 0) {
    unhold();
    return 0;
  }
  if (st.st_dev != hd.st.st_dev || st.st_ino != hd.st.st_ino ||
      !same_time(&st.st_mtim, &hd.st.st_mtim) || !same_time(&st.st_ctim, &hd.st.st_ctim)) {
    unhold();
    return 0;
  }
  t->dirfd = hd.dirfd;
  t->tmpfd = hd.tmpfd;
  t->newfd = hd.newfd;
  t->held = 1;
  return 1;
}

static int recent(struct timespec const *t, struct timespec const *now)
{
  int64_t ns = ((int64_t)now->tv_sec - (int64_t)t->tv_sec) * 1000000000 +
               ((int64_t)now->tv_nsec - (int64_t)t->tv_nsec);
  return ns < 2000000000;
}

/* keeps t's freshly opened descriptors for the next delivery to dir (replacing the last) */
static void hold_dirs(maildir_tmp *t, char const *dir)
{
  struct stat st;
  struct timespec now;
  if (fstat(t->dirfd, &st) < 0 || clock_gettime(CLOCK_REALTIME, &now) < 0) return;
  /* a change within the file system's time granularity would leave the times as they were:
   * only times at least 2 s old are trusted */
  if (recent(&st.st_mtim, &now) || recent(&st.st_ctim, &now)) return;
  unhold();
  hd.path.len = 0;
  if (!stralloc_cats(&hd.path, dir) || !stralloc_0(&hd.path)) return;
  hd.st = st;
  hd.dirfd = t->dirfd;
  hd.tmpfd = t->tmpfd;
  hd.newfd = t->newfd;
  t->held = 1;
}

static int tmp_opendirs(maildir_tmp *t, char const *dir, struct stat const *seen)
{
  t->fd = t->dirfd = t->tmpfd = t->newfd = -1;
  t->held = 0;
  if (hd.on && held_dirs(t, dir, seen)) return 1;
  t->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (t->dirfd < 0) return -1;
  t->tmpfd = opensub(t->dirfd, "tmp");
  if (t->tmpfd < 0) goto err;
  t->newfd = opensub(t->dirfd, "new");
  if (t->newfd < 0) goto err;
  if (hd.on) hold_dirs(t, dir);
  return 1;
err:
  closeif(&t->tmpfd);
  closeif(&t->dirfd);
  return -1;
}

static void tmp_closedirs(maildir_tmp *t)
{
  closeif(&t->fd);
  if (t->held) { /* maildir_hold_dirs's: they stay open */
    t->newfd = t->tmpfd = t->dirfd = -1;
    t->held = 0;
    return;
  }
  closeif(&t->newfd);
  closeif(&t->tmpfd);
  closeif(&t->dirfd);
}

static int tmp_create(maildir_tmp *t)
{
  t->fd = openat(t->tmpfd, t->name.s,
                 O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  return t->fd < 0 ? -1 : 1;
}

int maildir_tmp_open(maildir_tmp *t, char const *dir)
{
  return maildir_tmp_open_seen(t, dir, 0);
}

int maildir_tmp_open_seen(maildir_tmp *t, char const *dir, struct stat const *seen)
{
  unsigned int tries;
  if (tmp_opendirs(t, dir, seen) < 0) return -1;
  for (tries = 0; tries < 8; tries++) {
    t->name.len = 0;
    if (maildir_uniqname(&t->name) < 0) break;
    if (tmp_create(t) > 0) return 1;
    if (errno != EEXIST) break;
  }
  tmp_closedirs(t);
  return -1;
}

int maildir_tmp_open_name(maildir_tmp *t, char const *dir, char const *name)
{
  if (tmp_opendirs(t, dir, 0) < 0) return -1;
  t->name.len = 0;
  if (!strchr(name, '/') && name[0] && stralloc_cats(&t->name, name) && stralloc_0(&t->name) &&
      tmp_create(t) > 0)
    return 1;
  if (strchr(name, '/') || !name[0]) errno = EINVAL;
  tmp_closedirs(t);
  return -1;
}

void maildir_tmp_abort(maildir_tmp *t)
{
  int e = errno;
  if (t->fd >= 0) {
    closeif(&t->fd);
    unlinkat(t->tmpfd, t->name.s, 0);
  }
  tmp_closedirs(t);
  errno = e;
}

/* new name: BASE[,S=SIZE] */
static int newname_make(stralloc *sa, char const *base, uint64_t size, int sizetag)
{
  char fmt[ULONG_FMT];
  sa->len = 0;
  if (!stralloc_cats(sa, base)) return -1;
  if (sizetag && (!stralloc_catb(sa, ",S=", 3) || !stralloc_catb(sa, fmt, uint64_fmt(fmt, size))))
    return -1;
  return stralloc_0(sa) ? 1 : -1;
}

static groupsync *gsync; /* maildir_groupsync's; 0: groupsync_fsync is a plain fsync */

void maildir_groupsync(groupsync *g)
{
  gsync = g;
}

/* fixed: the base name is a delivery key's (maildir_keyname): an existing new/ name is the same
 * message delivered before, not a clash (2), never a reason to pick another name */
static int commit(maildir_tmp *t, uint64_t size, int sizetag, stralloc *newname,
                  char const *fixed)
{
  stralloc base = STRALLOC_ZERO;
  unsigned int tries;
  int fd = t->fd, r = 1;
  if (fsync(fd) < 0) goto fail;
  t->fd = -1;
  if (close(fd) < 0) goto failunlink; /* NFS reports write errors here */
  if (fixed ? !stralloc_cats(&base, fixed)
            : !stralloc_copyb(&base, t->name.s, t->name.len - 1))
    goto failunlink;
  if (!stralloc_0(&base)) goto failunlink;
  for (tries = 0;; tries++) {
    if (newname_make(newname, base.s, size, sizetag) < 0) goto failunlink;
    if (linkat(t->tmpfd, t->name.s, t->newfd, newname->s, 0) == 0) break;
    if (errno == EPERM || errno == ENOTSUP || errno == ENOSYS) {
      /* no hard links on this file system: rename (no-replace for a fixed name) */
      if (fixed ? renameat2(t->tmpfd, t->name.s, t->newfd, newname->s, RENAME_NOREPLACE) == 0
                : renameat(t->tmpfd, t->name.s, t->newfd, newname->s) == 0)
        break;
    }
    if (errno == EEXIST && fixed) {
      r = 2; /* delivered before; its new/ entry may not be durable yet: fsync below */
      break;
    }
    if (errno != EEXIST || tries >= 8) goto failunlink;
    base.len = 0;
    if (maildir_uniqname(&base) < 0) goto failunlink;
  }
  unlinkat(t->tmpfd, t->name.s, 0);
  if (groupsync_fsync(gsync, t->newfd) < 0) {
    int e = errno;
    if (r == 1) unlinkat(t->newfd, newname->s, 0);
    errno = e;
    goto failclosed;
  }
  stralloc_free(&base);
  tmp_closedirs(t);
  return r;
fail:
  maildir_tmp_abort(t);
  stralloc_free(&base);
  return -1;
failunlink:
  {
    int e = errno;
    unlinkat(t->tmpfd, t->name.s, 0);
    errno = e;
  }
failclosed:
  stralloc_free(&base);
  tmp_closedirs(t);
  return -1;
}

int maildir_tmp_commit(maildir_tmp *t, uint64_t size, int sizetag, stralloc *newname)
{
  return commit(t, size, sizetag, newname, 0);
}

int maildir_tmp_commit_key(maildir_tmp *t, uint64_t size, char const *keyname,
                           stralloc *newname)
{
  return commit(t, size, 1, newname, keyname);
}

int maildir_keyname(stralloc *sa, char const *key)
{
  size_t i = 0, hl;
  char const *host = hostname_escaped(&hl);
  while (key[i] >= '0' && key[i] <= '9') i++;
  if (!i || key[i] != '.' || !key[i + 1] || strlen(key) > MAILDIR_KEY_MAX) {
    errno = EINVAL;
    return -1;
  }
  if (!stralloc_catb(sa, key, i) || !stralloc_catb(sa, ".K", 2)) return -1;
  for (i++; key[i]; i++) {
    char c = key[i];
    if (c == '.') c = '_';
    else if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
               c == '_' || c == '-')) {
      errno = EINVAL;
      return -1;
    }
    if (!stralloc_catb(sa, &c, 1)) return -1;
  }
  return stralloc_catb(sa, ".", 1) && stralloc_catb(sa, host, hl) && stralloc_0(sa) ? 1 : -1;
}

/* 1 if sub/ of the open Maildir dfd holds keyname, keyname,... or keyname:... */
static int key_in(int dfd, char const *sub, char const *keyname, size_t kl)
{
  DIR *d;
  struct dirent *de;
  int fd = opensub(dfd, sub), r = 0;
  if (fd < 0) return -1;
  d = fdopendir(fd);
  if (!d) {
    closeif(&fd);
    return -1;
  }
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (!strncmp(de->d_name, keyname, kl) &&
        (!de->d_name[kl] || de->d_name[kl] == ',' || de->d_name[kl] == ':')) {
      r = 1;
      break;
    }
  }
  if (!de && errno) r = -1;
  {
    int e = errno;
    closedir(d);
    errno = e;
  }
  return r;
}

int maildir_key_seen(char const *dir, char const *keyname)
{
  size_t kl = strlen(keyname);
  int r, dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  r = key_in(dfd, "new", keyname, kl);
  if (!r) r = key_in(dfd, "cur", keyname, kl);
  closeif(&dfd);
  return r;
}

int maildir_tmp_clean(char const *dir, unsigned long maxage)
{
  DIR *d;
  struct dirent *de;
  int fd, n = 0;
  time_t now = time(0);
  d = opendir_sub(dir, "tmp", 1);
  if (!d) return -1;
  fd = dirfd(d);
  for (;;) {
    struct stat st;
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) continue;
    if (st.st_mtime > now || (unsigned long)(now - st.st_mtime) <= maxage) continue;
    if (unlinkat(fd, de->d_name, 0) == 0 && n < 0x7fffffff) n++;
  }
  if (errno) {
    int e = errno;
    closedir(d);
    errno = e;
    return -1;
  }
  closedir(d);
  return n;
}

int maildir_make(char const *dir, mode_t mode)
{
  static char const *const sub[3] = {"tmp", "new", "cur"};
  int dfd;
  unsigned int i;
  if (mkdir(dir, mode) < 0 && errno != EEXIST) return -1;
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  for (i = 0; i < 3; i++)
    if (mkdirat(dfd, sub[i], mode) < 0 && errno != EEXIST) {
      closeif(&dfd);
      return -1;
    }
  close(dfd);
  return 1;
}

/* ---- loop detection ---- */

void maildir_loop_init(maildir_loop *l, char const *rcpt, size_t rcptlen)
{
  l->rcpt = rcpt;
  l->rcptlen = rcptlen;
  l->fieldlen = 0;
  l->fieldlong = 0;
  l->atlinestart = 1;
  l->lineempty = 1;
  l->received = 0;
  l->done = 0;
  l->verdict = 0;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* the current field's name is name (lower case, n bytes), blanks before ':' allowed */
static int field_is(maildir_loop const *l, char const *name, size_t n)
{
  size_t i, k = 0;
  while (k < l->fieldlen && l->field[k] != ':') k++;
  if (k == l->fieldlen) return 0;
  while (k && (l->field[k - 1] == ' ' || l->field[k - 1] == '\t')) k--;
  if (k != n) return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)l->field[i]) != name[i]) return 0;
  return 1;
}

static void field_done(maildir_loop *l)
{
  if (!l->fieldlen) return;
  if (field_is(l, "received", 8)) {
    if (++l->received > MAILDIR_RECEIVED_MAX) l->verdict = MAILDIR_LOOP_HOPS;
  } else if (!l->fieldlong && field_is(l, "delivered-to", 12)) {
    char const *v = memchr(l->field, ':', l->fieldlen);
    size_t vl, i;
    v++;
    vl = l->fieldlen - (size_t)(v - l->field);
    while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t' || v[vl - 1] == '\r')) vl--;
    if (vl >= 2 && v[0] == '<' && v[vl - 1] == '>') v++, vl -= 2;
    if (vl == l->rcptlen) {
      for (i = 0; i < vl; i++)
        if (lower((unsigned char)v[i]) != lower((unsigned char)l->rcpt[i])) break;
      if (i == vl) l->verdict = MAILDIR_LOOP_DELIVERED;
    }
  }
  l->fieldlen = 0;
  l->fieldlong = 0;
}

size_t maildir_loop_feed(maildir_loop *l, char const *s, size_t n)
{
  size_t i;
  if (l->done || l->verdict) return 0;
  for (i = 0; i < n; i++) {
    char c = s[i];
    if (l->atlinestart) {
      l->atlinestart = 0;
      l->lineempty = 1;
      /* a line not starting with a blank begins a new field: the previous one is whole */
      if (c != '\n' && c != ' ' && c != '\t') {
        field_done(l);
        if (l->verdict) return i;
      }
    }
    if (c == '\n') {
      l->atlinestart = 1;
      if (l->lineempty) { /* the empty line: end of the header section */
        field_done(l);
        l->done = 1;
        return i + 1;
      }
      continue;
    }
    l->lineempty = 0;
    if (l->fieldlen < MAILDIR_FIELD_KEEP)
      l->field[l->fieldlen++] = c;
    else
      l->fieldlong = 1;
  }
  return n;
}

int maildir_loop_end(maildir_loop *l)
{
  if (!l->done && !l->verdict) field_done(l);
  l->done = 1;
  return l->verdict;
}

/* ---- quota ---- */

static size_t scan_u64(char const *s, size_t len, uint64_t *u)
{
  size_t i = 0;
  uint64_t v = 0;
  while (i < len && s[i] >= '0' && s[i] <= '9') {
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return 0;
    v = v * 10 + d;
    i++;
  }
  if (i) *u = v;
  return i;
}

/* a signed decimal that fits an int64 */
static size_t scan_i64(char const *s, size_t len, int64_t *v)
{
  uint64_t u;
  size_t i = 0, n;
  int neg = 0;
  if (len && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    i = 1;
  }
  n = scan_u64(s + i, len - i, &u);
  if (!n || u > (uint64_t)INT64_MAX) return 0;
  *v = neg ? -(int64_t)u : (int64_t)u;
  return i + n;
}

int maildir_quota_parse(char const *s, size_t len, uint64_t *maxsize, uint64_t *maxcount)
{
  size_t i = 0;
  uint64_t sz = 0, ct = 0;
  int seens = 0, seenc = 0;
  if (!len) return 0;
  while (i < len) {
    uint64_t u;
    size_t n = scan_u64(s + i, len - i, &u);
    if (!n) return 0;
    i += n;
    if (i == len && !seens && !seenc && n == len) {
      sz = u; /* a bare number: bytes */
      seens = 1;
      break;
    }
    if (i >= len) return 0;
    if (s[i] == 'S' && !seens) {
      sz = u;
      seens = 1;
    } else if (s[i] == 'C' && !seenc) {
      ct = u;
      seenc = 1;
    } else
      return 0;
    i++;
    if (i < len) {
      if (s[i] != ',' || i + 1 == len) return 0;
      i++;
    }
  }
  *maxsize = sz;
  *maxcount = ct;
  return 1;
}

int maildir_quota_fmt(stralloc *sa, uint64_t maxsize, uint64_t maxcount)
{
  char fmt[ULONG_FMT];
  if (maxsize &&
      (!stralloc_catb(sa, fmt, uint64_fmt(fmt, maxsize)) || !stralloc_catb(sa, "S", 1)))
    return 0;
  if (maxsize && maxcount && !stralloc_catb(sa, ",", 1)) return 0;
  if (maxcount &&
      (!stralloc_catb(sa, fmt, uint64_fmt(fmt, maxcount)) || !stralloc_catb(sa, "C", 1)))
    return 0;
  return 1;
}

static int isblank_(char c) { return c == ' ' || c == '\t'; }

int maildir_quota_parsefile(char const *s, size_t len, maildir_quota *q)
{
  size_t i = 0, e;
  q->cursize = q->curcount = 0;
  q->stale = 0;
  for (e = 0; e < len && s[e] != '\n'; e++) ;
  if (e == len) return 0; /* no complete first line */
  if (!maildir_quota_parse(s, e, &q->maxsize, &q->maxcount)) return 0;
  i = e + 1;
  while (i < len) {
    int64_t sz, ct;
    size_t n;
    for (e = i; e < len && s[e] != '\n'; e++) ;
    if (e == len) { /* an unterminated last line: a writer is in the middle, or junk */
      q->stale = 1;
      break;
    }
    while (i < e && isblank_(s[i])) i++;
    n = scan_i64(s + i, e - i, &sz);
    if (!n) goto bad;
    i += n;
    if (i >= e || !isblank_(s[i])) goto bad;
    while (i < e && isblank_(s[i])) i++;
    n = scan_i64(s + i, e - i, &ct);
    if (!n) goto bad;
    i += n;
    while (i < e && isblank_(s[i])) i++;
    if (i != e) goto bad;
    if ((sz > 0 && q->cursize > INT64_MAX - sz) || (sz < 0 && q->cursize < INT64_MIN - sz) ||
        (ct > 0 && q->curcount > INT64_MAX - ct) || (ct < 0 && q->curcount < INT64_MIN - ct))
      goto bad;
    q->cursize += sz;
    q->curcount += ct;
    i = e + 1;
    continue;
  bad:
    q->stale = 1;
    i = e + 1;
  }
  return 1;
}

int maildir_quota_read(char const *dir, maildir_quota *q)
{
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;
  if (dfd < 0) {
    memset(q, 0, sizeof *q);
    return -1;
  }
  r = maildir_quota_readat(dfd, q);
  {
    int e = errno;
    close(dfd);
    errno = e;
  }
  return r;
}

int maildir_quota_readat(int dfd, maildir_quota *q)
{
  char buf[MAILDIR_QUOTA_FILE_MAX];
  struct stat st;
  size_t len = 0;
  int fd, r;
  memset(q, 0, sizeof *q);
  fd = openat(dfd, "maildirsize", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  if (fstat(fd, &st) < 0) goto err;
  for (;;) {
    ssize_t n;
    if (len == sizeof buf) break;
    n = fd_read(fd, buf + len, sizeof buf - len);
    if (n < 0) goto err;
    if (!n) break;
    len += (size_t)n;
  }
  close(fd);
  r = maildir_quota_parsefile(buf, len, q);
  if (!r) {
    memset(q, 0, sizeof *q);
    return 0;
  }
  q->filesize = (size_t)st.st_size;
  q->mtime = st.st_mtime;
  if ((uint64_t)st.st_size > sizeof buf) q->stale = 1;
  return 1;
err:
  closeif(&fd);
  return -1;
}

/* adds up new/ and cur/ of one Maildir (dfd) */
static int count_folder(int dfd, int64_t *size, int64_t *count)
{
  static char const *const sub[2] = {"new", "cur"};
  unsigned int k;
  for (k = 0; k < 2; k++) {
    DIR *d;
    struct dirent *de;
    int fd = openat(dfd, sub[k], DIRFLAGS);
    if (fd < 0) {
      if (errno == ENOENT) continue;
      return -1;
    }
    d = fdopendir(fd);
    if (!d) {
      closeif(&fd);
      return -1;
    }
    for (;;) {
      uint64_t sz;
      errno = 0;
      de = readdir(d);
      if (!de) break;
      if (de->d_name[0] == '.') continue;
      if (!maildir_namesize(de->d_name, strlen(de->d_name), &sz)) {
        struct stat st;
        if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
          if (errno == ENOENT) continue; /* moved or deleted meanwhile */
          closedir(d);
          return -1;
        }
        if (!S_ISREG(st.st_mode)) continue;
        sz = (uint64_t)st.st_size;
      }
      if (sz > (uint64_t)INT64_MAX - (uint64_t)*size) sz = (uint64_t)(INT64_MAX - *size);
      *size += (int64_t)sz;
      (*count)++;
    }
    if (errno) {
      int e = errno;
      closedir(d);
      errno = e;
      return -1;
    }
    closedir(d);
  }
  return 1;
}

int maildir_quota_recalc(char const *dir, uint64_t maxsize, uint64_t maxcount, maildir_quota *q)
{
  stralloc sa = STRALLOC_ZERO;
  stralloc name = STRALLOC_ZERO;
  char fmt[LONG_FMT];
  int64_t size = 0, count = 0;
  int dfd = -1, tfd = -1, fd = -1;
  DIR *d;
  struct dirent *de;
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  if (count_folder(dfd, &size, &count) < 0) goto err;
  {
    int fd2 = dup(dfd);
    if (fd2 < 0) goto err;
    d = fdopendir(fd2);
    if (!d) {
      closeif(&fd2);
      goto err;
    }
  }
  for (;;) {
    int ffd;
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (de->d_name[0] != '.' || !de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2]))
      continue;
    ffd = openat(dfd, de->d_name, DIRFLAGS);
    if (ffd < 0) continue; /* not a folder (or gone) */
    if (count_folder(ffd, &size, &count) < 0) {
      int e = errno;
      close(ffd);
      closedir(d);
      errno = e;
      goto err;
    }
    close(ffd);
  }
  if (errno) {
    int e = errno;
    closedir(d);
    errno = e;
    goto err;
  }
  closedir(d);

  if (!maildir_quota_fmt(&sa, maxsize, maxcount) || !stralloc_catb(&sa, "\n", 1) ||
      !stralloc_catb(&sa, fmt, int64_fmt(fmt, size)) || !stralloc_catb(&sa, " ", 1) ||
      !stralloc_catb(&sa, fmt, int64_fmt(fmt, count)) || !stralloc_catb(&sa, "\n", 1))
    goto err;
  tfd = openat(dfd, "tmp", DIRFLAGS);
  if (tfd < 0) goto err;
  if (maildir_uniqname(&name) < 0) goto err;
  fd = openat(tfd, name.s, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) goto err;
  if (allwrite(fd, sa.s, sa.len) != sa.len || fsync(fd) < 0) goto errunlink;
  {
    int cfd = fd;
    fd = -1;
    if (close(cfd) < 0) goto errunlink;
  }
  if (renameat(tfd, name.s, dfd, "maildirsize") < 0) goto errunlink;
  fsync(dfd); /* best effort: a lost maildirsize is recomputed */
  memset(q, 0, sizeof *q);
  q->maxsize = maxsize;
  q->maxcount = maxcount;
  q->cursize = size;
  q->curcount = count;
  q->filesize = sa.len;
  q->mtime = time(0);
  close(tfd);
  close(dfd);
  stralloc_free(&sa);
  stralloc_free(&name);
  return 1;
errunlink:
  {
    int e = errno;
    closeif(&fd);
    unlinkat(tfd, name.s, 0);
    errno = e;
  }
err:
  closeif(&fd);
  closeif(&tfd);
  closeif(&dfd);
  stralloc_free(&sa);
  stralloc_free(&name);
  return -1;
}

int maildir_quota_fits(maildir_quota const *q, uint64_t size, uint64_t count)
{
  uint64_t cs = q->cursize > 0 ? (uint64_t)q->cursize : 0;
  uint64_t cc = q->curcount > 0 ? (uint64_t)q->curcount : 0;
  if (q->maxsize && (size > q->maxsize || cs > q->maxsize - size)) return 0;
  if (q->maxcount && (count > q->maxcount || cc > q->maxcount - count)) return 0;
  return 1;
}

int maildir_quota_add(char const *dir, int64_t size, int64_t count)
{
  char line[2 * LONG_FMT + 2];
  size_t n = 0;
  int dfd, fd;
  ssize_t w;
  n += int64_fmt(line + n, size);
  line[n++] = ' ';
  n += int64_fmt(line + n, count);
  line[n++] = '\n';
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  fd = openat(dfd, "maildirsize", O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
  close(dfd);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  w = fd_write(fd, line, n); /* one write: O_APPEND keeps concurrent lines whole */
  if (w < 0 || (size_t)w != n) {
    int e = w < 0 ? errno : EIO;
    close(fd);
    errno = e;
    return -1;
  }
  if (close(fd) < 0) return -1;
  return 1;
}

/* ---- listing and info ---- */

int maildir_list(char const *dir, char const *sub, stralloc *names)
{
  DIR *d;
  struct dirent *de;
  int n = 0;
  size_t start = names->len;
  d = opendir_sub(dir, sub, 0);
  if (!d) return -1;
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (de->d_name[0] == '.') continue;
    if (!stralloc_cats(names, de->d_name) || !stralloc_0(names)) goto err;
    if (n == 0x7fffffff) {
      errno = EOVERFLOW;
      goto err;
    }
    n++;
  }
  if (errno) goto err;
  closedir(d);
  return n;
err:
  {
    int e = errno;
    closedir(d);
    names->len = start;
    errno = e;
  }
  return -1;
}

size_t maildir_uniqlen(char const *name, size_t len)
{
  size_t i;
  for (i = 0; i < len; i++)
    if (name[i] == ':') return i;
  return len;
}

int maildir_flags(char const *name, size_t len, char const **flags, size_t *flen)
{
  size_t u = maildir_uniqlen(name, len);
  if (len - u < 3 || name[u + 1] != '2' || name[u + 2] != ',') return 0;
  *flags = name + u + 3;
  *flen = len - u - 3;
  return 1;
}

int maildir_hasflag(char const *name, size_t len, char c)
{
  char const *f;
  size_t fl;
  if (!maildir_flags(name, len, &f, &fl)) return 0;
  return memchr(f, c, fl) != 0;
}

int maildir_setflags(stralloc *out, char const *name, size_t len, char const *flags, size_t flen)
{
  unsigned char have[128];
  size_t i;
  memset(have, 0, sizeof have);
  for (i = 0; i < flen; i++) {
    unsigned char c = (unsigned char)flags[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) have[c] = 1;
  }
  if (!stralloc_catb(out, name, maildir_uniqlen(name, len)) || !stralloc_catb(out, ":2,", 3))
    return 0;
  for (i = 0; i < 128; i++)
    if (have[i]) {
      char c = (char)i;
      if (!stralloc_catb(out, &c, 1)) return 0;
    }
  return stralloc_0(out);
}

int maildir_namesize(char const *name, size_t len, uint64_t *size)
{
  size_t u = maildir_uniqlen(name, len), i;
  /* the last ",S=" in the unique part, followed by digits up to ',' or the end */
  for (i = u; i >= 3; i--) {
    if (name[i - 3] == ',' && name[i - 2] == 'S' && name[i - 1] == '=') {
      uint64_t v;
      size_t n = scan_u64(name + i, u - i, &v);
      if (n && (i + n == u || name[i + n] == ',')) {
        *size = v;
        return 1;
      }
    }
  }
  return 0;
}
