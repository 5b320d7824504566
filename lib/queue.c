/* queue: see queue.h and doc/queue.md */
#define _GNU_SOURCE /* renameat2(RENAME_NOREPLACE) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>
#include <dirent.h>
#include <linux/fs.h> /* FS_IOC_GETFLAGS, FS_TOPDIR_FL */

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "control.h"
#include "queue.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

static char const *const subdirs[] = {"tmp", "mess", "state", "hold", "ctl", "quarantine",
                                      "intake", 0};

int queue_path(stralloc *sa, char const *qdir, char const *rel)
{
  sa->len = 0;
  return stralloc_cats(sa, qdir) && stralloc_catb(sa, "/", 1) && stralloc_cats(sa, rel) &&
         stralloc_0(sa);
}

/* Marks the directory p as the top of a hierarchy (ext4's chattr +T): the file system then
 * spreads its sub-directories over block groups (Orlov) instead of keeping them near p.
 * Advice only. */
static void topdir(char const *p)
{
  int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC), flags;
  if (fd < 0) return;
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_TOPDIR_FL)) {
    flags |= FS_TOPDIR_FL;
    if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0) { /* not supported: the split still works */
    }
  }
  close(fd);
}

/* intake/N, in sa: where an injection numbered k writes its file */
static int intake_path(stralloc *sa, char const *qdir, unsigned int k)
{
  char num[UINT_FMT];
  num[uint_fmt(num, k % QUEUE_INTAKE_SPLIT)] = 0;
  sa->len = 0;
  return stralloc_cats(sa, qdir) && stralloc_cats(sa, "/intake/") && stralloc_cats(sa, num) &&
         stralloc_0(sa);
}

int queue_init(char const *qdir)
{
  stralloc p = STRALLOC_ZERO;
  unsigned int i;
  if (mkdir(qdir, 0750) < 0 && errno != EEXIST) return 0;
  for (i = 0; subdirs[i]; i++) {
    if (!queue_path(&p, qdir, subdirs[i])) goto err;
    if (mkdir(p.s, 0750) < 0 && errno != EEXIST) goto err;
  }
  if (!queue_path(&p, qdir, "intake")) goto err;
  topdir(p.s); /* before its sub-directories are made: they are spread over block groups */
  for (i = 0; i < QUEUE_INTAKE_SPLIT; i++) {
    if (!intake_path(&p, qdir, i)) goto err;
    if (mkdir(p.s, 0750) < 0 && errno != EEXIST) goto err;
  }
  if (!queue_path(&p, qdir, "trigger")) goto err;
  if (mkfifo(p.s, 0620) < 0 && errno != EEXIST) goto err;
  stralloc_free(&p);
  return 1;
err:
  {
    int e = errno;
    stralloc_free(&p);
    errno = e;
  }
  return 0;
}

int queue_id_ok(char const *s, size_t len)
{
  size_t i;
  if (!len || len >= QUEUE_ID_MAX || s[0] == '.') return 0;
  for (i = 0; i < len; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) return 0;
  return 1;
}

/* queue_hold_open: the descriptors kept, for the one queue directory of the first use */
static int hold, held_mess = -1, held_trigger = -1;
static stralloc held_qdir = STRALLOC_ZERO;

void queue_hold_open(void)
{
  hold = 1;
}

static groupsync *gsync; /* queue_groupsync's; 0: groupsync_fsync is a plain fsync */

void queue_groupsync(groupsync *g)
{
  gsync = g;
}

/* 1 if the held descriptors may serve qdir (the first queue a holder uses is its only one) */
static int held_for(char const *qdir)
{
  if (!hold) return 0;
  if (!held_qdir.len && (!stralloc_cats(&held_qdir, qdir) || !stralloc_0(&held_qdir))) {
    held_qdir.len = 0;
    return 0;
  }
  return !strcmp(held_qdir.s, qdir);
}

void queue_trigger(char const *qdir, char const *line)
{
  stralloc p = STRALLOC_ZERO;
  char buf[QUEUE_ID_MAX + 2];
  size_t n = strlen(line);
  int fd, held = held_for(qdir);
  if (n > QUEUE_ID_MAX) return;
  memcpy(buf, line, n);
  buf[n++] = '\n';
  fd = held ? held_trigger : -1;
  if (fd < 0) {
    if (!queue_path(&p, qdir, "trigger")) return;
    fd = open(p.s, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    stralloc_free(&p);
    if (fd < 0) return; /* ENXIO: nobody listens; queue-run rescans anyway */
  }
  /* EAGAIN: full; queue-run notices a full fifo and rescans. EPIPE (SIGPIPE is ignored by
   * every injector): the reader went away; a held fd is opened again next time. */
  if (write(fd, buf, n) < 0 && errno != EAGAIN) {
    close(fd);
    fd = -1;
  }
  if (held) held_trigger = fd;
  else if (fd >= 0) close(fd);
}

/* ---- envelope ---- */

static int addr_bytes_ok(char const *s, size_t len)
{
  size_t i;
  for (i = 0; i < len; i++) {
    unsigned char c = s[i];
    if (c < 32 || c == 127) return 0;
  }
  return 1;
}

int queue_env_parse(char const *s, size_t len, size_t addrmax, size_t rcptmax, queue_env *e)
{
  size_t i = 0, n = 0;
  char const *z;
  int toolong = 0;
  if (len < 1 || s[0] != 'F') return QX_ENVELOPE;
  z = memchr(s, 0, len);
  if (!z) return QX_ENVELOPE;
  e->sender = s + 1;
  e->senderlen = (size_t)(z - s) - 1;
  if (!addr_bytes_ok(e->sender, e->senderlen)) return QX_ENVELOPE;
  if (e->senderlen > addrmax) toolong = 1;
  i = (size_t)(z - s) + 1;
  e->rcptoff = i;
  for (;;) {
    char const *r;
    size_t rl;
    if (i >= len) return QX_ENVELOPE; /* no final NUL */
    if (s[i] == 0) {
      i++;
      break;
    }
    if (s[i] != 'T') return QX_ENVELOPE;
    z = memchr(s + i, 0, len - i);
    if (!z) return QX_ENVELOPE;
    r = s + i + 1;
    rl = (size_t)(z - r);
    if (!rl || !addr_bytes_ok(r, rl)) return QX_ENVELOPE;
    if (rl > addrmax) toolong = 1;
    n++;
    i = (size_t)(z - s) + 1;
  }
  if (i != len) return QX_ENVELOPE;
  if (!n) return QX_ENVELOPE;
  if (toolong) return QX_ADDRLONG;
  if (n > rcptmax || n > QUEUE_RCPT_HARDMAX) return QX_REFUSED;
  e->nrcpt = n;
  return QX_OK;
}

int queue_env_next(char const *s, size_t len, size_t *pos, char const **r, size_t *rlen)
{
  size_t i = *pos;
  char const *z;
  if (i >= len || s[i] != 'T') return 0;
  z = memchr(s + i, 0, len - i);
  if (!z) return 0;
  *r = s + i + 1;
  *rlen = (size_t)(z - *r);
  *pos = (size_t)(z - s) + 1;
  return 1;
}

/* ---- header ---- */

int queue_hdr_fmt(stralloc *sa, uint64_t arrival, uint64_t envlen, uint64_t msglen)
{
  char buf[QUEUE_HDRLINE_MAX];
  size_t n = 0;
  memcpy(buf, "PBQ1 ", 5);
  n = 5;
  n += uint64_fmt(buf + n, arrival);
  buf[n++] = ' ';
  n += uint64_fmt(buf + n, envlen);
  buf[n++] = ' ';
  n += uint64_fmt(buf + n, msglen);
  buf[n++] = '\n';
  return stralloc_catb(sa, buf, n);
}

static size_t scan_u64(char const *s, size_t len, uint64_t *u)
{
  size_t i = 0;
  uint64_t v = 0;
  while (i < len && s[i] >= '0' && s[i] <= '9') {
    if (i >= 19) return 0;
    v = v * 10 + (uint64_t)(s[i] - '0');
    i++;
  }
  if (!i || (i > 1 && s[0] == '0')) return 0;
  *u = v;
  return i;
}

int queue_hdr_parse(char const *s, size_t len, queue_hdr *h)
{
  size_t i, k;
  uint64_t *f[3];
  unsigned int j;
  if (len > QUEUE_HDRLINE_MAX) len = QUEUE_HDRLINE_MAX;
  if (len < 5 || memcmp(s, "PBQ1 ", 5)) return 0;
  f[0] = &h->arrival;
  f[1] = &h->envlen;
  f[2] = &h->msglen;
  i = 5;
  for (j = 0; j < 3; j++) {
    k = scan_u64(s + i, len - i, f[j]);
    if (!k) return 0;
    i += k;
    if (i >= len || s[i] != (j < 2 ? ' ' : '\n')) return 0;
    i++;
  }
  if (h->envlen > ((uint64_t)1 << 40) || h->msglen > ((uint64_t)1 << 50)) return 0;
  h->linelen = i;
  h->offset = i + h->envlen;
  return 1;
}

/* ---- injection ---- */

static unsigned int inject_counter = 0;

static int make_id(stralloc *id)
{
  struct timeval tv;
  char buf[QUEUE_ID_MAX];
  size_t n = 0;
  if (gettimeofday(&tv, 0) < 0) return 0;
  n += uint64_fmt(buf + n, (uint64_t)tv.tv_sec);
  buf[n++] = '.';
  {
    char u[UINT64_FMT];
    size_t k = uint64_fmt(u, (uint64_t)tv.tv_usec), z;
    for (z = k; z < 6; z++) buf[n++] = '0';
    memcpy(buf + n, u, k);
    n += k;
  }
  buf[n++] = '.';
  n += uint64_fmt(buf + n, (uint64_t)getpid());
  if (inject_counter) {
    buf[n++] = '.';
    n += uint64_fmt(buf + n, inject_counter);
  }
  id->len = 0;
  return stralloc_catb(id, buf, n) && stralloc_0(id);
}

static int errcode(int e)
{
  switch (e) {
  case ENOMEM: return QX_NOMEM;
  case ENOSPC:
  case EDQUOT:
  case EIO:
  case EFBIG: return QX_WRITE;
  default: return QX_QUEUEDIR;
  }
}

/* Root injecting (sendmail without the injection service): the new file still belongs to the
 * queue's owner, as every file in the queue does. Returns fd, or -1 (the file removed). */
static int own(int fd, char const *qdir, stralloc const *tmp)
{
  struct stat st;
  if (geteuid() || (stat(qdir, &st) == 0 && (!st.st_uid || fchown(fd, st.st_uid, st.st_gid) == 0)))
    return fd;
  {
    int e = errno;
    close(fd);
    unlink(tmp->s);
    errno = e;
  }
  return -1;
}

/* intake/N/ID in tmp (without its NUL): N from the process and its count of injections, so
 * concurrent injectors (the injection service's workers) write into different directories,
 * spread over block groups (queue_init). On ext4 without a journal, making an inode costs a
 * look at every inode freed in its group in the last minutes (recently_deleted()): every
 * delivered message frees one, and split this way each group sees only a share of them. */
static int tmp_name(stralloc *tmp, char const *qdir, stralloc const *id)
{
  if (!intake_path(tmp, qdir, (unsigned int)getpid() + inject_counter)) return 0;
  tmp->s[tmp->len - 1] = '/';
  return stralloc_catb(tmp, id->s, id->len);
}

/* Creates intake/N/ID (its name in tmp), making intake/ where it is missing. Where intake/N
 * may not be written (a queue from before intake/ whose directories another uid made: EACCES,
 * EPERM; a read-only mount of it: EROFS), tmp/ID as before intake/ was there; any other
 * failure is the injection's. The fd (not yet given to the queue's owner), or -1. */
static int tmp_open(char const *qdir, stralloc const *id, stralloc *tmp)
{
  int const flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd;
  if (!tmp_name(tmp, qdir, id)) return -1;
  fd = open(tmp->s, flags, 0640);
  if (fd < 0 && errno == ENOENT && queue_init(qdir)) fd = open(tmp->s, flags, 0640);
  if (fd >= 0 || (errno != EACCES && errno != EPERM && errno != EROFS)) return fd;
  tmp->len = 0;
  if (!stralloc_cats(tmp, qdir) || !stralloc_cats(tmp, "/tmp/") ||
      !stralloc_catb(tmp, id->s, id->len))
    return -1;
  return open(tmp->s, flags, 0640);
}

/* Creates intake/N/ID under a fresh id. Returns fd or -1. */
static int tmp_create(char const *qdir, stralloc *id, stralloc *tmp)
{
  unsigned int tries;
  for (tries = 0; tries < 16; tries++) {
    int fd;
    if (!make_id(id)) return -1;
    fd = tmp_open(qdir, id, tmp);
    if (fd >= 0) return own(fd, qdir, tmp);
    if (errno != EEXIST) return -1;
    inject_counter++;
  }
  errno = EEXIST;
  return -1;
}

/* Renames tmp into mess/ without replacing anything, fsyncs mess/. With fixed, the id may
 * not change (it was announced): a clash is an error. */
static int commit(char const *qdir, stralloc *id, stralloc *tmp, int fixed)
{
  stralloc dst = STRALLOC_ZERO;
  int dfd = -1, r = 0, tries, held = held_for(qdir);
  if (held && held_mess >= 0) dfd = held_mess;
  else {
    if (!stralloc_cats(&dst, qdir) || !stralloc_cats(&dst, "/mess")) goto end;
    if (!stralloc_0(&dst)) goto end;
    dfd = open(dst.s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    /* a fresh queue: another injector may have made tmp/ but not yet mess/ */
    if (dfd < 0 && errno == ENOENT && queue_init(qdir))
      dfd = open(dst.s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) goto end;
    if (held) held_mess = dfd;
  }
  for (tries = 0; tries < 16; tries++) {
    if (renameat2(AT_FDCWD, tmp->s, dfd, id->s, RENAME_NOREPLACE) == 0) break;
    if (errno == EINVAL || errno == ENOSYS) { /* a filesystem without NOREPLACE */
      if (linkat(AT_FDCWD, tmp->s, dfd, id->s, 0) == 0) {
        unlink(tmp->s);
        break;
      }
    }
    if (errno != EEXIST || fixed) goto end;
    inject_counter++;
    if (!make_id(id)) goto end;
  }
  if (tries >= 16) {
    errno = EEXIST;
    goto end;
  }
  if (groupsync_fsync(gsync, dfd) < 0) {
    int e = errno;
    /* not durable: take it back, so the caller's temporary failure is the truth */
    unlinkat(dfd, id->s, 0);
    errno = e;
    goto end;
  }
  r = 1;
end:
  {
    int e = errno;
    if (dfd >= 0 && dfd != held_mess) close(dfd);
    stralloc_free(&dst);
    errno = e;
  }
  return r;
}

int queue_tx_begin(char const *qdir, queue_tx *tx)
{
  (void)qdir;
  return make_id(&tx->id) ? QX_OK : QX_NOMEM;
}

/* intake/N/ID under the id already given: no other try */
static int tmp_create_fixed(char const *qdir, stralloc const *id, stralloc *tmp)
{
  int fd = tmp_open(qdir, id, tmp);
  return fd < 0 ? fd : own(fd, qdir, tmp);
}

static int inject(char const *qdir, char const *env, size_t envlen, char const *msg,
                  size_t msglen, int spillfd, uint64_t spilllen, stralloc *id, queue_tx *tx)
{
  stralloc tmp = STRALLOC_ZERO, buf = STRALLOC_ZERO;
  int fd = -1, code = QX_OK;
  struct timeval tv;
  uint64_t total = spillfd >= 0 ? spilllen : msglen;
  if (gettimeofday(&tv, 0) < 0) return QX_BUG;
  if (tx) { /* the id is given */
    if (!stralloc_copy(id, &tx->id)) return QX_NOMEM;
    fd = tmp_create_fixed(qdir, id, &tmp);
  } else {
    fd = tmp_create(qdir, id, &tmp);
    if (fd < 0 && errno == ENOENT && queue_init(qdir)) fd = tmp_create(qdir, id, &tmp);
  }
  if (fd < 0) {
    code = errcode(errno);
    goto end;
  }
  if (!stralloc_0(&tmp)) {
    code = QX_NOMEM;
    goto fail;
  }
  if (!queue_hdr_fmt(&buf, (uint64_t)tv.tv_sec, envlen, total) ||
      !stralloc_catb(&buf, env, envlen) || (spillfd < 0 && !stralloc_catb(&buf, msg, msglen))) {
    code = QX_NOMEM;
    goto fail;
  }
  if (allwrite(fd, buf.s, buf.len) != buf.len) {
    code = QX_WRITE;
    goto fail;
  }
  if (spillfd >= 0) {
    if (lseek(spillfd, 0, SEEK_SET) < 0) {
      code = QX_READ;
      goto fail;
    }
    if (fd_catn(spillfd, fd, (off_t)spilllen) != (off_t)spilllen) {
      code = QX_WRITE;
      goto fail;
    }
  }
  if (fsync(fd) < 0) {
    code = QX_WRITE;
    goto fail;
  }
  if (close(fd) < 0) {
    fd = -1;
    code = QX_WRITE;
    goto fail;
  }
  fd = -1;
  if (!commit(qdir, id, &tmp, !!tx)) {
    code = errcode(errno);
    goto fail;
  }
  inject_counter++;
  queue_trigger(qdir, id->s);
  goto end;
fail:
  if (fd >= 0) close(fd);
  unlink(tmp.s);
end:
  stralloc_free(&tmp);
  stralloc_free(&buf);
  return code;
}

int queue_inject_mem(char const *qdir, char const *env, size_t envlen, char const *msg,
                     size_t msglen, stralloc *id)
{
  return inject(qdir, env, envlen, msg, msglen, -1, 0, id, 0);
}

int queue_inject_fd(char const *qdir, char const *env, size_t envlen, int spillfd,
                    uint64_t msglen, stralloc *id)
{
  return inject(qdir, env, envlen, 0, 0, spillfd, msglen, id, 0);
}

int queue_tx_commit(char const *qdir, queue_tx *tx, char const *env, size_t envlen,
                    char const *msg, size_t msglen, int spillfd, uint64_t spilllen)
{
  stralloc id = STRALLOC_ZERO;
  int code = inject(qdir, env, envlen, msg, msglen, spillfd, spilllen, &id, tx);
  stralloc_free(&id);
  return code;
}

/* ---- taking a message in ---- */

static int in_limit(char const *name, unsigned long def, unsigned long *u, char const **bad)
{
  int r = control_readuint(name, def, u);
  if (r > 0) return 1;
  if (!r) errno = 0;
  *bad = name;
  return 0;
}

static char const *const limit_files[] = {"databytes", "queue-addrmax", "queue-rcptmax",
                                           "queue-timeout"};

int queue_limits_read(queue_limits *l, int keep, char const **bad)
{
  queue_caps *c = &l->caps;
  if (keep && l->loaded && control_stamp_same(&l->stamp)) return QX_OK;
  l->loaded = 0;
  /* the stamp first: a change made while the files are read shows at the next message */
  if (keep && !control_stamp_take(&l->stamp, limit_files, 4)) keep = 0;
  if (!in_limit("databytes", QUEUE_DATABYTES, &c->databytes, bad) ||
      !in_limit("queue-addrmax", QUEUE_ADDR_MAX, &c->addrmax, bad) ||
      !in_limit("queue-rcptmax", QUEUE_RCPT_MAX, &c->rcptmax, bad) ||
      !in_limit("queue-timeout", 86400, &c->timeout, bad))
    return QX_CONTROL;
  if (!c->databytes) c->databytes = QUEUE_DATABYTES;
  if (!c->addrmax || c->addrmax > 4096) c->addrmax = 4096;
  if (!c->rcptmax || c->rcptmax > QUEUE_RCPT_HARDMAX) c->rcptmax = QUEUE_RCPT_HARDMAX;
  if (!c->timeout || c->timeout > 86400 * 7) c->timeout = 86400;
  l->loaded = keep && l->stamp.valid;
  return QX_OK;
}

void queue_in_start(queue_in *q, char const *qdir, queue_limits const *l)
{
  q->qdir = qdir;
  q->msg.len = 0;
  q->spill = -1;
  q->len = 0;
  q->caps = l->caps;
}

int queue_in_init(queue_in *q, char const *qdir, char const **bad)
{
  queue_limits l;
  int r;
  memset(&l, 0, sizeof l);
  r = queue_limits_read(&l, 0, bad);
  if (!r) queue_in_start(q, qdir, &l);
  return r;
}

/* Moves what is in memory into a new anonymous file in tmp/. */
static int in_spill(queue_in *q)
{
  unsigned int tries;
  for (tries = 0; q->spill < 0 && tries < 16; tries++) {
    stralloc p = STRALLOC_ZERO;
    char num[UINT64_FMT];
    num[uint64_fmt(num, (uint64_t)getpid() * 100 + tries)] = 0;
    if (!stralloc_cats(&p, q->qdir) || !stralloc_cats(&p, "/tmp/spill.") ||
        !stralloc_cats(&p, num) || !stralloc_0(&p)) {
      stralloc_free(&p);
      return QX_NOMEM;
    }
    q->spill = open(p.s, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (q->spill < 0 && errno == ENOENT && queue_init(q->qdir))
      q->spill = open(p.s, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (q->spill >= 0) unlink(p.s);
    stralloc_free(&p);
    if (q->spill < 0 && errno != EEXIST) return QX_QUEUEDIR;
  }
  if (q->spill < 0) return QX_QUEUEDIR;
  if (allwrite(q->spill, q->msg.s, q->msg.len) != q->msg.len) return QX_WRITE;
  stralloc_free(&q->msg);
  return QX_OK;
}

int queue_in_add(queue_in *q, char const *s, size_t n)
{
  q->len += n;
  if (q->len > q->caps.databytes) return QX_REFUSED;
  if (q->spill < 0 && q->msg.len + n > QUEUE_SPILL) {
    int code = in_spill(q);
    if (code) return code;
  }
  if (q->spill >= 0) return allwrite(q->spill, s, n) == n ? QX_OK : QX_WRITE;
  return stralloc_catb(&q->msg, s, n) ? QX_OK : QX_NOMEM;
}

int queue_in_commit(queue_in *q, queue_tx *tx, char const *env, size_t envlen, stralloc *id)
{
  queue_env e;
  int code = queue_env_parse(env, envlen, q->caps.addrmax, q->caps.rcptmax, &e);
  if (code) return code;
  if (tx) return queue_tx_commit(q->qdir, tx, env, envlen, q->msg.s, q->msg.len, q->spill, q->len);
  if (q->spill >= 0) return queue_inject_fd(q->qdir, env, envlen, q->spill, q->len, id);
  return queue_inject_mem(q->qdir, env, envlen, q->msg.s, q->msg.len, id);
}

void queue_in_free(queue_in *q)
{
  stralloc_free(&q->msg);
  if (q->spill >= 0) fd_close(q->spill);
  q->spill = -1;
}

/* ---- reading ---- */

int queue_open(char const *qdir, char const *id, queue_hdr *h, stralloc *env, uint64_t *size)
{
  stralloc p = STRALLOC_ZERO;
  char line[QUEUE_HDRLINE_MAX];
  struct stat st;
  ssize_t r;
  int fd;
  queue_env e;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/mess/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p)) {
    stralloc_free(&p);
    return -1;
  }
  fd = open(p.s, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  stralloc_free(&p);
  if (fd < 0) return -1;
  if (fstat(fd, &st) < 0) goto err;
  r = pread(fd, line, sizeof line, 0);
  if (r < 0) goto err;
  if (!queue_hdr_parse(line, (size_t)r, h)) goto corrupt;
  if ((uint64_t)st.st_size != h->offset + h->msglen) goto corrupt;
  if (h->envlen > 64 * 1024 * 1024) goto corrupt;
  env->len = 0;
  if (!stralloc_ready(env, (size_t)h->envlen + 1)) goto err;
  r = pread(fd, env->s, (size_t)h->envlen, (off_t)h->linelen);
  if (r < 0) goto err;
  if ((uint64_t)r != h->envlen) goto corrupt;
  env->len = (size_t)h->envlen;
  if (queue_env_parse(env->s, env->len, (size_t)-1, QUEUE_RCPT_HARDMAX, &e) != QX_OK)
    goto corrupt;
  if (lseek(fd, (off_t)h->offset, SEEK_SET) < 0) goto err;
  if (size) *size = (uint64_t)st.st_size;
  return fd;
corrupt:
  errno = EPROTO;
err:
  {
    int e2 = errno;
    close(fd);
    errno = e2;
  }
  return -1;
}

/* ---- state ---- */

void queue_targets_free(queue_target *t, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++) {
    free(t[i].addr);
    free(t[i].diag);
    t[i].addr = t[i].diag = 0;
  }
}

static int state_ok(char c)
{
  return c == QUEUE_T_NEW || c == QUEUE_T_LOCAL || c == QUEUE_T_REMOTE || c == QUEUE_T_DONE ||
         c == QUEUE_T_FAILED || c == QUEUE_T_BOUNCED;
}

static char *dupb(char const *s, size_t n)
{
  char *p = malloc(n + 1);
  if (!p) return 0;
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

int queue_state_parse(char const *s, size_t len, queue_target **tp, size_t *np)
{
  uint64_t n, u;
  size_t i = 0, k, j;
  queue_target *t;
  if (len < 6 || memcmp(s, "PBS1 ", 5)) return 0;
  i = 5;
  k = scan_u64(s + i, len - i, &n);
  if (!k || n > QUEUE_RCPT_HARDMAX * 2ULL) return 0;
  i += k;
  if (i >= len || s[i++] != '\n') return 0;
  t = calloc(n ? n : 1, sizeof *t);
  if (!t) return -1;
  for (j = 0; j < n; j++) {
    char const *nl, *tab;
    if (i + 2 > len || !state_ok(s[i]) || s[i + 1] != ' ') goto bad;
    t[j].state = s[i];
    i += 2;
    k = scan_u64(s + i, len - i, &u);
    if (!k || u > 1000000 || i + k >= len || s[i + k] != ' ') goto bad;
    t[j].attempts = (unsigned int)u;
    i += k + 1;
    k = scan_u64(s + i, len - i, &u);
    if (!k || i + k >= len || s[i + k] != ' ') goto bad;
    t[j].next = u;
    i += k + 1;
    k = scan_u64(s + i, len - i, &u);
    if (!k || u >= QUEUE_RCPT_HARDMAX || i + k >= len || s[i + k] != ' ') goto bad;
    t[j].rcpt = (unsigned int)u;
    i += k + 1;
    nl = memchr(s + i, '\n', len - i);
    if (!nl) goto bad;
    tab = memchr(s + i, '\t', (size_t)(nl - (s + i)));
    if (!tab || tab == s + i) goto bad;
    t[j].addr = dupb(s + i, (size_t)(tab - (s + i)));
    t[j].diag = dupb(tab + 1, (size_t)(nl - tab - 1));
    if (!t[j].addr || !t[j].diag) {
      queue_targets_free(t, j + 1);
      free(t);
      return -1;
    }
    i = (size_t)(nl - s) + 1;
  }
  if (i != len) goto bad;
  *tp = t;
  *np = (size_t)n;
  return 1;
bad:
  queue_targets_free(t, j + 1 <= n ? j + 1 : n);
  free(t);
  return 0;
}

int queue_state_fmt(stralloc *sa, queue_target const *t, size_t n)
{
  char buf[UINT64_FMT * 4 + 8];
  size_t i, k;
  k = uint64_fmt(buf, n);
  if (!stralloc_catb(sa, "PBS1 ", 5) || !stralloc_catb(sa, buf, k) || !stralloc_catb(sa, "\n", 1))
    return 0;
  for (i = 0; i < n; i++) {
    k = 0;
    buf[k++] = t[i].state;
    buf[k++] = ' ';
    k += uint64_fmt(buf + k, t[i].attempts);
    buf[k++] = ' ';
    k += uint64_fmt(buf + k, t[i].next);
    buf[k++] = ' ';
    k += uint64_fmt(buf + k, t[i].rcpt);
    buf[k++] = ' ';
    if (!stralloc_catb(sa, buf, k) || !stralloc_cats(sa, t[i].addr) ||
        !stralloc_catb(sa, "\t", 1) || !stralloc_cats(sa, t[i].diag ? t[i].diag : "") ||
        !stralloc_catb(sa, "\n", 1))
      return 0;
  }
  return 1;
}

int queue_state_read(char const *qdir, char const *id, queue_target **t, size_t *n)
{
  stralloc p = STRALLOC_ZERO, sa = STRALLOC_ZERO;
  int r;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/state/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p)) {
    stralloc_free(&p);
    return -1;
  }
  if (!openslurpclose(&sa, p.s)) {
    int e = errno;
    stralloc_free(&p);
    stralloc_free(&sa);
    if (e == ENOENT) return 0;
    errno = e;
    return -1;
  }
  stralloc_free(&p);
  r = queue_state_parse(sa.s, sa.len, t, n);
  stralloc_free(&sa);
  if (r == 0) {
    errno = EPROTO;
    return -1;
  }
  if (r < 0) {
    errno = ENOMEM;
    return -1;
  }
  return 1;
}

int queue_state_write(char const *qdir, char const *id, queue_target const *t, size_t n,
                      int dosync)
{
  stralloc sa = STRALLOC_ZERO, p = STRALLOC_ZERO, q = STRALLOC_ZERO;
  int fd = -1, r = 0;
  if (!queue_state_fmt(&sa, t, n)) goto end;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/state/.") || !stralloc_cats(&p, id) ||
      !stralloc_cats(&p, ".tmp") || !stralloc_0(&p))
    goto end;
  if (!stralloc_cats(&q, qdir) || !stralloc_cats(&q, "/state/") || !stralloc_cats(&q, id) ||
      !stralloc_0(&q))
    goto end;
  fd = open(p.s, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) goto end;
  if (allwrite(fd, sa.s, sa.len) != sa.len) goto fail;
  if (dosync && fsync(fd) < 0) goto fail;
  if (close(fd) < 0) {
    fd = -1;
    goto fail;
  }
  fd = -1;
  if (rename(p.s, q.s) < 0) goto fail;
  r = 1;
  goto end;
fail:
  {
    int e = errno;
    if (fd >= 0) close(fd);
    fd = -1;
    unlink(p.s);
    errno = e;
  }
end:
  {
    int e = errno;
    if (fd >= 0) close(fd);
    stralloc_free(&sa);
    stralloc_free(&p);
    stralloc_free(&q);
    errno = e;
  }
  return r;
}

int queue_remove_mess(char const *qdir, char const *id)
{
  stralloc p = STRALLOC_ZERO;
  int r = 0;
  if (stralloc_cats(&p, qdir) && stralloc_cats(&p, "/mess/") && stralloc_cats(&p, id) &&
      stralloc_0(&p))
    r = unlink(p.s) == 0 || errno == ENOENT;
  stralloc_free(&p);
  return r;
}

int queue_remove(char const *qdir, char const *id)
{
  /* mess/ first: a crash in between leaves an orphan state file (removed at the next start),
   * never a message without its state (which would be delivered again) */
  stralloc p = STRALLOC_ZERO;
  int r = 0;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/mess/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p))
    goto end;
  if (unlink(p.s) < 0 && errno != ENOENT) goto end;
  p.len = 0;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/state/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p))
    goto end;
  if (unlink(p.s) < 0 && errno != ENOENT) goto end;
  r = 1;
end:
  stralloc_free(&p);
  return r;
}

int queue_target_setdiag(queue_target *t, char const *s, size_t len)
{
  char *d;
  size_t i;
  if (len > QUEUE_DIAG_MAX) len = QUEUE_DIAG_MAX;
  d = dupb(s, len);
  if (!d) return 0;
  for (i = 0; i < len; i++)
    if (d[i] == '\n' || d[i] == '\t' || d[i] == '\r' || d[i] == 0) d[i] = ' ';
  free(t->diag);
  t->diag = d;
  return 1;
}

size_t queue_targets_return(queue_target *t, size_t n, unsigned char const *skip,
                            char const *diag)
{
  size_t i, k = 0;
  for (i = 0; i < n; i++) {
    if (skip && skip[i]) continue;
    if (t[i].state != QUEUE_T_NEW && t[i].state != QUEUE_T_LOCAL && t[i].state != QUEUE_T_REMOTE)
      continue;
    if (!queue_target_setdiag(&t[i], diag, strlen(diag))) return (size_t)-1;
    t[i].state = QUEUE_T_FAILED;
    k++;
  }
  return k;
}

int queue_targets_requeue(queue_target **tp, size_t *np, char const *env, size_t envlen)
{
  queue_target *t = *tp, *nt;
  size_t n = *np, i, k = 0, pos, rl, nrcpt = 0, added = 0;
  char const *r;
  unsigned char *redo;
  pos = strlen(env) + 1; /* past "F" sender "\0" */
  while (queue_env_next(env, envlen, &pos, &r, &rl)) nrcpt++;
  redo = calloc(nrcpt + 1, 1);
  if (!redo) return -1;
  for (i = 0; i < n; i++)
    if (t[i].rcpt < nrcpt && t[i].state != QUEUE_T_DONE && t[i].state != QUEUE_T_BOUNCED)
      redo[t[i].rcpt] = 1;
  for (i = 0; i < nrcpt; i++) added += redo[i];
  nt = malloc((n + added + 1) * sizeof *nt);
  if (!nt) {
    free(redo);
    return -1;
  }
  /* the new N targets first (nothing is changed if that fails) */
  k = n;
  pos = strlen(env) + 1;
  for (i = 0; queue_env_next(env, envlen, &pos, &r, &rl); i++) {
    if (!redo[i]) continue;
    memset(&nt[k], 0, sizeof nt[k]);
    nt[k].state = QUEUE_T_NEW;
    nt[k].rcpt = (unsigned int)i;
    nt[k].addr = dupb(r, rl);
    nt[k].diag = dupb("", 0);
    k++;
    if (!nt[k - 1].addr || !nt[k - 1].diag) {
      queue_targets_free(nt + n, k - n);
      free(nt);
      free(redo);
      return -1;
    }
  }
  /* then keep what is finished and drop what will be resolved again */
  for (i = 0, k = 0; i < n; i++) {
    if (t[i].rcpt < nrcpt && redo[t[i].rcpt] && t[i].state != QUEUE_T_DONE &&
        t[i].state != QUEUE_T_BOUNCED) {
      queue_targets_free(&t[i], 1);
      continue;
    }
    nt[k++] = t[i];
  }
  memmove(nt + k, nt + n, added * sizeof *nt);
  k += added;
  free(redo);
  free(t);
  *tp = nt;
  *np = k;
  return (int)added;
}

int queue_quarantine(char const *qdir, char const *id)
{
  stralloc p = STRALLOC_ZERO, q = STRALLOC_ZERO;
  int ok = 0;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/mess/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p) || !stralloc_cats(&q, qdir) || !stralloc_cats(&q, "/quarantine/") ||
      !stralloc_cats(&q, id) || !stralloc_0(&q))
    goto end;
  if (rename(p.s, q.s) < 0 && errno != ENOENT) goto end;
  p.len = 0;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/state/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p))
    goto end;
  unlink(p.s);
  ok = 1;
end:
  stralloc_free(&p);
  stralloc_free(&q);
  return ok;
}

int queue_each(char const *qdir, char const *sub, void (*f)(char const *, char const *, void *),
               void *ctx)
{
  stralloc p = STRALLOC_ZERO;
  DIR *d;
  struct dirent *de;
  int ok = 1;
  if (!queue_path(&p, qdir, sub)) return 0;
  d = opendir(p.s);
  if (!d) {
    ok = errno == ENOENT;
    stralloc_free(&p);
    return ok;
  }
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) f(p.s, de->d_name, ctx);
  }
  if (errno) ok = 0;
  closedir(d);
  stralloc_free(&p);
  return ok;
}

int queue_targets_fromenv(queue_target **tp, size_t *np, char const *env, size_t envlen)
{
  size_t pos = strlen(env) + 1, rl, n = 0, k = 0;
  char const *r;
  queue_target *t;
  while (queue_env_next(env, envlen, &pos, &r, &rl)) n++;
  t = calloc(n + 1, sizeof *t);
  if (!t) return 0;
  pos = strlen(env) + 1;
  while (queue_env_next(env, envlen, &pos, &r, &rl)) {
    t[k].state = QUEUE_T_NEW;
    t[k].rcpt = (unsigned int)k;
    t[k].addr = dupb(r, rl);
    t[k].diag = dupb("", 0);
    k++;
    if (!t[k - 1].addr || !t[k - 1].diag) {
      queue_targets_free(t, k);
      free(t);
      return 0;
    }
  }
  *tp = t;
  *np = n;
  return 1;
}

typedef struct cleanctx_s cleanctx;
struct cleanctx_s {
  char const *qdir;
  uint64_t before;
  void (*removed)(char const *); /* the file's path in the queue: tmp/ID, intake/N/ID */
};

static void clean_tmp(char const *dir, char const *name, void *ctx)
{
  cleanctx *c = ctx;
  stralloc f = STRALLOC_ZERO;
  struct stat st;
  if (name[0] != '.' && stralloc_cats(&f, dir) && stralloc_catb(&f, "/", 1) &&
      stralloc_cats(&f, name) && stralloc_0(&f) && lstat(f.s, &st) == 0 &&
      (uint64_t)st.st_mtime < c->before && unlink(f.s) == 0 && c->removed)
    c->removed(f.s + strlen(c->qdir) + 1);
  stralloc_free(&f);
}

static void clean_state(char const *dir, char const *name, void *ctx)
{
  cleanctx *c = ctx;
  stralloc f = STRALLOC_ZERO;
  int orphan = 1;
  if (name[0] != '.') { /* not a temp file: an orphan if its message is gone */
    if (!stralloc_cats(&f, c->qdir) || !stralloc_cats(&f, "/mess/") ||
        !stralloc_cats(&f, name) || !stralloc_0(&f))
      goto end;
    orphan = access(f.s, F_OK) < 0 && errno == ENOENT;
    f.len = 0;
  }
  if (orphan && stralloc_cats(&f, dir) && stralloc_catb(&f, "/", 1) &&
      stralloc_cats(&f, name) && stralloc_0(&f))
    unlink(f.s);
end:
  stralloc_free(&f);
}

void queue_cleanup(char const *qdir, uint64_t before, void (*removed)(char const *))
{
  cleanctx c;
  c.qdir = qdir;
  c.before = before;
  c.removed = removed;
  queue_each(qdir, "tmp", &clean_tmp, &c);
  {
    stralloc p = STRALLOC_ZERO;
    unsigned int i;
    for (i = 0; i < QUEUE_INTAKE_SPLIT; i++)
      if (intake_path(&p, qdir, i)) queue_each(qdir, p.s + strlen(qdir) + 1, &clean_tmp, &c);
    stralloc_free(&p);
  }
  queue_each(qdir, "state", &clean_state, &c);
}

char const *queue_env_rcpt(char const *env, size_t envlen, unsigned int i)
{
  size_t pos = strlen(env) + 1, rl;
  char const *r = "";
  unsigned int k = 0;
  while (queue_env_next(env, envlen, &pos, &r, &rl))
    if (k++ == i) return r;
  return "";
}

int queue_held(char const *qdir, char const *id)
{
  stralloc p = STRALLOC_ZERO;
  struct stat st;
  int r = 0;
  if (stralloc_cats(&p, qdir) && stralloc_cats(&p, "/hold/") && stralloc_cats(&p, id) &&
      stralloc_0(&p))
    r = stat(p.s, &st) == 0;
  stralloc_free(&p);
  return r;
}

int queue_trigger_open(char const *qdir)
{
  stralloc p = STRALLOC_ZERO;
  int fd = -1;
  if (queue_path(&p, qdir, "trigger")) fd = open(p.s, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  stralloc_free(&p);
  return fd;
}

size_t queue_trigger_read(int fd, stralloc *line, void (*f)(char const *, size_t, void *),
                          void *ctx)
{
  char buf[8192];
  size_t total = 0;
  for (;;) {
    ssize_t k = read(fd, buf, sizeof buf);
    size_t j;
    if (k <= 0) return total;
    total += (size_t)k;
    for (j = 0; j < (size_t)k; j++) {
      if (buf[j] != '\n') {
        if (line->len < QUEUE_ID_MAX + 8 && !stralloc_catb(line, buf + j, 1)) return (size_t)-1;
        continue;
      }
      f(line->s ? line->s : "", line->len, ctx);
      line->len = 0;
    }
  }
}

char const *const queue_ctl_ops[] = {"flush", "delete", "bounce", "requeue", 0};

int queue_ctl_parse(char const *name, char const **id)
{
  int i;
  for (i = 0; queue_ctl_ops[i]; i++) {
    size_t l = strlen(queue_ctl_ops[i]);
    if (!strncmp(name, queue_ctl_ops[i], l) && name[l] == '.' &&
        queue_id_ok(name + l + 1, strlen(name + l + 1))) {
      *id = name + l + 1;
      return i;
    }
  }
  return -1;
}

int queue_open_at(char const *qdir, char const *id, uint64_t offset)
{
  stralloc p = STRALLOC_ZERO;
  int fd = -1;
  if (stralloc_cats(&p, qdir) && stralloc_cats(&p, "/mess/") && stralloc_cats(&p, id) &&
      stralloc_0(&p))
    fd = open(p.s, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  stralloc_free(&p);
  if (fd >= 0 && lseek(fd, (off_t)offset, SEEK_SET) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    fd = -1;
  }
  return fd;
}

char const *queue_t_name(char state)
{
  switch (state) {
    case QUEUE_T_NEW: return "new";
    case QUEUE_T_LOCAL: return "pending-local";
    case QUEUE_T_REMOTE: return "pending-remote";
    case QUEUE_T_DONE: return "done";
    case QUEUE_T_FAILED: return "failed";
    case QUEUE_T_BOUNCED: return "bounced";
    default: return "unknown";
  }
}
