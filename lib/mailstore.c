/* mailstore: Maildir++ folders as IMAP sees them. See mailstore.h and doc/maildir.md. */
#define _DEFAULT_SOURCE /* madvise(MADV_DONTNEED): glibc's posix_madvise ignores it */
#include <dirent.h>
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/direntry.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/types.h>
#include "imap_parse.h"
#include "maildir.h"
#include "mailstore.h"

#define RECORD_TMP MAILSTORE_RECORD ".tmp"
#define JOURNAL MAILSTORE_RECORD ".log"
#define JOURNAL_MIN (64UL << 10) /* a journal may grow to this + half the record's size */
#define RECORD_LOCK MAILSTORE_RECORD ".lock"
#define RECORD_MAX (512UL << 20)

/* ---- small helpers ---- */

static int pathcat(stralloc *sa, char const *a, char const *b, char const *c)
{
  sa->len = 0;
  if (!stralloc_cats(sa, a)) return 0;
  if (b && (!stralloc_catb(sa, "/", 1) || !stralloc_cats(sa, b))) return 0;
  if (c && (!stralloc_catb(sa, "/", 1) || !stralloc_cats(sa, c))) return 0;
  return stralloc_0(sa);
}

static int fsync_dir(char const *dir)
{
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int r;
  if (fd < 0) return -1;
  r = fsync(fd);
  if (r < 0 && (errno == EINVAL || errno == EROFS)) r = 0;
  fd_close(fd);
  return r;
}

static int lock_folder(char const *dir)
{
  stralloc p = STRALLOC_ZERO;
  int fd;
  struct flock fl;
  if (!pathcat(&p, dir, RECORD_LOCK, 0)) return -1;
  fd = open(p.s, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  stralloc_free(&p);
  if (fd < 0) return -1;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  while (fcntl(fd, F_SETLKW, &fl) < 0) {
    if (errno != EINTR) {
      fd_close(fd);
      return -1;
    }
  }
  return fd;
}

static void unlock_folder(int fd)
{
  if (fd >= 0) fd_close(fd); /* closing drops the lock */
}

/* Orders names by their unique part (up to ':'), a shorter one first: one pass, no strlen
 * (it is the sort and search key of every sync over tens of thousands of names). */
static int uniqcmp(char const *a, char const *b)
{
  for (;; a++, b++) {
    unsigned char x = *a == ':' ? 0 : (unsigned char)*a;
    unsigned char y = *b == ':' ? 0 : (unsigned char)*b;
    if (x != y) return x < y ? -1 : 1;
    if (!x) return 0;
  }
}

/* A message's file name is in one of two places: the heap arena `names` (offset), or, with
 * NAME_MAPPED, the mapped record it was read from, where it ends at its '\n'. A session
 * that opens a folder from its record takes no copy of the names (half of its table, 50
 * octets a message); the record's pages are dropped from the process once read
 * (MADV_DONTNEED: they stay in the page cache) and come back one page at a time when a name
 * is needed. A mapped name is at most NAME_LEN_MAX octets (a longer one is copied). */
/* the table's entry stays 24 octets (mailstore.h) */
typedef char mailstore_msg_is_24_octets[sizeof(mailstore_msg) == 24 ? 1 : -1];

#define NAME_MAPPED 0x80000000u
#define NAME_LEN_MAX 255

/* The NUL-terminated name at off. A mapped one is copied into one of four rotating buffers:
 * valid until four more calls. */
static char const *nameat(stralloc const *names, char const *map, uint32_t off)
{
  static char buf[4][NAME_LEN_MAX + 1];
  static unsigned int k;
  char const *s;
  char *b;
  size_t i;
  if (!(off & NAME_MAPPED)) return names->s + off;
  s = map + (off & ~NAME_MAPPED);
  b = buf[k++ & 3];
  for (i = 0; i < NAME_LEN_MAX && s[i] != '\n'; i++) b[i] = s[i];
  b[i] = 0;
  return b;
}

void mailstore_parse_info(char const *name, uint32_t *flags, uint32_t *kw)
{
  char const *f;
  size_t fl, i;
  *flags = 0;
  *kw = 0;
  if (!maildir_flags(name, strlen(name), &f, &fl)) return;
  for (i = 0; i < fl; i++) {
    char c = f[i];
    switch (c) {
      case 'S': *flags |= MS_SEEN; break;
      case 'R': *flags |= MS_ANSWERED; break;
      case 'F': *flags |= MS_FLAGGED; break;
      case 'T': *flags |= MS_DELETED; break;
      case 'D': *flags |= MS_DRAFT; break;
      default:
        if (c >= 'a' && c <= 'z') *kw |= 1u << (c - 'a');
    }
  }
}

/* The name of a file with new flags: its unique part, ":2,", the letters sorted (letters
 * that are not ours, like P, kept). */
static int rename_info(stralloc *out, char const *name, uint32_t flags, uint32_t kw)
{
  char letters[64];
  size_t n = 0, len = strlen(name), u = maildir_uniqlen(name, len);
  char const *f;
  size_t fl, i;
  int c;
  if (maildir_flags(name, len, &f, &fl))
    for (i = 0; i < fl && n < 26; i++)
      if (f[i] >= 'A' && f[i] <= 'Z' && !strchr("SRFTD", f[i])) letters[n++] = f[i];
  if (flags & MS_DRAFT) letters[n++] = 'D';
  if (flags & MS_FLAGGED) letters[n++] = 'F';
  if (flags & MS_ANSWERED) letters[n++] = 'R';
  if (flags & MS_SEEN) letters[n++] = 'S';
  if (flags & MS_DELETED) letters[n++] = 'T';
  for (c = 0; c < 26; c++)
    if (kw & (1u << c)) letters[n++] = (char)('a' + c);
  /* sort (insertion; at most 57 letters) and drop duplicates */
  for (i = 1; i < n; i++) {
    char t = letters[i];
    size_t j = i;
    while (j && letters[j - 1] > t) {
      letters[j] = letters[j - 1];
      j--;
    }
    letters[j] = t;
  }
  out->len = 0;
  if (!stralloc_catb(out, name, u) || !stralloc_catb(out, ":2,", 3)) return 0;
  for (i = 0; i < n; i++)
    if (!i || letters[i] != letters[i - 1])
      if (!stralloc_catb(out, letters + i, 1)) return 0;
  return stralloc_0(out);
}

/* ---- Maildir++ quota (ROOT/maildirsize, kept right as deliver-maildir does) ---- */

/* The size of a message file: its ",S=" tag, else what lstat says. */
static uint64_t msg_size(char const *path, char const *name)
{
  uint64_t sz;
  struct stat st;
  if (maildir_namesize(name, strlen(name), &sz)) return sz;
  return lstat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Whether bytes in count messages still fit the quota (no maildirsize: yes). */
static int quota_fits(uint64_t bytes, uint64_t count)
{
  maildir_quota q;
  if (maildir_quota_read(".", &q) != 1) return 1;
  if (q.stale) return 1; /* deliver-maildir recomputes it; do not refuse on a guess */
  return maildir_quota_fits(&q, bytes, count);
}

static void quota_add(int64_t bytes, int64_t count)
{
  if (count) maildir_quota_add(".", bytes, count); /* best effort, as Maildir++ allows */
}

/* ---- folders ---- */

int mailstore_folder_dir(char const *name, size_t len, char *dir)
{
  size_t i;
  if (!len || len > MAILSTORE_NAME_MAX) return 0;
  if (imap_ieq(name, len, "INBOX")) {
    memcpy(dir, ".", 2);
    return 1;
  }
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c < 0x20 || c >= 0x7f || c == '/') return 0;
    if (c == '.' && (i == 0 || i == len - 1 || name[i + 1] == '.')) return 0;
  }
  if (!imap_mutf7_valid(name, len)) return 0;
  dir[0] = '.';
  memcpy(dir + 1, name, len);
  dir[len + 1] = 0;
  /* "INBOX.x" is a folder of its own; names that end as a file of ours cannot occur (the
   * leading '.' keeps them apart from cur, new, tmp and the record) */
  return 1;
}

char const *mailstore_special_use(char const *name, size_t len)
{
  static char const *const map[][2] = {{"Sent", "\\Sent"},     {"Drafts", "\\Drafts"},
                                       {"Trash", "\\Trash"},   {"Junk", "\\Junk"},
                                       {"Archive", "\\Archive"}};
  size_t i;
  for (i = 0; i < sizeof map / sizeof map[0]; i++)
    if (len == strlen(map[i][0]) && !memcmp(name, map[i][0], len)) return map[i][1];
  return 0;
}

int mailstore_folder_create(char const *dir)
{
  stralloc p = STRALLOC_ZERO;
  int fd;
  if (mkdir(dir, 0700) < 0) return -1;
  if (maildir_make(dir, 0700) < 0) goto err;
  if (!pathcat(&p, dir, "maildirfolder", 0)) goto err;
  fd = open(p.s, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) goto err;
  fd_close(fd);
  stralloc_free(&p);
  fsync_dir(".");
  return 1;
err:
  stralloc_free(&p);
  return -1;
}

int mailstore_default_folders(void)
{
  static char const *const names[] = {"Sent", "Drafts", "Trash", "Junk", "Archive"};
  size_t i;
  for (i = 0; i < 5; i++) {
    char dir[16];
    dir[0] = '.';
    strcpy(dir + 1, names[i]);
    if (mailstore_folder_create(dir) < 0 && errno != EEXIST) return -1;
    if (mailstore_subscribe(names[i], strlen(names[i]), 1) < 0) return -1;
  }
  return 1;
}

/* Removes the entries of dir/sub (files only) and sub itself. */
static int empty_sub(char const *dir, char const *sub, uint64_t *bytes, uint64_t *count)
{
  stralloc p = STRALLOC_ZERO;
  DIR *d;
  int dfd, e = 0;
  if (!pathcat(&p, dir, sub, 0)) return -1;
  dfd = open(p.s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    stralloc_free(&p);
    return errno == ENOENT ? 1 : -1;
  }
  d = fdopendir(dfd);
  if (!d) {
    fd_close(dfd);
    stralloc_free(&p);
    return -1;
  }
  for (;;) {
    struct dirent *de;
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    if (bytes) {
      struct stat st;
      uint64_t sz;
      if (!maildir_namesize(de->d_name, strlen(de->d_name), &sz))
        sz = fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)st.st_size : 0;
      if (unlinkat(dfd, de->d_name, 0) == 0) {
        *bytes += sz;
        (*count)++;
      } else if (errno != ENOENT)
        e = errno;
      continue;
    }
    if (unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT) e = errno;
  }
  if (errno) e = errno;
  closedir(d);
  if (!e && strcmp(sub, ".") && rmdir(p.s) < 0) e = errno;
  stralloc_free(&p);
  if (e) {
    errno = e;
    return -1;
  }
  return 1;
}

int mailstore_folder_delete(char const *dir)
{
  if (!strcmp(dir, ".")) {
    errno = EPERM;
    return -1;
  }
  {
    uint64_t bytes = 0, count = 0;
    int r = empty_sub(dir, "cur", &bytes, &count) < 0 || empty_sub(dir, "new", &bytes, &count) < 0;
    quota_add(-(int64_t)bytes, -(int64_t)count);
    if (r || empty_sub(dir, "tmp", 0, 0) < 0) return -1;
  }
  if (empty_sub(dir, ".", 0, 0) < 0) return -1;
  if (rmdir(dir) < 0) return -1;
  fsync_dir(".");
  return 1;
}

int mailstore_folder_rename(char const *from, char const *to)
{
  stralloc all = STRALLOC_ZERO, a = STRALLOC_ZERO, b = STRALLOC_ZERO;
  size_t fl = strlen(from), i;
  int r = -1;
  struct stat st;
  if (!strcmp(from, ".") || !strcmp(to, ".")) {
    errno = EPERM;
    return -1;
  }
  if (lstat(to, &st) == 0) {
    errno = EEXIST;
    return -1;
  }
  if (mailstore_folder_list(&all) < 0) goto out;
  /* children first are not needed: each is its own directory */
  for (i = 0; i < all.len; i += strlen(all.s + i) + 1) {
    char const *n = all.s + i;
    size_t nl = strlen(n);
    if (nl + 1 > fl && !memcmp(n, from + 1, fl - 1) && n[fl - 1] == '.') {
      a.len = b.len = 0;
      if (!stralloc_catb(&a, ".", 1) || !stralloc_cats(&a, n) || !stralloc_0(&a)) goto out;
      if (!stralloc_cats(&b, to) || !stralloc_cats(&b, n + fl - 1) || !stralloc_0(&b)) goto out;
      if (lstat(b.s, &st) == 0) {
        errno = EEXIST;
        goto out;
      }
      if (rename(a.s, b.s) < 0) goto out;
    }
  }
  if (rename(from, to) < 0 && errno != ENOENT) goto out;
  fsync_dir(".");
  r = 1;
out:
  stralloc_free(&all);
  stralloc_free(&a);
  stralloc_free(&b);
  return r;
}

static int strcmp_q(void const *a, void const *b)
{
  return strcmp(*(char const *const *)a, *(char const *const *)b);
}

/* Sorts the NUL-terminated strings of sa[start..). */
static int sort_names(stralloc *sa, size_t start, size_t count)
{
  char const **v;
  stralloc out = STRALLOC_ZERO;
  size_t i, k = 0;
  if (count < 2) return 1;
  v = malloc(count * sizeof *v);
  if (!v) return 0;
  for (i = start; i < sa->len && k < count; i += strlen(sa->s + i) + 1) v[k++] = sa->s + i;
  qsort(v, k, sizeof *v, &strcmp_q);
  for (i = 0; i < k; i++)
    if (!stralloc_catb(&out, v[i], strlen(v[i]) + 1)) {
      free(v);
      stralloc_free(&out);
      return 0;
    }
  free(v);
  memcpy(sa->s + start, out.s, out.len);
  stralloc_free(&out);
  return 1;
}

int mailstore_folder_list(stralloc *names)
{
  DIR *d = opendir(".");
  size_t start = names->len;
  int n = 0;
  if (!d) return -1;
  for (;;) {
    struct dirent *de;
    struct stat st;
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (de->d_name[0] != '.' || !de->d_name[1] || !strcmp(de->d_name, "..")) continue;
    if (de->d_name[1] == '.') continue;
    if (lstat(de->d_name, &st) < 0 || !S_ISDIR(st.st_mode)) continue;
    if (strlen(de->d_name + 1) > MAILSTORE_NAME_MAX) continue;
    if (!stralloc_catb(names, de->d_name + 1, strlen(de->d_name))) {
      dir_close(d);
      return -1;
    }
    n++;
  }
  if (errno) {
    int e = errno;
    dir_close(d);
    errno = e;
    return -1;
  }
  dir_close(d);
  if (!sort_names(names, start, (size_t)n)) return -1;
  return n;
}

int mailstore_subscriptions(stralloc *names)
{
  stralloc f = STRALLOC_ZERO;
  size_t i = 0;
  int n = 0;
  if (!openslurpclose(&f, "subscriptions")) {
    stralloc_free(&f);
    return errno == ENOENT ? 0 : -1;
  }
  while (i < f.len) {
    char *nl = memchr(f.s + i, '\n', f.len - i);
    size_t l = nl ? (size_t)(nl - (f.s + i)) : f.len - i;
    if (l && l <= MAILSTORE_NAME_MAX) {
      if (!stralloc_catb(names, f.s + i, l) || !stralloc_0(names)) {
        stralloc_free(&f);
        return -1;
      }
      n++;
    }
    i += l + 1;
  }
  stralloc_free(&f);
  return n;
}

int mailstore_subscribe(char const *name, size_t len, int on)
{
  stralloc cur = STRALLOC_ZERO, out = STRALLOC_ZERO;
  int n, fd, found = 0, r = -1;
  size_t i;
  n = mailstore_subscriptions(&cur);
  if (n < 0) goto done;
  for (i = 0; i < cur.len; i += strlen(cur.s + i) + 1) {
    size_t l = strlen(cur.s + i);
    if (l == len && !memcmp(cur.s + i, name, len)) {
      found = 1;
      if (!on) continue;
    }
    if (!stralloc_catb(&out, cur.s + i, l) || !stralloc_catb(&out, "\n", 1)) goto done;
  }
  if (on && found) {
    r = 1;
    goto done;
  }
  if (!on && !found) {
    r = 1;
    goto done;
  }
  if (on && (!stralloc_catb(&out, name, len) || !stralloc_catb(&out, "\n", 1))) goto done;
  fd = open("subscriptions.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) goto done;
  if (allwrite(fd, out.s, out.len) < out.len || fsync(fd) < 0) {
    fd_close(fd);
    goto done;
  }
  fd_close(fd);
  if (rename("subscriptions.tmp", "subscriptions") < 0) goto done;
  r = 1;
done:
  stralloc_free(&cur);
  stralloc_free(&out);
  return r;
}

/* ---- keywords (dovecot-keywords) ---- */

static void kw_free(mailstore *ms)
{
  unsigned int i;
  for (i = 0; i < MAILSTORE_KEYWORDS; i++) {
    free(ms->kw[i]);
    ms->kw[i] = 0;
  }
  ms->nkw = 0;
}

static int kw_load(mailstore *ms)
{
  stralloc p = STRALLOC_ZERO, f = STRALLOC_ZERO;
  struct stat st;
  size_t i = 0;
  if (!pathcat(&p, ms->dir, "dovecot-keywords", 0)) return -1;
  if (stat(p.s, &st) < 0) {
    stralloc_free(&p);
    if (errno != ENOENT) return -1;
    kw_free(ms);
    ms->kw_mtime = 0;
    return 1;
  }
  if (st.st_mtime == ms->kw_mtime && ms->kw_mtime) {
    stralloc_free(&p);
    return 1;
  }
  if (!openslurpclose(&f, p.s)) {
    stralloc_free(&p);
    return -1;
  }
  stralloc_free(&p);
  kw_free(ms);
  while (i < f.len) {
    char *nl = memchr(f.s + i, '\n', f.len - i);
    size_t l = nl ? (size_t)(nl - (f.s + i)) : f.len - i;
    char *line = f.s + i;
    size_t sp = 0;
    uint32_t idx;
    while (sp < l && line[sp] != ' ') sp++;
    if (sp < l && imap_number(line, sp, &idx) && idx < MAILSTORE_KEYWORDS && l - sp - 1 > 0 &&
        l - sp - 1 <= MAILSTORE_KEYWORD_MAX && !ms->kw[idx]) {
      ms->kw[idx] = malloc(l - sp);
      if (ms->kw[idx]) {
        memcpy(ms->kw[idx], line + sp + 1, l - sp - 1);
        ms->kw[idx][l - sp - 1] = 0;
        ms->nkw++;
      }
    } else if (sp < l && line[0] == '0' && sp == 1 && l == 1) {
      /* nothing */
    }
    i += l + 1;
  }
  stralloc_free(&f);
  ms->kw_mtime = st.st_mtime;
  return 1;
}

static int kw_save(mailstore *ms)
{
  stralloc out = STRALLOC_ZERO, p = STRALLOC_ZERO, t = STRALLOC_ZERO;
  unsigned int i;
  int fd, r = -1;
  struct stat st;
  for (i = 0; i < MAILSTORE_KEYWORDS; i++) {
    char fmt[UINT_FMT];
    if (!ms->kw[i]) continue;
    if (!stralloc_catb(&out, fmt, uint_fmt(fmt, i)) || !stralloc_catb(&out, " ", 1) ||
        !stralloc_cats(&out, ms->kw[i]) || !stralloc_catb(&out, "\n", 1))
      goto done;
  }
  if (!pathcat(&p, ms->dir, "dovecot-keywords", 0) ||
      !pathcat(&t, ms->dir, "dovecot-keywords.tmp", 0))
    goto done;
  fd = open(t.s, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) goto done;
  if (allwrite(fd, out.s, out.len) < out.len || fsync(fd) < 0) {
    fd_close(fd);
    goto done;
  }
  fd_close(fd);
  if (rename(t.s, p.s) < 0) goto done;
  if (stat(p.s, &st) == 0) ms->kw_mtime = st.st_mtime;
  r = 1;
done:
  stralloc_free(&out);
  stralloc_free(&p);
  stralloc_free(&t);
  return r;
}

int mailstore_keyword(mailstore *ms, char const *name, size_t len, int create)
{
  unsigned int i;
  int lk;
  for (i = 0; i < MAILSTORE_KEYWORDS; i++)
    if (ms->kw[i] && strlen(ms->kw[i]) == len && imap_ieq(name, len, ms->kw[i])) return (int)i;
  if (!create) {
    errno = ENOENT;
    return -1;
  }
  if (!len || len > MAILSTORE_KEYWORD_MAX) {
    errno = EINVAL;
    return -1;
  }
  lk = lock_folder(ms->dir);
  if (lk < 0) return -1;
  ms->kw_mtime = 0;
  if (kw_load(ms) < 0) goto fail;
  for (i = 0; i < MAILSTORE_KEYWORDS; i++)
    if (ms->kw[i] && strlen(ms->kw[i]) == len && imap_ieq(name, len, ms->kw[i])) {
      unlock_folder(lk);
      return (int)i;
    }
  for (i = 0; i < MAILSTORE_KEYWORDS; i++)
    if (!ms->kw[i]) break;
  if (i == MAILSTORE_KEYWORDS) {
    errno = ENOSPC;
    goto fail;
  }
  ms->kw[i] = malloc(len + 1);
  if (!ms->kw[i]) goto fail;
  memcpy(ms->kw[i], name, len);
  ms->kw[i][len] = 0;
  ms->nkw++;
  if (kw_save(ms) < 0) goto fail;
  unlock_folder(lk);
  return (int)i;
fail:
  {
    int e = errno;
    unlock_folder(lk);
    errno = e;
  }
  return -1;
}

/* ---- the record ---- */

typedef struct rec_s rec;
struct rec_s {
  uint32_t uidvalidity, uidnext, firstrecent;
  uint64_t highestmodseq;
  mailstore_msg *msg;
  size_t n, a;
  stralloc names;
  char *map;     /* the record, mapped: where the NAME_MAPPED names are */
  size_t maplen;
  mailstore_gone *gone;
  size_t ngone, agone;
  uint64_t gonefloor;
  int stamped;                  /* the record says what new/ and cur/ held (S field) */
  struct timespec s_new, s_cur; /* ... at these modification times */
  uint64_t jid;                 /* the record's journal number (J field; 0: none) */
  size_t jvalid;                /* octets of its journal that parse (0: none usable) */
};

static void rec_free(rec *r)
{
  free(r->msg);
  r->msg = 0;
  r->n = r->a = 0;
  stralloc_free(&r->names);
  if (r->map) munmap(r->map, r->maplen);
  r->map = 0;
  r->maplen = 0;
  free(r->gone);
  r->gone = 0;
  r->ngone = r->agone = 0;
}

static int rec_gone(rec *r, uint32_t uid, uint64_t modseq)
{
  if (r->ngone == r->agone) {
    size_t na = r->agone ? r->agone * 2 : 64;
    mailstore_gone *x;
    if (r->ngone >= MAILSTORE_GONE_KEEP) {
      /* forget the older half */
      size_t h = r->ngone / 2;
      r->gonefloor = r->gone[h - 1].modseq;
      memmove(r->gone, r->gone + h, (r->ngone - h) * sizeof *r->gone);
      r->ngone -= h;
    } else {
      x = realloc(r->gone, na * sizeof *x);
      if (!x) return 0;
      r->gone = x;
      r->agone = na;
    }
  }
  r->gone[r->ngone].uid = uid;
  r->gone[r->ngone].modseq = modseq;
  r->ngone++;
  return 1;
}

/* name[0..len): copied into the arena, or, when it lies in r's mapping (mapped: 1), taken
 * from there. */
static int rec_add(rec *r, uint32_t uid, uint64_t modseq, uint64_t wsize, int isnew,
                   char const *name, size_t len, int mapped)
{
  mailstore_msg *m;
  uint32_t f;
  if (r->n == r->a) {
    size_t na = r->a ? r->a * 2 : 64;
    mailstore_msg *x;
    if (na > MAILSTORE_MSGS_MAX) {
      errno = EFBIG;
      return 0;
    }
    x = realloc(r->msg, na * sizeof *x);
    if (!x) return 0;
    r->msg = x;
    r->a = na;
  }
  m = &r->msg[r->n];
  m->uid = uid;
  m->modseq = modseq;
  m->wsize = wsize > UINT32_MAX ? 0 : (uint32_t)wsize;
  if (mapped && len <= NAME_LEN_MAX && (size_t)(name - r->map) < NAME_MAPPED) {
    m->name = (uint32_t)(name - r->map) | NAME_MAPPED;
    mailstore_parse_info(nameat(&r->names, r->map, m->name), &f, &m->keywords);
  } else {
    m->name = (uint32_t)r->names.len;
    if (!stralloc_catb(&r->names, name, len) || !stralloc_0(&r->names)) return 0;
    mailstore_parse_info(r->names.s + m->name, &f, &m->keywords);
  }
  m->flags = f;
  if (isnew) m->flags |= MS_NEW;
  r->n++;
  return 1;
}

static int field(char const **p, char const *end, char key, uint64_t *v)
{
  char const *s = *p;
  char const *e;
  while (s < end && *s == ' ') s++;
  if (s >= end || *s != key) return 0;
  s++;
  e = s;
  while (e < end && *e >= '0' && *e <= '9') e++;
  if (!imap_number64(s, (size_t)(e - s), v)) return 0;
  *p = e;
  return 1;
}

static int digits(char const **p, char const *end, uint64_t *v)
{
  char const *e = *p;
  while (e < end && *e >= '0' && *e <= '9') e++;
  if (!imap_number64(*p, (size_t)(e - *p), v)) return 0;
  *p = e;
  return 1;
}

/* " S<sec>.<nsec>,<sec>.<nsec>": the modification times of new/ and cur/ that the record
 * reflects (written only when the record was made from a listing of both). */
static int stamps_parse(char const **pp, char const *end, struct timespec *a, struct timespec *b)
{
  char const *p = *pp;
  uint64_t v[4];
  int k;
  while (p < end && *p == ' ') p++;
  if (p >= end || *p++ != 'S') return 0;
  for (k = 0; k < 4; k++) {
    if (k && (p >= end || *p++ != (k == 2 ? ',' : '.'))) return 0;
    if (!digits(&p, end, &v[k])) return 0;
  }
  if (v[1] >= 1000000000 || v[3] >= 1000000000 || v[0] > INT64_MAX || v[2] > INT64_MAX) return 0;
  a->tv_sec = (time_t)v[0];
  a->tv_nsec = (long)v[1];
  b->tv_sec = (time_t)v[2];
  b->tv_nsec = (long)v[3];
  *pp = p;
  return 1;
}

/* Parses our record. 1 ok, 0 malformed (r->uidvalidity holds the old V when it could be
 * read), -1 error. */
static int rec_parse(rec *r, char const *s, size_t len)
{
  char const *end = s + len, *nl = memchr(s, '\n', len), *p;
  uint64_t v, nn, m, rr;
  uint32_t lastuid = 0;
  if (!nl || len < 4 || memcmp(s, "PB1 ", 4)) return 0;
  p = s + 3;
  if (!field(&p, nl, 'V', &v) || v == 0 || v > UINT32_MAX) return 0;
  r->uidvalidity = (uint32_t)v;
  if (!field(&p, nl, 'N', &nn) || !field(&p, nl, 'M', &m) || !field(&p, nl, 'R', &rr)) return 0;
  if (nn == 0 || nn > UINT32_MAX || rr > UINT32_MAX || m > MAILSTORE_MODSEQ_MAX) return 0;
  r->uidnext = (uint32_t)nn;
  r->highestmodseq = m;
  r->firstrecent = (uint32_t)rr;
  r->gonefloor = 0;
  r->stamped = 0;
  if (p < nl && !field(&p, nl, 'E', &r->gonefloor)) return 0;
  if (p < nl && stamps_parse(&p, nl, &r->s_new, &r->s_cur)) r->stamped = 1;
  r->jid = 0;
  r->jvalid = 0;
  if (p < nl && !field(&p, nl, 'J', &r->jid)) r->jid = 0;
  s = nl + 1;
  while (s < end) {
    char const *e = memchr(s, '\n', (size_t)(end - s));
    uint32_t uid;
    uint64_t ms, ws;
    char const *q;
    if (!e) return 0; /* not possible with rename, but never trust a torn line */
    if (e - s > 2 && s[0] == 'x' && s[1] == ' ') {
      char const *sp = memchr(s + 2, ' ', (size_t)(e - s - 2));
      if (!sp || !imap_number(s + 2, (size_t)(sp - s - 2), &uid) ||
          !imap_number64(sp + 1, (size_t)(e - sp - 1), &ms) || !rec_gone(r, uid, ms))
        return 0;
      s = e + 1;
      continue;
    }
    q = s;
    while (q < e && *q != ' ') q++;
    if (!imap_number(s, (size_t)(q - s), &uid) || !uid || uid <= lastuid || uid >= r->uidnext)
      return 0;
    s = q + 1;
    q = s;
    while (q < e && *q != ' ') q++;
    if (q >= e || !imap_number64(s, (size_t)(q - s), &ms) || ms > MAILSTORE_MODSEQ_MAX) return 0;
    s = q + 1;
    q = s;
    while (q < e && *q != ' ') q++;
    if (q >= e || !imap_number64(s, (size_t)(q - s), &ws)) return 0;
    s = q + 1;
    if (e - s < 3 || (s[0] != 'n' && s[0] != 'c') || s[1] != ' ') return 0;
    if (memchr(s + 2, '/', (size_t)(e - s - 2)) || memchr(s + 2, 0, (size_t)(e - s - 2)))
      return 0;
    if (!rec_add(r, uid, ms, ws, s[0] == 'n', s + 2, (size_t)(e - s - 2), !!r->map)) return -1;
    lastuid = uid;
    s = e + 1;
  }
  return 1;
}

/* Dovecot's dovecot-uidlist (versions 1 and 3): its UIDVALIDITY, next UID and UIDs. 1 taken
 * over, 0 not usable. */
static int rec_dovecot(rec *r, char const *s, size_t len)
{
  char const *end = s + len, *nl = memchr(s, '\n', len), *p;
  uint32_t lastuid = 0;
  uint64_t v = 0, nn = 0;
  if (!nl) return 0;
  if (len > 2 && s[0] == '3' && s[1] == ' ') {
    p = s + 2;
    while (p < nl) {
      char const *q = p;
      while (q < nl && *q != ' ') q++;
      if (*p == 'V') imap_number64(p + 1, (size_t)(q - p - 1), &v);
      else if (*p == 'N') imap_number64(p + 1, (size_t)(q - p - 1), &nn);
      p = q < nl ? q + 1 : q;
    }
  } else if (len > 2 && s[0] == '1' && s[1] == ' ') {
    char const *q = s + 2;
    while (q < nl && *q != ' ') q++;
    if (!imap_number64(s + 2, (size_t)(q - s - 2), &v) || q >= nl) return 0;
    if (!imap_number64(q + 1, (size_t)(nl - q - 1), &nn)) return 0;
  } else
    return 0;
  if (!v || v > UINT32_MAX || !nn || nn > UINT32_MAX) return 0;
  r->uidvalidity = (uint32_t)v;
  r->uidnext = (uint32_t)nn;
  r->highestmodseq = 1;
  r->firstrecent = r->uidnext;
  s = nl + 1;
  while (s < end) {
    char const *e = memchr(s, '\n', (size_t)(end - s));
    char const *q, *name;
    uint32_t uid;
    if (!e) e = end;
    q = s;
    while (q < e && *q != ' ') q++;
    if (imap_number(s, (size_t)(q - s), &uid) && uid > lastuid && uid < r->uidnext && q < e) {
      /* v3: "uid [ext fields] :name"; v1: "uid name" */
      name = memchr(q, ':', (size_t)(e - q));
      if (name && name[-1] == ' ') name++;
      else {
        name = q + 1;
        while (name < e && *name == ' ') name++;
      }
      if (name < e && !memchr(name, '/', (size_t)(e - name))) {
        if (!rec_add(r, uid, 1, 0, 0, name, (size_t)(e - name), 0)) return -1;
        r->msg[r->n - 1].flags |= MS_GONE; /* where it is: found when listing */
        lastuid = uid;
      }
    }
    s = e + 1;
  }
  return 1;
}

/* Courier's courierimapuiddb: "1 UIDVALIDITY NEXTUID" then "NAME UID" lines. */
static int rec_courier(rec *r, char const *s, size_t len)
{
  char const *end = s + len, *nl = memchr(s, '\n', len), *q;
  uint64_t v, nn;
  uint32_t lastuid = 0;
  if (!nl || len < 2 || s[0] != '1' || s[1] != ' ') return 0;
  q = s + 2;
  while (q < nl && *q != ' ') q++;
  if (!imap_number64(s + 2, (size_t)(q - s - 2), &v) || q >= nl) return 0;
  if (!imap_number64(q + 1, (size_t)(nl - q - 1), &nn)) return 0;
  if (!v || v > UINT32_MAX || !nn || nn > UINT32_MAX) return 0;
  r->uidvalidity = (uint32_t)v;
  r->uidnext = (uint32_t)nn;
  r->highestmodseq = 1;
  r->firstrecent = r->uidnext;
  s = nl + 1;
  while (s < end) {
    char const *e = memchr(s, '\n', (size_t)(end - s));
    char const *sp;
    uint32_t uid;
    if (!e) e = end;
    sp = e;
    while (sp > s && sp[-1] != ' ') sp--;
    if (sp > s + 1 && imap_number(sp, (size_t)(e - sp), &uid) && uid > lastuid &&
        uid < r->uidnext && !memchr(s, '/', (size_t)(sp - 1 - s))) {
      if (!rec_add(r, uid, 1, 0, 0, s, (size_t)(sp - 1 - s), 0)) return -1;
      r->msg[r->n - 1].flags |= MS_GONE;
      lastuid = uid;
    }
    s = e + 1;
  }
  return 1;
}

/* A UIDVALIDITY for a folder whose UIDs start afresh: the time, but always above the last
 * one given out in this Maildir (any folder), which MAILDIR/pillarbox-uidvalidity remembers;
 * so a folder deleted and made again, or a lost record, never brings an old UIDVALIDITY back
 * with other UIDs. The file is one fixed-width line, rewritten in place under its lock. */
static uint32_t fresh_uidvalidity(char const *dir, uint32_t old)
{
  char buf[16];
  uint32_t t = (uint32_t)time(0), last = 0;
  struct flock fl;
  int fd = open("pillarbox-uidvalidity", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  (void)dir;
  if (fd >= 0) {
    ssize_t r;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(fd, F_SETLKW, &fl) < 0 && errno == EINTR) {}
    r = pread(fd, buf, 10, 0);
    if (r == 10 && !imap_number(buf, 10, &last)) last = 0;
  }
  if (last > old) old = last;
  if (t <= old) t = old + 1;
  if (!t) t = 1;
  if (fd >= 0) {
    size_t n = uint_fmt(0, t), k;
    for (k = 0; k < 10 - n; k++) buf[k] = '0';
    uint_fmt(buf + k, t);
    buf[10] = '\n';
    if (pwrite(fd, buf, 11, 0) == 11) fsync(fd);
    fd_close(fd);
  }
  return t;
}

/* Maps a whole file read-only (nothing mapped for an empty one). 1 ok, 0 with errno. */
static int map_file(char const *path, char **map, size_t *len)
{
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  if (fstat(fd, &st) < 0) goto fail;
  *len = (size_t)st.st_size;
  *map = 0;
  if (*len) {
    void *m = mmap(0, *len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) goto fail;
    *map = m;
  }
  fd_close(fd);
  return 1;
fail:
  {
    int e = errno;
    fd_close(fd);
    errno = e;
  }
  return 0;
}

/* ---- the journal ----
 *
 * A STORE that changes few messages of a big folder does not rewrite the record: it appends
 * one line per changed message to FOLDER/pillarbox-uidlist.log,
 *     "<uid> <modseq> <file name in cur/>\n",
 * under the header "PBJ1 V<uidvalidity> J<n>\n", and fdatasyncs it before the client hears
 * of the change. The journal belongs to the record whose header says J<n>: every whole
 * rewrite of the record (which folds the journal in) takes the next n, so a journal left
 * behind by a crash after the rewrite no longer matches and is ignored (then replaced). The
 * journal never gives, takes or moves a UID: it only holds newer names and modseqs of UIDs
 * the record has. A line that does not end in '\n' or does not parse ends the journal (a
 * torn tail); the next writer cuts it off, under the lock, before it appends. */

/* Index of uid in r->msg (sorted by uid), or r->n. */
static size_t rec_find(rec const *r, uint32_t uid)
{
  size_t lo = 0, hi = r->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (r->msg[mid].uid == uid) return mid;
    if (r->msg[mid].uid < uid) lo = mid + 1;
    else hi = mid;
  }
  return r->n;
}

/* Applies the record's journal to r (r->jid set by rec_parse). 1 ok (r->jvalid: the octets
 * that parsed, 0 when there is no journal for this record), -1 error. */
static int rec_journal(char const *dir, rec *r)
{
  stralloc p = STRALLOC_ZERO;
  char *map = 0;
  size_t len = 0, off;
  char const *s, *nl;
  uint64_t v, j;
  int res = -1;
  r->jvalid = 0;
  if (!r->jid) return 1;
  if (!pathcat(&p, dir, JOURNAL, 0)) return -1;
  if (!map_file(p.s, &map, &len)) {
    stralloc_free(&p);
    return errno == ENOENT ? 1 : -1;
  }
  stralloc_free(&p);
  s = map;
  nl = len ? memchr(s, '\n', len) : 0;
  if (!nl || len < 5 || memcmp(s, "PBJ1 ", 5)) goto ok;
  {
    char const *q = s + 4;
    if (!field(&q, nl, 'V', &v) || !field(&q, nl, 'J', &j) || q != nl) goto ok;
  }
  if (v != r->uidvalidity || j != r->jid) goto ok; /* another record's: ignored */
  off = (size_t)(nl + 1 - s);
  r->jvalid = off;
  while (off < len) {
    char const *e = memchr(s + off, '\n', len - off), *q = s + off;
    uint64_t uid, ms;
    size_t i;
    if (!e) break; /* torn */
    if (!digits(&q, e, &uid) || q >= e || *q++ != ' ' || !digits(&q, e, &ms) || q >= e ||
        *q++ != ' ' || q >= e || !uid || uid > UINT32_MAX || ms > MAILSTORE_MODSEQ_MAX ||
        (size_t)(e - q) > NAME_LEN_MAX || memchr(q, '/', (size_t)(e - q)) ||
        memchr(q, 0, (size_t)(e - q)))
      break; /* torn or damaged: the journal ends here */
    i = rec_find(r, (uint32_t)uid);
    if (i < r->n && ms > r->msg[i].modseq) {
      mailstore_msg *m = &r->msg[i];
      uint32_t f;
      m->name = (uint32_t)r->names.len;
      if (!stralloc_catb(&r->names, q, (size_t)(e - q)) || !stralloc_0(&r->names)) goto done;
      mailstore_parse_info(r->names.s + m->name, &f, &m->keywords);
      m->flags = f;
      m->modseq = ms;
    }
    if (ms > r->highestmodseq) r->highestmodseq = ms;
    off = (size_t)(e + 1 - s);
    r->jvalid = off;
  }
ok:
  res = 1;
done:
  if (map) munmap(map, len);
  return res;
}

/* Reads the folder's record into r (migrating or starting afresh). 1 ok, -1 error.
 * *written is set to 0 when what r holds is not on disk yet. */
static int rec_load(char const *dir, rec *r, int *ondisk)
{
  stralloc p = STRALLOC_ZERO, f = STRALLOC_ZERO;
  char *map = 0;
  size_t maplen = 0;
  int x;
  *ondisk = 0;
  r->n = 0;
  r->names.len = 0;
  if (r->map) munmap(r->map, r->maplen);
  r->map = 0;
  r->maplen = 0;
  if (!pathcat(&p, dir, MAILSTORE_RECORD, 0)) return -1;
  if (map_file(p.s, &map, &maplen)) {
    /* mapped, not read: a big folder's record is megabytes (it is never truncated in place,
     * only replaced by rename under the lock we hold); its names stay there (NAME_MAPPED) */
    r->uidvalidity = 0;
    r->map = map;
    r->maplen = maplen;
    x = rec_parse(r, maplen ? map : "", maplen);
    if (x == 1 && maplen) {
      *ondisk = 1;
      (void)madvise(map, maplen, MADV_DONTNEED); /* read: out of our pages until needed */
      if (rec_journal(dir, r) < 0) goto err;
      goto ok;
    }
    r->map = 0;
    r->maplen = 0;
    if (maplen) munmap(map, maplen);
    if (x < 0) goto err;
    if (x == 1) {
      *ondisk = 1;
      goto ok;
    }
    /* malformed: a new UIDVALIDITY, never a guess */
    {
      uint32_t old = r->uidvalidity;
      r->n = 0;
      r->names.len = 0;
      r->uidvalidity = fresh_uidvalidity(dir, old);
    }
    r->uidnext = 1;
    r->highestmodseq = 1;
    r->firstrecent = 1;
    goto ok;
  }
  if (errno != ENOENT) goto err;
  if (pathcat(&p, dir, "dovecot-uidlist", 0) && openslurpclose(&f, p.s)) {
    x = rec_dovecot(r, f.s, f.len);
    if (x < 0) goto err;
    if (x == 1) goto ok;
    r->n = 0;
    r->names.len = 0;
  }
  f.len = 0;
  if (pathcat(&p, dir, "courierimapuiddb", 0) && openslurpclose(&f, p.s)) {
    x = rec_courier(r, f.s, f.len);
    if (x < 0) goto err;
    if (x == 1) goto ok;
    r->n = 0;
    r->names.len = 0;
  }
  r->uidvalidity = fresh_uidvalidity(dir, 0);
  r->uidnext = 1;
  r->highestmodseq = 1;
  r->firstrecent = 1;
ok:
  stralloc_free(&p);
  stralloc_free(&f);
  return 1;
err:
  stralloc_free(&p);
  stralloc_free(&f);
  return -1;
}

static int rec_write(char const *dir, mailstore_msg const *msg, size_t n,
                     stralloc const *names, char const *map, uint32_t v, uint32_t nn,
                     uint64_t m, uint32_t rr,
                     mailstore_gone const *gone, size_t ngone, uint64_t gonefloor,
                     struct timespec const *st, uint64_t jid)
{
  stralloc out = STRALLOC_ZERO, p = STRALLOC_ZERO, t = STRALLOC_ZERO;
  char fmt[UINT64_FMT];
  size_t i;
  int fd, r = -1;
  if (!stralloc_cats(&out, "PB1 V") || !stralloc_catb(&out, fmt, uint_fmt(fmt, v)) ||
      !stralloc_cats(&out, " N") || !stralloc_catb(&out, fmt, uint_fmt(fmt, nn)) ||
      !stralloc_cats(&out, " M") || !stralloc_catb(&out, fmt, uint64_fmt(fmt, m)) ||
      !stralloc_cats(&out, " R") || !stralloc_catb(&out, fmt, uint_fmt(fmt, rr)) ||
      !stralloc_cats(&out, " E") || !stralloc_catb(&out, fmt, uint64_fmt(fmt, gonefloor)))
    goto done;
  if (st) {
    int k;
    for (k = 0; k < 2; k++)
      if (!stralloc_cats(&out, k ? "," : " S") ||
          !stralloc_catb(&out, fmt, uint64_fmt(fmt, (uint64_t)st[k].tv_sec)) ||
          !stralloc_catb(&out, ".", 1) ||
          !stralloc_catb(&out, fmt, uint64_fmt(fmt, (uint64_t)st[k].tv_nsec)))
        goto done;
  }
  /* the journal of this record (to come) is the next number: any journal on disk is an
   * older record's, folded in here */
  if (!stralloc_cats(&out, " J") || !stralloc_catb(&out, fmt, uint64_fmt(fmt, jid)) ||
      !stralloc_catb(&out, "\n", 1))
    goto done;
  for (i = 0; i < ngone; i++)
    if (!stralloc_catb(&out, "x ", 2) ||
        !stralloc_catb(&out, fmt, uint_fmt(fmt, gone[i].uid)) || !stralloc_catb(&out, " ", 1) ||
        !stralloc_catb(&out, fmt, uint64_fmt(fmt, gone[i].modseq)) ||
        !stralloc_catb(&out, "\n", 1))
      goto done;
  for (i = 0; i < n; i++) {
    mailstore_msg const *x = &msg[i];
    if (x->flags & MS_GONE) continue;
    if (!stralloc_catb(&out, fmt, uint_fmt(fmt, x->uid)) || !stralloc_catb(&out, " ", 1) ||
        !stralloc_catb(&out, fmt, uint64_fmt(fmt, x->modseq)) ||
        !stralloc_catb(&out, " ", 1) || !stralloc_catb(&out, fmt, uint64_fmt(fmt, x->wsize)) ||
        !stralloc_catb(&out, (x->flags & MS_NEW) ? " n " : " c ", 3) ||
        !stralloc_cats(&out, nameat(names, map, x->name)) || !stralloc_catb(&out, "\n", 1))
      goto done;
  }
  if (!pathcat(&p, dir, MAILSTORE_RECORD, 0) || !pathcat(&t, dir, RECORD_TMP, 0)) goto done;
  fd = open(t.s, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) goto done;
  if (allwrite(fd, out.s, out.len) < out.len || fsync(fd) < 0) {
    int e = errno;
    fd_close(fd);
    unlink(t.s);
    errno = e;
    goto done;
  }
  fd_close(fd);
  if (rename(t.s, p.s) < 0) goto done;
  if (fsync_dir(dir) < 0) goto done;
  if (pathcat(&t, dir, JOURNAL, 0)) unlink(t.s); /* stale now; ignored if it stays */
  r = 1;
done:
  stralloc_free(&out);
  stralloc_free(&p);
  stralloc_free(&t);
  return r;
}

/* ---- listing ---- */

typedef struct ent_s ent;
struct ent_s {
  char const *name;
  int isnew;
  int used;
};

static int entcmp(void const *a, void const *b)
{
  return uniqcmp(((ent const *)a)->name, ((ent const *)b)->name);
}

static ent *find_ent(ent *e, size_t n, char const *name)
{
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = uniqcmp(e[mid].name, name);
    if (!c) return &e[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

static int ts_eq(struct timespec const *a, struct timespec const *b)
{
  return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* The stamps that tell whether anything may have changed. */
static int stamps(mailstore const *ms, struct timespec *nw, struct timespec *cu,
                  struct timespec *rc, ino_t *ino, off_t *size)
{
  stralloc p = STRALLOC_ZERO;
  struct stat st;
  int r = -1;
  if (!pathcat(&p, ms->dir, "new", 0) || stat(p.s, &st) < 0) goto done;
  *nw = st.st_mtim;
  if (!pathcat(&p, ms->dir, "cur", 0) || stat(p.s, &st) < 0) goto done;
  *cu = st.st_mtim;
  if (!pathcat(&p, ms->dir, MAILSTORE_RECORD, 0)) goto done;
  if (stat(p.s, &st) < 0) {
    if (errno != ENOENT) goto done;
    memset(rc, 0, sizeof *rc);
    *ino = 0;
    *size = 0;
  } else {
    *rc = st.st_mtim;
    *ino = st.st_ino;
    *size = st.st_size;
  }
  r = 1;
done:
  stralloc_free(&p);
  return r;
}

/* The synchronisation under the lock: brings the record up to date with new/ and cur/ and
 * merges it into ms. */
static int sync_locked(mailstore *ms, size_t *news)
{
  rec r = {0, 0, 0, 0, 0, 0, 0, STRALLOC_ZERO, 0, 0, 0, 0, 0, 0, 0, {0, 0}, {0, 0}, 0, 0};
  stralloc lst = STRALLOC_ZERO, p = STRALLOC_ZERO, q = STRALLOC_ZERO, nn = STRALLOC_ZERO;
  ent *e = 0;
  size_t ne = 0, i, j, split = 0, added = 0;
  int ondisk, changed = 0, nnew, ncur, res = -1, listed, renamed = 0;
  struct timespec t_new, t_cur, t_rec, listed_at, st[2];
  ino_t ino;
  off_t size;
  mailstore_msg *out = 0;
  size_t on = 0;

  if (clock_gettime(CLOCK_REALTIME, &listed_at) < 0) return -1;
  if (stamps(ms, &t_new, &t_cur, &t_rec, &ino, &size) < 0) return -1;
  if (kw_load(ms) < 0) return -1;
  if (rec_load(ms->dir, &r, &ondisk) < 0) goto done;
  if (!ondisk) changed = 1;
  /* A record that says which stamps of new/ and cur/ it reflects, when they are still those,
   * is the listing: nothing was added, removed or renamed since (any of that moves a stamp,
   * and the stamps were written only when they were a second older than the listing, so no
   * change can hide in the same clock tick). Big folders open without a readdir. */
  listed = !(ondisk && r.stamped && ts_eq(&r.s_new, &t_new) && ts_eq(&r.s_cur, &t_cur));
  if (listed) {
    nnew = maildir_list(ms->dir, "new", &lst);
    if (nnew < 0) goto done;
    split = lst.len;
    ncur = maildir_list(ms->dir, "cur", &lst);
    if (ncur < 0) goto done;
    ne = (size_t)nnew + (size_t)ncur;
  }
  e = malloc((ne ? ne : 1) * sizeof *e);
  if (!e) goto done;
  for (i = 0, j = 0; i < lst.len; i += strlen(lst.s + i) + 1, j++) {
    e[j].name = lst.s + i;
    e[j].isnew = i < split;
    e[j].used = 0;
  }
  qsort(e, ne, sizeof *e, &entcmp);
  /* the record's messages: still there? moved? flags changed? */
  for (i = 0; listed && i < r.n; i++) {
    mailstore_msg *m = &r.msg[i];
    char const *nm = nameat(&r.names, r.map, m->name);
    ent *x = find_ent(e, ne, nm);
    if (!x || x->used) {
      if (!(m->flags & MS_GONE)) {
        changed = 1;
        if (!rec_gone(&r, m->uid, ++r.highestmodseq)) goto done;
      }
      m->flags |= MS_GONE;
      continue;
    }
    x->used = 1;
    if (m->flags & MS_GONE) changed = 1; /* migrated entry found */
    m->flags &= ~MS_GONE;
    if (strcmp(nm, x->name) || !(m->flags & MS_NEW) != !x->isnew) {
      m->name = (uint32_t)r.names.len;
      if (!stralloc_cats(&r.names, x->name) || !stralloc_0(&r.names)) goto done;
      {
        uint32_t f;
        mailstore_parse_info(x->name, &f, &m->keywords);
        m->flags = f;
      }
      if (x->isnew) m->flags |= MS_NEW;
      m->modseq = ++r.highestmodseq;
      changed = 1;
    }
  }
  /* files without a UID get one, in delivery order (the names start with the time) */
  for (i = 0; i < ne; i++) {
    if (e[i].used) continue;
    if (r.uidnext == UINT32_MAX) {
      errno = EOVERFLOW;
      goto done;
    }
    if (!rec_add(&r, r.uidnext++, ++r.highestmodseq, 0, e[i].isnew, e[i].name,
                 strlen(e[i].name), 0))
      goto done;
    changed = 1;
  }
  /* drop the gone ones from the record */
  for (i = 0, j = 0; i < r.n; i++)
    if (!(r.msg[i].flags & MS_GONE)) r.msg[j++] = r.msg[i];
  r.n = j;
  /* a read-write session moves new/ to cur/ */
  if (ms->rw) {
    for (i = 0; i < r.n; i++) {
      mailstore_msg *m = &r.msg[i];
      char const *nm;
      if (!(m->flags & MS_NEW)) continue;
      renamed = 1;
      nm = nameat(&r.names, r.map, m->name);
      if (!pathcat(&p, ms->dir, "new", nm)) goto done;
      if (!rename_info(&nn, nm, m->flags & MS_SYSFLAGS, m->keywords)) goto done;
      if (!pathcat(&q, ms->dir, "cur", nn.s)) goto done;
      if (rename(p.s, q.s) < 0) continue; /* gone meanwhile: the next sync sees it */
      m->name = (uint32_t)r.names.len;
      if (!stralloc_catb(&r.names, nn.s, nn.len)) goto done;
      m->flags &= ~MS_NEW;
      changed = 1;
    }
  }
  /* \Recent: claimed by the first read-write session */
  {
    uint32_t fr = r.firstrecent;
    if (ms->rw && r.firstrecent != r.uidnext) {
      r.firstrecent = r.uidnext;
      changed = 1;
    }
    /* the stamps go into the record when it now holds exactly what new/ and cur/ held at
     * them: listed (or already stamped so), not renamed by us since, and steady */
    int stamp = !renamed && t_new.tv_sec + 1 < listed_at.tv_sec &&
                t_cur.tv_sec + 1 < listed_at.tv_sec;
    if (stamp && !changed && !(r.stamped && ts_eq(&r.s_new, &t_new) && ts_eq(&r.s_cur, &t_cur)))
      changed = 1; /* once: so that the next session need not list */
    st[0] = t_new;
    st[1] = t_cur;
    if (changed) {
      /* sort by uid (rec_add appends in increasing order already: r.msg is sorted) */
      if (rec_write(ms->dir, r.msg, r.n, &r.names, r.map, r.uidvalidity, r.uidnext,
                    r.highestmodseq, r.firstrecent, r.gone, r.ngone, r.gonefloor,
                    stamp ? st : 0, r.jid + 1) < 0)
        goto done;
      r.jid++;
      r.jvalid = 0;
      /* only the record's stamp is taken again (we hold the lock: nobody else wrote it);
       * new/ and cur/ keep the stamps from before the listing, so a delivery that came
       * meanwhile is looked for next time */
      {
        struct timespec a, b;
        if (stamps(ms, &a, &b, &t_rec, &ino, &size) < 0) goto done;
      }
    }
    /* merge r into ms */
    if (ms->uidvalidity && ms->uidvalidity != r.uidvalidity) {
      /* the folder was recreated under us: everything we had is gone */
      for (i = 0; i < ms->n; i++) ms->msg[i].flags |= MS_GONE;
    }
    if (!ms->n) {
      /* nothing to merge (the folder's first sync in this session): r's tables become ms's,
       * trimmed to size, instead of a copy of every message and name */
      mailstore_msg *x = realloc(r.msg, (r.n + 1) * sizeof *x);
      if (x) r.msg = x;
      for (i = 0; i < r.n; i++)
        if (r.msg[i].uid >= fr) r.msg[i].flags |= MS_RECENT; /* read-only: counted */
      added = r.n;
      if (r.names.len + 1 < r.names.a) {
        char *y = realloc(r.names.s, r.names.len + 1);
        if (y) {
          r.names.s = y;
          r.names.a = r.names.len + 1;
        }
      }
      free(ms->msg);
      ms->msg = r.msg;
      ms->n = ms->a = r.n;
      r.msg = 0;
      r.n = r.a = 0;
      stralloc_free(&ms->names);
      ms->names = r.names;
      r.names = stralloc_zero;
      if (ms->map) munmap(ms->map, ms->maplen);
      ms->map = r.map;
      ms->maplen = r.maplen;
      r.map = 0;
      r.maplen = 0;
      goto merged;
    }
    out = malloc((ms->n + r.n + 1) * sizeof *out);
    if (!out) goto done;
    {
      stralloc names = STRALLOC_ZERO;
      size_t a = 0, b = 0;
      int same = !ms->uidvalidity || ms->uidvalidity == r.uidvalidity;
      while (a < ms->n || b < r.n) {
        mailstore_msg x;
        char const *nm;
        int fromr = 1;
        if (b >= r.n || (a < ms->n && (!same || ms->msg[a].uid < r.msg[b].uid))) {
          fromr = 0;
          x = ms->msg[a];
          nm = nameat(&ms->names, ms->map, x.name);
          x.flags |= MS_GONE;
          a++;
        } else if (a >= ms->n || ms->msg[a].uid > r.msg[b].uid) {
          x = r.msg[b];
          nm = nameat(&r.names, r.map, x.name);
          if (x.uid >= fr) x.flags |= MS_RECENT; /* read-only: counted, not claimed */
          added++;
          b++;
        } else {
          mailstore_msg *o = &ms->msg[a];
          x = r.msg[b];
          nm = nameat(&r.names, r.map, x.name);
          x.flags |= o->flags & (MS_RECENT | MS_REPORTED | MS_CHANGED | MS_GONE);
          if ((o->flags & MS_SYSFLAGS) != (x.flags & MS_SYSFLAGS) || o->keywords != x.keywords)
            x.flags |= MS_CHANGED;
          if (!x.wsize) x.wsize = o->wsize;
          a++;
          b++;
        }
        /* r's mapped names stay where they are (r's mapping becomes ours below); the others
         * go into the new arena */
        if (!fromr || !(x.name & NAME_MAPPED)) {
          x.name = (uint32_t)names.len;
          if (!stralloc_cats(&names, nm) || !stralloc_0(&names)) {
            stralloc_free(&names);
            goto done;
          }
        }
        out[on++] = x;
      }
      stralloc_free(&ms->names);
      ms->names = names;
      if (ms->map) munmap(ms->map, ms->maplen);
      ms->map = r.map;
      ms->maplen = r.maplen;
      r.map = 0;
      r.maplen = 0;
    }
    free(ms->msg);
    ms->msg = out;
    ms->n = ms->a = on;
    out = 0;
  }
merged:
  free(ms->gone);
  ms->gone = r.gone;
  ms->ngone = r.ngone;
  ms->gonefloor = r.gonefloor;
  r.gone = 0;
  r.ngone = r.agone = 0;
  ms->uidvalidity = r.uidvalidity;
  ms->uidnext = r.uidnext;
  ms->highestmodseq = r.highestmodseq;
  ms->firstrecent = r.firstrecent;
  ms->listed_at = listed_at;
  ms->new_mtime = t_new;
  ms->cur_mtime = t_cur;
  ms->rec_mtime = t_rec;
  ms->rec_ino = ino;
  ms->rec_size = size;
  ms->jid = r.jid;
  ms->jlen = r.jvalid;
  if (news) *news = added;
  res = 1;
done:
  {
    int er = errno;
    free(out);
    free(e);
    rec_free(&r);
    stralloc_free(&lst);
    stralloc_free(&p);
    stralloc_free(&q);
    stralloc_free(&nn);
    errno = er;
  }
  return res;
}

int mailstore_sync(mailstore *ms, size_t *news)
{
  struct timespec nw, cu, rc;
  ino_t ino;
  off_t size;
  int lk, r;
  if (news) *news = 0;
  if (ms->uidvalidity) {
    if (stamps(ms, &nw, &cu, &rc, &ino, &size) < 0) return -1;
    /* Unchanged stamps are trusted only when the directories had not been touched for a
     * second when they were listed: file system clocks are coarse (a tick, or a second over
     * NFS), so a change in the same tick as the listing would leave the same stamp. */
    if (ts_eq(&nw, &ms->new_mtime) && ts_eq(&cu, &ms->cur_mtime) && ts_eq(&rc, &ms->rec_mtime) &&
        ino == ms->rec_ino && size == ms->rec_size && nw.tv_sec + 1 < ms->listed_at.tv_sec &&
        cu.tv_sec + 1 < ms->listed_at.tv_sec)
      return kw_load(ms);
  }
  lk = lock_folder(ms->dir);
  if (lk < 0) return -1;
  r = sync_locked(ms, news);
  {
    int e = errno;
    unlock_folder(lk);
    /* a full sync of a big folder frees as much as it keeps (the record read, the listing,
     * the old table): give the free pages back, a session's memory is what it holds */
    if (ms->n > 1000) malloc_trim(0);
    errno = e;
  }
  return r;
}

int mailstore_open(mailstore *ms, char const *dir, int rw)
{
  struct stat st;
  size_t l = strlen(dir);
  if (l > MAILSTORE_NAME_MAX + 1) {
    errno = ENAMETOOLONG;
    return -1;
  }
  mailstore_close(ms);
  memcpy(ms->dir, dir, l + 1);
  ms->rw = rw;
  if (lstat(dir, &st) < 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return mailstore_sync(ms, 0);
}

void mailstore_close(mailstore *ms)
{
  if (ms->map) munmap(ms->map, ms->maplen);
  ms->map = 0;
  ms->maplen = 0;
  free(ms->gone);
  ms->gone = 0;
  ms->ngone = 0;
  ms->gonefloor = 0;
  free(ms->msg);
  ms->msg = 0;
  ms->n = ms->a = 0;
  stralloc_free(&ms->names);
  kw_free(ms);
  ms->uidvalidity = ms->uidnext = ms->firstrecent = 0;
  ms->highestmodseq = 0;
  ms->kw_mtime = 0;
  memset(&ms->new_mtime, 0, sizeof ms->new_mtime);
  memset(&ms->cur_mtime, 0, sizeof ms->cur_mtime);
  memset(&ms->rec_mtime, 0, sizeof ms->rec_mtime);
  memset(&ms->listed_at, 0, sizeof ms->listed_at);
  ms->rec_ino = 0;
  ms->rec_size = 0;
  ms->jid = 0;
  ms->jlen = 0;
}

void mailstore_compact(mailstore *ms)
{
  size_t i, j = 0;
  for (i = 0; i < ms->n; i++)
    if (!(ms->msg[i].flags & MS_GONE)) ms->msg[j++] = ms->msg[i];
  ms->n = j;
}

char const *mailstore_name(mailstore const *ms, size_t i)
{
  return nameat(&ms->names, ms->map, ms->msg[i].name);
}

void mailstore_idle(mailstore *ms)
{
  if (ms->map) (void)madvise(ms->map, ms->maplen, MADV_DONTNEED);
}

int mailstore_path(mailstore const *ms, size_t i, stralloc *sa)
{
  return pathcat(sa, ms->dir, (ms->msg[i].flags & MS_NEW) ? "new" : "cur", mailstore_name(ms, i))
             ? 1
             : -1;
}

static int open_reg(char const *p)
{
  struct stat st;
  int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ELOOP) errno = ENOENT;
    return -1;
  }
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    fd_close(fd);
    errno = ENOENT;
    return -1;
  }
  return fd;
}

int mailstore_openmsg(mailstore *ms, size_t i)
{
  stralloc p = STRALLOC_ZERO;
  int fd = -1, tries;
  uint32_t uid = ms->msg[i].uid;
  for (tries = 0; tries < 3; tries++) {
    size_t k;
    if (mailstore_path(ms, i, &p) < 0) break;
    fd = open_reg(p.s);
    if (fd >= 0 || errno != ENOENT) break;
    /* moved (flags changed elsewhere) or gone: look again, under the lock */
    {
      int lk = lock_folder(ms->dir);
      int r;
      if (lk < 0) break;
      r = sync_locked(ms, 0);
      unlock_folder(lk);
      if (r < 0) break;
    }
    /* the sync may have appended: i still indexes the same uid (merge keeps order) */
    for (k = 0; k < ms->n && ms->msg[k].uid != uid; k++) {}
    if (k == ms->n || (ms->msg[k].flags & MS_GONE)) {
      errno = ENOENT;
      break;
    }
    i = k;
  }
  stralloc_free(&p);
  return fd;
}

/* Appends lines to the folder's journal (the lock held, ms just synced: ms->jlen is what of
 * it parsed), after the header when it has none for this record; a torn tail is cut off
 * first. Durable (fdatasync) before it returns 1; -1 on error. */
static int journal_append(mailstore *ms, stralloc const *lines)
{
  stralloc p = STRALLOC_ZERO, h = STRALLOC_ZERO;
  char fmt[UINT64_FMT];
  size_t done = 0;
  off_t at = (off_t)ms->jlen;
  int fd, r = -1, fresh = !ms->jlen;
  if (!pathcat(&p, ms->dir, JOURNAL, 0)) goto out;
  if (fresh && (!stralloc_cats(&h, "PBJ1 V") ||
                !stralloc_catb(&h, fmt, uint_fmt(fmt, ms->uidvalidity)) ||
                !stralloc_cats(&h, " J") || !stralloc_catb(&h, fmt, uint64_fmt(fmt, ms->jid)) ||
                !stralloc_catb(&h, "\n", 1)))
    goto out;
  if (!stralloc_catb(&h, lines->s, lines->len)) goto out;
  fd = open(p.s, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) goto out;
  if (ftruncate(fd, at) < 0) goto fail;
  while (done < h.len) {
    ssize_t w = pwrite(fd, h.s + done, h.len - done, at + (off_t)done);
    if (w < 0) {
      if (errno == EINTR) continue;
      goto fail;
    }
    done += (size_t)w;
  }
  if (fdatasync(fd) < 0) goto fail;
  fd_close(fd);
  if (fresh && fsync_dir(ms->dir) < 0) goto out;
  ms->jlen += h.len;
  r = 1;
  goto out;
fail:
  {
    int e = errno;
    fd_close(fd);
    errno = e;
  }
out:
  stralloc_free(&p);
  stralloc_free(&h);
  return r;
}

int mailstore_store(mailstore *ms, size_t const *idx, size_t n, uint32_t setf, uint32_t clrf,
                    uint32_t setk, uint32_t clrk, uint64_t unchangedsince, unsigned char *failed)
{
  stralloc nn = STRALLOC_ZERO, p = STRALLOC_ZERO, q = STRALLOC_ZERO, jl = STRALLOC_ZERO;
  char fmt[UINT64_FMT];
  int lk, res = -1, changed = 0, dfd[2] = {-1, -1}; /* new/, cur/: renames by name alone */
  size_t k;
  lk = lock_folder(ms->dir);
  if (lk < 0) return -1;
  if (sync_locked(ms, 0) < 0) goto done;
  for (k = 0; k < 2; k++) {
    if (!pathcat(&p, ms->dir, k ? "cur" : "new", 0)) goto done;
    dfd[k] = open(p.s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd[k] < 0) goto done;
  }
  for (k = 0; k < n; k++) {
    mailstore_msg *m = &ms->msg[idx[k]];
    uint32_t nf = ((m->flags & MS_SYSFLAGS & ~clrf) | (setf & MS_SYSFLAGS));
    uint32_t nk = (m->keywords & ~clrk) | setk;
    char const *nm;
    if (failed) failed[k] = 0;
    if (m->flags & MS_GONE) continue;
    if (unchangedsince && m->modseq > unchangedsince) {
      if (failed) failed[k] = 1;
      continue;
    }
    if (nf == (m->flags & MS_SYSFLAGS) && nk == m->keywords) continue;
    nm = nameat(&ms->names, ms->map, m->name);
    if (!rename_info(&nn, nm, nf, nk)) goto done;
    if (renameat(dfd[!(m->flags & MS_NEW)], nm, dfd[1], nn.s) < 0) {
      if (errno == ENOENT) continue; /* moved under us: the next sync tells */
      goto done;
    }
    m->name = (uint32_t)ms->names.len;
    if (!stralloc_catb(&ms->names, nn.s, nn.len)) goto done;
    m->flags = (m->flags & ~(MS_SYSFLAGS | MS_NEW)) | nf;
    m->keywords = nk;
    m->modseq = ++ms->highestmodseq;
    changed = 1;
    if (!stralloc_catb(&jl, fmt, uint_fmt(fmt, m->uid)) || !stralloc_catb(&jl, " ", 1) ||
        !stralloc_catb(&jl, fmt, uint64_fmt(fmt, m->modseq)) || !stralloc_catb(&jl, " ", 1) ||
        !stralloc_catb(&jl, nn.s, nn.len - 1) || !stralloc_catb(&jl, "\n", 1))
      goto done;
  }
  if (changed) {
    /* the renames are on disk before the change is recorded */
    if (fsync(dfd[1]) < 0 && errno != EINVAL && errno != EROFS) goto done;
    if (ms->jid && ms->jlen + jl.len <= JOURNAL_MIN + (size_t)ms->rec_size / 2) {
      if (journal_append(ms, &jl) < 0) goto done;
    } else {
      /* folded: the record written whole, with the next journal number; no stamps: our
       * renames changed cur/, the next session lists it */
      if (rec_write(ms->dir, ms->msg, ms->n, &ms->names, ms->map, ms->uidvalidity,
                    ms->uidnext, ms->highestmodseq, ms->firstrecent, ms->gone, ms->ngone,
                    ms->gonefloor, 0, ms->jid + 1) < 0)
        goto done;
      ms->jid++;
      ms->jlen = 0;
      {
        struct timespec a, b; /* our renames changed cur/: the next sync looks again */
        if (stamps(ms, &a, &b, &ms->rec_mtime, &ms->rec_ino, &ms->rec_size) < 0) goto done;
      }
    }
  }
  res = 1;
done:
  {
    int e = errno;
    unlock_folder(lk);
    if (dfd[0] >= 0) fd_close(dfd[0]);
    if (dfd[1] >= 0) fd_close(dfd[1]);
    stralloc_free(&nn);
    stralloc_free(&p);
    stralloc_free(&q);
    stralloc_free(&jl);
    errno = e;
  }
  return res;
}

int mailstore_expunge(mailstore *ms, size_t const *idx, size_t n)
{
  stralloc p = STRALLOC_ZERO;
  size_t k;
  int lk, r;
  lk = lock_folder(ms->dir);
  if (lk < 0) return -1;
  {
    uint64_t bytes = 0, count = 0;
    for (k = 0; k < n; k++) {
      uint64_t sz;
      if (mailstore_path(ms, idx[k], &p) < 0) break;
      sz = msg_size(p.s, mailstore_name(ms, idx[k]));
      if (unlink(p.s) == 0) {
        bytes += sz;
        count++;
      } else if (errno != ENOENT)
        break;
    }
    quota_add(-(int64_t)bytes, -(int64_t)count);
  }
  stralloc_free(&p);
  if (k < n) {
    int e = errno;
    unlock_folder(lk);
    errno = e;
    return -1;
  }
  r = sync_locked(ms, 0);
  {
    int e = errno;
    unlock_folder(lk);
    errno = e;
  }
  return r;
}

/* Finds the UID the record gave the file whose unique part is that of name. */
static int uid_of(mailstore const *ms, char const *name, uint32_t *uid)
{
  size_t i = ms->n;
  while (i--)
    if (!(ms->msg[i].flags & MS_GONE) && !uniqcmp(mailstore_name(ms, i), name)) {
      *uid = ms->msg[i].uid;
      return 1;
    }
  return 0;
}

/* Keyword bits of the destination for the names given. */
static uint32_t kwbits(mailstore *dst, char const *const *kws, unsigned int nkw)
{
  uint32_t b = 0;
  unsigned int i;
  for (i = 0; i < nkw; i++) {
    int k = mailstore_keyword(dst, kws[i], strlen(kws[i]), 1);
    if (k >= 0) b |= 1u << k;
  }
  return b;
}

int mailstore_add(char const *dir, char const *tmppath, uint32_t flags, char const *const *kws,
                  unsigned int nkw, time_t when, uint32_t *uid, uint32_t *uidvalidity)
{
  mailstore dst = MAILSTORE_ZERO;
  stralloc base = STRALLOC_ZERO, nn = STRALLOC_ZERO, q = STRALLOC_ZERO, cur = STRALLOC_ZERO;
  struct stat st;
  char const *slash;
  char fmt[UINT64_FMT];
  int res = -1, lk = -1;
  if (mailstore_open(&dst, dir, 0) < 0) goto done;
  if (stat(tmppath, &st) < 0) goto done;
  slash = strrchr(tmppath, '/');
  slash = slash ? slash + 1 : tmppath;
  if (!stralloc_cats(&base, slash) || !stralloc_cats(&base, ",S=") ||
      !stralloc_catb(&base, fmt, uint64_fmt(fmt, (uint64_t)st.st_size)) || !stralloc_0(&base))
    goto done;
  if (!rename_info(&nn, base.s, flags & MS_SYSFLAGS, kwbits(&dst, kws, nkw))) goto done;
  if (when) {
    struct timeval tv[2];
    tv[0].tv_sec = tv[1].tv_sec = when;
    tv[0].tv_usec = tv[1].tv_usec = 0;
    if (utimes(tmppath, tv) < 0) goto done;
  }
  if (!pathcat(&q, dir, "cur", nn.s) || !pathcat(&cur, dir, "cur", 0)) goto done;
  if (!quota_fits((uint64_t)st.st_size, 1)) {
    errno = EDQUOT;
    goto done;
  }
  if (link(tmppath, q.s) < 0) goto done;
  unlink(tmppath);
  quota_add((int64_t)st.st_size, 1);
  if (fsync_dir(cur.s) < 0) goto done;
  lk = lock_folder(dir);
  if (lk < 0) goto done;
  if (sync_locked(&dst, 0) < 0) goto done;
  if (!uid_of(&dst, nn.s, uid)) {
    errno = ENOENT; /* expunged at once by someone else */
    goto done;
  }
  *uidvalidity = dst.uidvalidity;
  res = 1;
done:
  {
    int e = errno;
    unlock_folder(lk);
    mailstore_close(&dst);
    stralloc_free(&base);
    stralloc_free(&nn);
    stralloc_free(&q);
    stralloc_free(&cur);
    errno = e;
  }
  return res;
}

int mailstore_copy(mailstore *ms, size_t const *idx, size_t n, char const *dir, int move,
                   uint32_t *uids, uint32_t *uidvalidity)
{
  mailstore dst = MAILSTORE_ZERO;
  stralloc names = STRALLOC_ZERO, nn = STRALLOC_ZERO, p = STRALLOC_ZERO, q = STRALLOC_ZERO,
           base = STRALLOC_ZERO;
  size_t k, *where = 0;
  int res = -1, lk = -1;
  if (mailstore_open(&dst, dir, 0) < 0) goto done;
  where = malloc((n ? n : 1) * sizeof *where);
  if (!where) goto done;
  for (k = 0; k < n; k++) {
    mailstore_msg *m = &ms->msg[idx[k]];
    char const *nm = mailstore_name(ms, idx[k]);
    uint32_t kw = 0;
    int c;
    /* keywords: by name, into the destination's letters */
    for (c = 0; c < MAILSTORE_KEYWORDS; c++)
      if ((m->keywords & (1u << c)) && ms->kw[c]) {
        int d = mailstore_keyword(&dst, ms->kw[c], strlen(ms->kw[c]), 1);
        if (d >= 0) kw |= 1u << d;
      }
    if (move) {
      if (!rename_info(&nn, nm, m->flags & MS_SYSFLAGS, kw)) goto done;
    } else {
      uint64_t sz;
      char fmt[UINT64_FMT];
      size_t nl = strlen(nm);
      base.len = 0;
      if (maildir_uniqname(&base) < 0) goto done;
      base.len--;
      if (maildir_namesize(nm, nl, &sz) &&
          (!stralloc_cats(&base, ",S=") || !stralloc_catb(&base, fmt, uint64_fmt(fmt, sz))))
        goto done;
      if (!stralloc_0(&base)) goto done;
      if (!rename_info(&nn, base.s, m->flags & MS_SYSFLAGS, kw)) goto done;
    }
    if (mailstore_path(ms, idx[k], &p) < 0 || !pathcat(&q, dir, "cur", nn.s)) goto done;
    if (!move) {
      uint64_t sz = msg_size(p.s, nm);
      if (!quota_fits(sz, 1)) {
        errno = EDQUOT;
        goto done;
      }
      if (link(p.s, q.s) < 0) {
        if (errno == ENOENT) {
          where[k] = (size_t)-1;
          continue;
        }
        goto done;
      }
      quota_add((int64_t)sz, 1);
    } else if (rename(p.s, q.s) < 0) {
      if (errno == ENOENT) {
        where[k] = (size_t)-1;
        continue;
      }
      goto done;
    }
    where[k] = names.len;
    if (!stralloc_catb(&names, nn.s, nn.len)) goto done;
  }
  if (!pathcat(&q, dir, "cur", 0) || fsync_dir(q.s) < 0) goto done;
  lk = lock_folder(dir);
  if (lk < 0) goto done;
  if (sync_locked(&dst, 0) < 0) goto done;
  for (k = 0; k < n; k++) {
    uids[k] = 0;
    if (where[k] != (size_t)-1) uid_of(&dst, names.s + where[k], &uids[k]);
  }
  *uidvalidity = dst.uidvalidity;
  unlock_folder(lk);
  lk = -1;
  if (move) {
    ms->cur_mtime.tv_sec = 0; /* force a look */
    if (mailstore_sync(ms, 0) < 0) goto done;
  }
  res = 1;
done:
  {
    int e = errno;
    unlock_folder(lk);
    mailstore_close(&dst);
    free(where);
    stralloc_free(&names);
    stralloc_free(&nn);
    stralloc_free(&p);
    stralloc_free(&q);
    stralloc_free(&base);
    errno = e;
  }
  return res;
}

int mailstore_status_get(char const *dir, mailstore_status *st)
{
  mailstore ms = MAILSTORE_ZERO;
  size_t i;
  memset(st, 0, sizeof *st);
  if (mailstore_open(&ms, dir, 0) < 0) {
    int e = errno;
    mailstore_close(&ms);
    errno = e;
    return -1;
  }
  for (i = 0; i < ms.n; i++) {
    mailstore_msg const *m = &ms.msg[i];
    uint64_t sz;
    char const *nm = mailstore_name(&ms, i);
    if (m->flags & MS_GONE) continue;
    st->messages++;
    if (!(m->flags & MS_SEEN)) st->unseen++;
    if (m->flags & MS_DELETED) st->deleted++;
    if (m->uid >= ms.firstrecent) st->recent++;
    if (maildir_namesize(nm, strlen(nm), &sz)) st->size += sz;
  }
  st->uidnext = ms.uidnext;
  st->uidvalidity = ms.uidvalidity;
  st->highestmodseq = ms.highestmodseq;
  mailstore_close(&ms);
  return 1;
}

static int u32cmp(void const *a, void const *b)
{
  uint32_t x = *(uint32_t const *)a, y = *(uint32_t const *)b;
  return x < y ? -1 : x > y;
}

long mailstore_vanished(mailstore const *ms, uint64_t modseq, uint32_t **out)
{
  size_t n = 0, i, a;
  uint32_t *v;
  if (modseq < ms->gonefloor) {
    /* not remembered that far back: every UID below UIDNEXT that is not here */
    size_t k = 0;
    uint32_t u;
    a = ms->uidnext;
    v = malloc((a ? a : 1) * sizeof *v);
    if (!v) return -1;
    for (u = 1; u < ms->uidnext; u++) {
      while (k < ms->n && ms->msg[k].uid < u) k++;
      if (k < ms->n && ms->msg[k].uid == u && !(ms->msg[k].flags & MS_GONE)) continue;
      v[n++] = u;
    }
    *out = v;
    return (long)n;
  }
  v = malloc((ms->ngone ? ms->ngone : 1) * sizeof *v);
  if (!v) return -1;
  for (i = 0; i < ms->ngone; i++)
    if (ms->gone[i].modseq > modseq) v[n++] = ms->gone[i].uid;
  qsort(v, n, sizeof *v, &u32cmp);
  *out = v;
  return (long)n;
}
