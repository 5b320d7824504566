/* unit: lib/groupsync: the promise (a 0 only after a successful fsync of the same directory
 * that began after the caller's rename and ended before the answer), checked over a shared
 * event log of 8 processes committing into 3 directories; fsyncs saved (batching happens);
 * a failed fsync covers nobody; a process SIGKILLed while holding the fsync lock stops
 * nobody; a slow fsync of one directory does not hold up another that shares its slot;
 * without a table it is a plain fsync. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "groupsync.h"
#include "check.h"
char const *PROG = "unit-groupsync";

#define PROCS 8
#define PER 150
#define DIRS 3
#define MAXEV (PROCS * PER * 2 + 64)

typedef struct { int dir, result; uint64_t start, end; } ev; /* a commit, or an fsync */
static struct shared {
  uint64_t clock;
  uint32_t ncommit, nsync;
  ino_t ino[DIRS];
  ev commit[MAXEV], sync[MAXEV];
  uint32_t fail_at; /* the fsync number that fails with EIO (0: none) */
  uint32_t kill_at; /* the fsync number at which its caller SIGKILLs itself (0: none) */
} *sh;

static uint64_t tick(void)
{
  return __atomic_add_fetch(&sh->clock, 1, __ATOMIC_SEQ_CST);
}

static int dir_of(int fd)
{
  struct stat st;
  int i;
  if (fstat(fd, &st) < 0) return -1;
  for (i = 0; i < DIRS; i++)
    if (sh->ino[i] == st.st_ino) return i;
  return -1;
}

/* the fsync the table calls: logged, slowed a little (so that others queue up), maybe failed
 * or killed */
static int logged_fsync(int fd)
{
  uint32_t k = __atomic_add_fetch(&sh->nsync, 1, __ATOMIC_SEQ_CST) - 1;
  struct timespec ts = {0, 300000};
  int r;
  if (k >= MAXEV) abort();
  sh->sync[k].dir = dir_of(fd);
  sh->sync[k].start = tick();
  if (sh->kill_at && k + 1 == sh->kill_at) raise(SIGKILL);
  nanosleep(&ts, 0);
  r = fsync(fd);
  if (sh->fail_at && k + 1 == sh->fail_at) {
    r = -1;
    errno = EIO;
  }
  sh->sync[k].result = r;
  sh->sync[k].end = tick();
  return r;
}

static char dirs[DIRS][64];

static void child(int tablefd, int me)
{
  groupsync g = GROUPSYNC_ZERO;
  int i, dfd[DIRS];
  if (!groupsync_init(&g, tablefd)) _exit(2);
  g.sync = &logged_fsync;
  for (i = 0; i < DIRS; i++)
    if ((dfd[i] = open(dirs[i], O_RDONLY | O_DIRECTORY)) < 0) _exit(3);
  for (i = 0; i < PER; i++) {
    char a[128], b[128];
    int d = (me + i) % DIRS, fd, r;
    uint32_t k;
    snprintf(a, sizeof a, "%s/t.%d.%d", dirs[d], me, i);
    snprintf(b, sizeof b, "%s/m.%d.%d", dirs[d], me, i);
    if ((fd = open(a, O_WRONLY | O_CREAT | O_EXCL, 0600)) < 0 || close(fd) < 0) _exit(4);
    if (rename(a, b) < 0) _exit(5);
    k = __atomic_add_fetch(&sh->ncommit, 1, __ATOMIC_SEQ_CST) - 1;
    if (k >= MAXEV) abort();
    sh->commit[k].dir = d;
    sh->commit[k].result = 99; /* not answered (its process was killed) */
    sh->commit[k].start = tick(); /* after the rename completed */
    r = groupsync_fsync(&g, dfd[d]);
    sh->commit[k].end = tick();
    sh->commit[k].result = r;
  }
  _exit(0);
}

/* every commit answered 0 has a successful fsync of its directory inside its window */
static unsigned int uncovered(void)
{
  uint32_t i, j, bad = 0;
  for (i = 0; i < sh->ncommit; i++) {
    ev const *c = &sh->commit[i];
    int ok = 0;
    if (c->result) continue; /* failed, or never answered */
    for (j = 0; j < sh->nsync && !ok; j++) {
      ev const *s = &sh->sync[j];
      ok = s->dir == c->dir && !s->result && s->end && s->start > c->start && s->end < c->end;
    }
    if (!ok) bad++;
  }
  return bad;
}

static int run(int tablefd, int *killed)
{
  pid_t pid[PROCS];
  int i, w, failed = 0;
  *killed = 0;
  for (i = 0; i < PROCS; i++) {
    pid[i] = fork();
    if (pid[i] < 0) return -1;
    if (!pid[i]) {
      alarm(60); /* a lock never given back must fail the test, not hang it */
      child(tablefd, i);
    }
  }
  for (i = 0; i < PROCS; i++) {
    if (waitpid(pid[i], &w, 0) < 0) return -1;
    if (WIFSIGNALED(w) && WTERMSIG(w) == SIGKILL) (*killed)++;
    else if (!WIFEXITED(w) || WEXITSTATUS(w)) failed++;
  }
  return failed;
}

static void reset(void)
{
  int i;
  sh->ncommit = sh->nsync = 0;
  sh->fail_at = sh->kill_at = 0;
  for (i = 0; i < DIRS; i++) {
    char cmd[160];
    struct stat st;
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir %s", dirs[i], dirs[i]);
    if (system(cmd) || stat(dirs[i], &st) < 0) abort();
    sh->ino[i] = st.st_ino;
  }
}

/* a slow fsync of directory A (3 s); B, with the same home slot, arrives while A's fsync is
 * under way and A's last number is more than a second old: B must not wait for A */
static int slow_fd = -1, started[2];
static int slow_fsync(int fd)
{
  struct timespec ts = {3, 0};
  if (fd == slow_fd) {
    if (write(started[1], "s", 1) != 1) _exit(6);
    nanosleep(&ts, 0);
  }
  return fsync(fd);
}

static void slow_slot(char const *base, int tablefd)
{
  char a[128], b[128];
  struct stat st;
  unsigned int home[65];
  int i, j = -1, k = -1, w;
  pid_t pid;
  /* 65 directories in 64 slots: two share a home slot */
  for (i = 0; i < 65 && k < 0; i++) {
    snprintf(a, sizeof a, "%s/s%d", base, i);
    if (mkdir(a, 0700) < 0 || stat(a, &st) < 0) abort();
    home[i] = groupsync_home(st.st_dev, st.st_ino);
    for (j = 0; j < i; j++)
      if (home[j] == home[i]) {
        k = i;
        break;
      }
  }
  CHECK(k >= 0);
  if (k < 0) return;
  snprintf(a, sizeof a, "%s/s%d", base, j);
  snprintf(b, sizeof b, "%s/s%d", base, k);
  if (pipe(started) < 0) abort();
  pid = fork();
  if (!pid) {
    groupsync g = GROUPSYNC_ZERO;
    alarm(30);
    if (!groupsync_init(&g, tablefd) || (slow_fd = open(a, O_RDONLY | O_DIRECTORY)) < 0)
      _exit(2);
    g.sync = &slow_fsync;
    _exit(groupsync_fsync(&g, slow_fd) ? 3 : 0);
  }
  {
    groupsync g = GROUPSYNC_ZERO;
    struct timespec t0, t1, idle = {1, 200000000};
    char c;
    int fd = open(b, O_RDONLY | O_DIRECTORY);
    CHECK(read(started[0], &c, 1) == 1); /* A's fsync is under way */
    nanosleep(&idle, 0); /* time passing: A's slot now looks idle by its last number */
    CHECK(fd >= 0 && groupsync_init(&g, tablefd) == 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(groupsync_fsync(&g, fd) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* A's fsync has 1.8 s left: B done well before is B not waiting for it */
    CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000);
    close(fd);
  }
  CHECK(waitpid(pid, &w, 0) == pid && WIFEXITED(w) && !WEXITSTATUS(w));
  close(started[0]);
  close(started[1]);
}

int main(void)
{
  char base[] = "/var/tmp/unit-groupsync.XXXXXX";
  int fd, i, killed;
  groupsync plain = GROUPSYNC_ZERO;
  sh = mmap(0, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED || !mkdtemp(base)) return 111;
  for (i = 0; i < DIRS; i++) snprintf(dirs[i], sizeof dirs[i], "%s/d%d", base, i);

  /* no table: each call is its caller's own fsync */
  reset();
  plain.sync = &logged_fsync;
  {
    int d = open(dirs[0], O_RDONLY | O_DIRECTORY);
    CHECK(d >= 0 && groupsync_fsync(&plain, d) == 0 && sh->nsync == 1 && groupsync_own == 1);
    close(d);
  }

  fd = groupsync_make();
  CHECK(fd >= 0);
  {
    groupsync g;
    CHECK(groupsync_init(&g, fd) == 1 && g.t);
    CHECK(groupsync_init(&g, 0) == 0 && !g.t); /* not a table */
  }

  /* the promise, and fewer fsyncs than commits */
  reset();
  CHECK(run(fd, &killed) == 0 && !killed);
  CHECK(sh->ncommit == PROCS * PER);
  CHECK(uncovered() == 0);
  fprintf(stderr, "unit-groupsync: %u commits, %u fsyncs\n", sh->ncommit, sh->nsync);
  CHECK(sh->nsync < sh->ncommit * 3 / 4); /* with 8 committers, most waited and were covered */

  /* a failed fsync covers nobody: its caller gets -1, the ones it would have covered sync */
  reset();
  sh->fail_at = 40;
  CHECK(run(fd, &killed) == 0 && !killed);
  CHECK(uncovered() == 0);
  {
    uint32_t i2, fails = 0;
    for (i2 = 0; i2 < sh->ncommit; i2++) fails += sh->commit[i2].result != 0;
    CHECK(fails == 1);
  }

  /* SIGKILL in the middle of an fsync, holding the lock: the others go on (alarm otherwise) */
  reset();
  sh->kill_at = 25;
  CHECK(run(fd, &killed) == 0 && killed == 1);
  CHECK(uncovered() == 0);
  CHECK(sh->ncommit >= (PROCS - 1) * PER);

  slow_slot(base, fd);

  {
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (system(cmd)) CHECK(0);
  }
  return CHECK_DONE();
}
