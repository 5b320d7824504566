/* groupsync: one fsync of a directory for several processes' renames. See groupsync.h. */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "groupsync.h"

#define MAGIC 0x50424753u /* "PBGS" */
#define PROBES 8          /* slots looked at for a directory before a plain fsync */
#define IDLE_NS 1000000000ull /* a slot unused this long may be given to another directory */

typedef struct slot_s slot;
struct slot_s {
  pthread_mutex_t reg;  /* guards every field below; held for a few instructions */
  pthread_mutex_t sync; /* held across the one fsync in progress */
  uint64_t dev, ino;    /* the directory */
  uint64_t epoch;       /* changes when the slot changes hands, or its state is not trusted */
  uint64_t renamed;     /* numbers taken (each after a completed rename) in this epoch */
  uint64_t synced;      /* every number up to this one is covered by a successful fsync */
  uint64_t used;        /* CLOCK_MONOTONIC ns of the last number taken */
};

struct groupsync_table_s {
  uint32_t magic, nslots;
  slot s[GROUPSYNC_SLOTS];
};

unsigned long groupsync_own, groupsync_covered;

static int mutex_init(pthread_mutex_t *m)
{
  pthread_mutexattr_t a;
  int r = pthread_mutexattr_init(&a);
  if (r) return r;
  if (!(r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) &&
      !(r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)))
    r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return r;
}

int groupsync_make(void)
{
  struct groupsync_table_s *t;
  unsigned int i;
  int r = 0, fd = memfd_create("pillarbox-groupsync", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  /* sealed at its size: no holder can shrink it under the others' mappings (SIGBUS) */
  if (ftruncate(fd, sizeof *t) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
    goto err;
  t = mmap(0, sizeof *t, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (t == MAP_FAILED) goto err;
  for (i = 0; i < GROUPSYNC_SLOTS && !r; i++)
    if (!(r = mutex_init(&t->s[i].reg))) r = mutex_init(&t->s[i].sync);
  t->nslots = GROUPSYNC_SLOTS;
  t->magic = MAGIC;
  munmap(t, sizeof *t);
  if (!r) return fd;
  errno = r;
err:
  {
    int e = errno;
    close(fd);
    errno = e;
  }
  return -1;
}

int groupsync_init(groupsync *g, int fd)
{
  struct stat st;
  struct groupsync_table_s *t;
  g->t = 0;
  if (fstat(fd, &st) < 0) return 0;
  if ((size_t)st.st_size != sizeof *t) {
    errno = EINVAL;
    return 0;
  }
  t = mmap(0, sizeof *t, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (t == MAP_FAILED) return 0;
  if (t->magic != MAGIC || t->nslots != GROUPSYNC_SLOTS) {
    munmap(t, sizeof *t);
    errno = EINVAL;
    return 0;
  }
  g->t = t;
  return 1;
}

static uint64_t now_ns(void)
{
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) return 0;
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* 0 with the lock held, or an error number. A holder that died may have left the slot
 * half-changed: its state is forgotten (a new epoch, nothing covered), never believed. */
static int lock(slot *s, pthread_mutex_t *m)
{
  int r = pthread_mutex_lock(m);
  if (r == EOWNERDEAD) {
    if (m == &s->reg) {
      s->epoch++;
      s->synced = 0;
      s->renamed = 0;
    }
    /* not made consistent: unusable from now on; every caller then does a plain fsync */
    if ((r = pthread_mutex_consistent(m))) pthread_mutex_unlock(m);
  }
  return r;
}

/* With s->reg held: 1 if nobody holds s->sync (no fsync under way in the slot). A trylock:
 * the order of the two locks elsewhere is sync, then reg. */
static int sync_idle(slot *s)
{
  int r = pthread_mutex_trylock(&s->sync);
  if (r == EOWNERDEAD && pthread_mutex_consistent(&s->sync)) {
    pthread_mutex_unlock(&s->sync);
    return 0;
  }
  if (r && r != EOWNERDEAD) return 0;
  pthread_mutex_unlock(&s->sync);
  return 1;
}

unsigned int groupsync_home(dev_t dev, ino_t ino)
{
  return (unsigned int)((((uint64_t)ino * 0x9E3779B97F4A7C15ull) ^ (uint64_t)dev) %
                        GROUPSYNC_SLOTS);
}

/* Takes a number in the slot of (dev, ino): the slot, with *ep and *my; or 0 (plain fsync). */
static slot *take_number(struct groupsync_table_s *t, uint64_t dev, uint64_t ino, uint64_t *ep,
                         uint64_t *my)
{
  uint64_t now = now_ns();
  unsigned int i, h = groupsync_home((dev_t)dev, (ino_t)ino);
  for (i = 0; i < PROBES; i++) {
    slot *s = &t->s[(h + i) % GROUPSYNC_SLOTS];
    if (lock(s, &s->reg)) return 0;
    if (s->dev != dev || s->ino != ino) {
      /* another directory's, used in the last second or with an fsync under way (a slow
       * fsync there must not hold up this directory): the next slot */
      if ((s->used && s->used + IDLE_NS > now) || !sync_idle(s)) {
        pthread_mutex_unlock(&s->reg);
        continue;
      }
      /* order matters if we die half-way: nothing is ever covered that was not synced */
      s->epoch++;
      s->synced = 0;
      s->renamed = 0;
      s->dev = dev;
      s->ino = ino;
    }
    *ep = s->epoch;
    *my = ++s->renamed;
    s->used = now ? now : 1;
    pthread_mutex_unlock(&s->reg);
    return s;
  }
  return 0;
}

int groupsync_fsync(groupsync *g, int dirfd)
{
  int (*f)(int) = g && g->sync ? g->sync : &fsync;
  struct stat st;
  slot *s;
  uint64_t ep, my, tgt, tep;
  int r, e, covered;
  if (!g || !g->t || fstat(dirfd, &st) < 0) goto plain;
  s = take_number(g->t, (uint64_t)st.st_dev, (uint64_t)st.st_ino, &ep, &my);
  if (!s) goto plain;
  if (lock(s, &s->sync)) goto plain;
  if (lock(s, &s->reg)) {
    pthread_mutex_unlock(&s->sync);
    goto plain;
  }
  covered = s->epoch == ep && s->synced >= my;
  tgt = s->renamed; /* every number up to here was taken after its rename completed */
  tep = s->epoch;
  pthread_mutex_unlock(&s->reg);
  if (covered || tep != ep) {
    pthread_mutex_unlock(&s->sync);
    if (!covered) goto plain; /* the slot changed hands: our own fsync, holding up nobody */
    groupsync_covered++;
    return 0;
  }
  r = (*f)(dirfd);
  e = errno;
  if (!r && !lock(s, &s->reg)) {
    /* the slot may have changed hands while we synced: then our fsync covers nobody else */
    if (s->epoch == tep && s->synced < tgt) s->synced = tgt;
    pthread_mutex_unlock(&s->reg);
  }
  pthread_mutex_unlock(&s->sync);
  groupsync_own++;
  errno = e;
  return r;
plain:
  groupsync_own++;
  return (*f)(dirfd);
}
