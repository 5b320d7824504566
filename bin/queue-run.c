/* queue-run: the scheduler. Reads the queue, delivers, retries, bounces (doc/queue-run.8).
 *
 * In memory, one small slot per queued message (lib/qindex: the id hash and the retry heap);
 * a message's envelope and state are read only when it is due ("loaded"), and at most
 * active_max messages are loaded at once, so 100,000 queued messages cost a few MB and the
 * first delivery starts right after the directory scan. The retry schedule is lib/retry, the
 * bounce lib/bounce, the starting of children lib/qspawn (directly, or through the root
 * spawner queue-spawn that runs them under their own uids).
 * Event loop: iopause on the self-pipe (SIGCHLD, SIGTERM, SIGHUP, SIGALRM), the trigger fifo,
 * the spawner's socket and the children's report pipes, with a deadline at the next due
 * message, child timeout or rescan.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <skalibs/buffer.h>
#include <skalibs/iopause.h>
#include <skalibs/selfpipe.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "bounce.h"
#include "control.h"
#include "lookup.h"
#include "qindex.h"
#include "qspawn.h"
#include "queue.h"
#include "retry.h"

char const *PROG = "queue-run";
#define USAGE "queue-run"

#define CHILDOUT_MAX 262144   /* bytes of a child's report kept */
#define REMOTE_BATCH 100      /* recipients per smtp-send */
#define DOMAINS_MAX 4096      /* domains remembered for backoff */
#define STALE_TMP 129600      /* 36 h: a tmp/ file this old belongs to a dead injector */
#define KIDS_POLL_MAX 2048    /* report pipes watched at once */

#define dienomem() strerr_diefu1sys(111, "allocate")

/* ---- configuration ---- */

static char const *qdir;
static stralloc qdirsa = STRALLOC_ZERO;
static unsigned long conc_local, conc_remote, conc_domain, rescan_every, term_wait,
  timeout_local, timeout_remote;
static retry_policy policy;
static stralloc me = STRALLOC_ZERO, postmaster = STRALLOC_ZERO;
static unsigned int active_max;
static qspawn spawner;

/* ---- logging ---- */

static void logs(char const *const *v, unsigned int n)
{
  unsigned int i;
  for (i = 0; i < n; i++)
    if (v[i] && buffer_puts(buffer_1, v[i]) < 0) return;
  buffer_putflush(buffer_1, "\n", 1);
}
#define LOG(...)                                                 \
  do {                                                           \
    char const *v_[] = {__VA_ARGS__};                            \
    logs(v_, sizeof v_ / sizeof *v_);                            \
  } while (0)

/* ---- the index of queued messages (lib/qindex) and its flags ---- */

#define F_ACTIVE 2  /* loaded, in the active list */
#define F_FLUSH 4   /* queue-ctl flush: every pending target due now */
#define F_DELETE 8
#define F_BOUNCE 16
#define F_REQUEUE 32 /* queue-ctl requeue: resolve the recipients again */
#define F_FORCE 64   /* flush or release by id: try now even if the domain is backed off */

static qindex ix = QINDEX_ZERO;
#define SLOT(s) (ix.slot[s])

static void push(uint32_t s, uint64_t next)
{
  qindex_reset(&ix, s, next);
}

/* Makes an id known (due now); returns its slot or QINDEX_NONE */
static uint32_t known(char const *id, size_t len)
{
  char buf[QUEUE_ID_MAX];
  uint32_t s;
  if (!queue_id_ok(id, len)) return QINDEX_NONE;
  memcpy(buf, id, len);
  buf[len] = 0;
  s = qindex_find(&ix, buf);
  if (s != QINDEX_NONE) return s;
  s = qindex_add(&ix, buf);
  if (s == QINDEX_NONE) dienomem();
  push(s, 0);
  return s;
}

/* ---- domains (remote backoff and per-domain concurrency) ---- */

typedef struct domain_s domain;
struct domain_s {
  char name[256];
  unsigned int running;
  unsigned int fails;
  uint64_t until;
};
static domain *domains;
static unsigned int ndomains;

static domain *domain_get(char const *name, size_t len)
{
  unsigned int i;
  if (len > 255) len = 255;
  for (i = 0; i < ndomains; i++)
    if (!strncasecmp(domains[i].name, name, len) && !domains[i].name[len]) return &domains[i];
  if (ndomains == DOMAINS_MAX) { /* forget a domain with nothing running and no backoff */
    for (i = 0; i < ndomains; i++)
      if (!domains[i].running && !domains[i].fails) break;
    if (i == ndomains) return 0;
  } else {
    if (!domains) { /* allocated once: children keep pointers into this table */
      domains = calloc(DOMAINS_MAX, sizeof *domains);
      if (!domains) dienomem();
    }
    i = ndomains++;
  }
  memset(&domains[i], 0, sizeof domains[i]);
  memcpy(domains[i].name, name, len);
  domains[i].name[len] = 0;
  return &domains[i];
}

static domain *domain_of(char const *addr)
{
  char const *at = strrchr(addr, '@');
  return at && at[1] ? domain_get(at + 1, strlen(at + 1)) : 0;
}

/* ---- loaded messages and children ---- */

typedef struct active_s active;
struct active_s {
  uint32_t slot;
  queue_hdr h;
  stralloc env;
  char const *sender;
  queue_target *t;
  size_t nt;
  unsigned char *running; /* per target: in a child now */
  unsigned int nrunning;
  int dirty;
  int force;     /* F_FORCE: ignore the domain backoff this time */
  int keepforce; /* ...and keep it: a target could not start because its domain was busy */
};

typedef struct child_s child;
struct child_s {
  uint32_t h;     /* qspawn's handle */
  int fd;         /* its report: stderr (local) or stdout (remote); -1 at EOF */
  int exited;
  int wstat;
  active *a;
  int remote;
  size_t *tix;    /* targets it delivers */
  size_t ntix;
  domain *dom;
  stralloc out;
  uint64_t killat; /* a child still running then is killed (a temporary failure) */
  int timedout;
};

static active **act;
static unsigned int nact;
static child *kids;
static unsigned int nkids, nlocal, nremote;
static int stopping = 0;
static uint64_t now;

static char const *idof(active const *a)
{
  return SLOT(a->slot).id;
}

static void fmtu(char *buf, uint64_t u)
{
  buf[uint64_fmt(buf, u)] = 0;
}

static void active_free(active *a)
{
  queue_targets_free(a->t, a->nt);
  free(a->t);
  free(a->running);
  stralloc_free(&a->env);
  free(a);
}

static void setdiag(queue_target *t, char const *s)
{
  if (!queue_target_setdiag(t, s, strlen(s))) dienomem();
}

/* The envelope recipient number i (for bounces and logs). */
static char const *env_rcpt(active const *a, unsigned int i)
{
  size_t pos = (size_t)(a->sender + strlen(a->sender) + 1 - a->env.s), rl;
  char const *r = "";
  unsigned int k = 0;
  while (queue_env_next(a->env.s, a->env.len, &pos, &r, &rl))
    if (k++ == i) return r;
  return "";
}

/* One line per delivery result, as Postfix writes them:
 * "delivery ID to=<TARGET> orig_to=<ENVELOPE RCPT> relay=R delay=SECONDS status=S (DIAG)"
 * with S sent, deferred or bounced, the delay counted from the arrival (the id's time). */
static void log_delivery(active const *a, queue_target const *t, char const *relay,
                         char const *status, char const *diag)
{
  char dl[UINT64_FMT + 4];
  struct timespec ts;
  uint64_t arr = a->h.arrival * 100, cs;
  {
    char const *id = idof(a), *dot = strchr(id, '.');
    uint64_t sec, usec;
    size_t k = uint64_scan(id, &sec);
    if (dot && k == (size_t)(dot - id) && uint64_scan(dot + 1, &usec) == 6)
      arr = sec * 100 + usec / 10000;
  }
  if (clock_gettime(CLOCK_REALTIME, &ts) < 0) ts.tv_sec = (time_t)now, ts.tv_nsec = 0;
  cs = (uint64_t)ts.tv_sec * 100 + (uint64_t)ts.tv_nsec / 10000000;
  cs = cs > arr ? cs - arr : 0;
  {
    size_t n = uint64_fmt(dl, cs / 100);
    dl[n++] = '.';
    dl[n++] = (char)('0' + cs % 100 / 10);
    dl[n++] = (char)('0' + cs % 10);
    dl[n] = 0;
  }
  LOG("delivery ", idof(a), " to=<", t->addr, "> orig_to=<", env_rcpt(a, t->rcpt), "> relay=",
      relay, " delay=", dl, " status=", status, " (", diag, ")");
}

/* The diagnostic as a log shows it: without "x-pillarbox; " and "R=HOST " */
static char const *shown(char const *d)
{
  if (!strncmp(d, "R=", 2)) {
    char const *sp = strchr(d, ' ');
    d = sp ? sp + 1 : "";
  }
  if (!strncmp(d, "x-pillarbox; ", 13)) d += 13;
  return d;
}

static void fail_target(active *a, queue_target *t, char const *relay, char const *diag)
{
  t->state = QUEUE_T_FAILED;
  setdiag(t, diag);
  a->dirty = 1;
  log_delivery(a, t, relay, "bounced", shown(diag));
}

static void quarantine(char const *id, char const *why)
{
  stralloc p = STRALLOC_ZERO, q = STRALLOC_ZERO;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/mess/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p) || !stralloc_cats(&q, qdir) || !stralloc_cats(&q, "/quarantine/") ||
      !stralloc_cats(&q, id) || !stralloc_0(&q))
    dienomem();
  if (rename(p.s, q.s) < 0 && errno != ENOENT) strerr_warnwu2sys("move to quarantine: ", p.s);
  p.len = 0;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/state/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p))
    dienomem();
  unlink(p.s);
  stralloc_free(&p);
  stralloc_free(&q);
  LOG("quarantine ", id, ": ", why);
}

static void target_add(active *a, char state, unsigned int rcpt, char const *addr, size_t len)
{
  queue_target *n = realloc(a->t, (a->nt + 1) * sizeof *n);
  if (!n) dienomem();
  a->t = n;
  memset(&n[a->nt], 0, sizeof n[a->nt]);
  n[a->nt].state = state;
  n[a->nt].rcpt = rcpt;
  n[a->nt].addr = malloc(len + 1);
  if (!n[a->nt].addr) dienomem();
  memcpy(n[a->nt].addr, addr, len);
  n[a->nt].addr[len] = 0;
  setdiag(&n[a->nt], "");
  a->nt++;
}

/* 1 if a target (already resolved) delivers to addr the same way */
static int duplicate(active const *a, char st, char const *addr, size_t len)
{
  size_t i;
  for (i = 0; i < a->nt; i++) {
    queue_target const *t = &a->t[i];
    if (t->state == QUEUE_T_NEW || t->state == QUEUE_T_FAILED || t->state == QUEUE_T_BOUNCED)
      continue;
    if ((t->state == QUEUE_T_REMOTE) != (st == QUEUE_T_REMOTE)) continue;
    if (strlen(t->addr) == len && !strncasecmp(t->addr, addr, len)) return 1;
  }
  return 0;
}

/* Expands target i (state N) into the targets lookup gives (tg: "L"/"R" addr "\0"...): the
 * first replaces it, the others are appended; the same mailbox twice gets one copy. */
static void expand(active *a, size_t i, stralloc const *tg)
{
  size_t p = 0;
  int first = 1;
  while (p < tg->len) {
    char const *s = tg->s + p;
    size_t l = strlen(s);
    char st = s[0] == 'L' ? QUEUE_T_LOCAL : QUEUE_T_REMOTE;
    p += l + 1;
    if (l < 2 || duplicate(a, st, s + 1, l - 1)) continue;
    if (!first) {
      target_add(a, st, a->t[i].rcpt, s + 1, l - 1);
      continue;
    }
    free(a->t[i].addr);
    a->t[i].addr = malloc(l);
    if (!a->t[i].addr) dienomem();
    memcpy(a->t[i].addr, s + 1, l - 1);
    a->t[i].addr[l - 1] = 0;
    a->t[i].state = st;
    first = 0;
  }
  if (first && tg->len) { /* every target was a duplicate */
    a->t[i].state = QUEUE_T_DONE;
    setdiag(&a->t[i], "duplicate");
  } else if (first) /* an empty alias */
    fail_target(a, &a->t[i], "none", "x-pillarbox; 5.1.1 alias without targets");
}

/* Resolves the N targets through lookup: 0 ok, -1 temporary trouble (they stay N). */
static int resolve(active *a)
{
  size_t i, n = a->nt;
  stralloc tg = STRALLOC_ZERO;
  int r = 0;
  for (i = 0; i < n; i++) {
    int k;
    if (a->t[i].state != QUEUE_T_NEW) continue;
    tg.len = 0;
    k = lookup_resolve(a->t[i].addr, strlen(a->t[i].addr), &tg);
    if (k == LOOKUP_ETEMP) {
      strerr_warnwu3sys("look up ", a->t[i].addr, " (will retry)");
      r = -1;
      continue;
    }
    a->dirty = 1;
    if (k == LOOKUP_UNKNOWN) fail_target(a, &a->t[i], "none", "x-pillarbox; 5.1.1 no such user");
    else if (k == LOOKUP_ELOOP)
      fail_target(a, &a->t[i], "none", "x-pillarbox; 5.4.6 alias loop or expansion too large");
    else
      expand(a, i, &tg);
  }
  stralloc_free(&tg);
  if (a->nt > n) { /* targets were added: the running flags must cover them */
    unsigned char *nr = realloc(a->running, a->nt + 1);
    if (!nr) dienomem();
    memset(nr + n, 0, a->nt + 1 - n);
    a->running = nr;
  }
  return r;
}

/* 1 if QDIR/hold/ID exists */
static int held(char const *id)
{
  stralloc p = STRALLOC_ZERO;
  struct stat st;
  int r;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/hold/") || !stralloc_cats(&p, id) ||
      !stralloc_0(&p))
    dienomem();
  r = stat(p.s, &st) == 0;
  stralloc_free(&p);
  return r;
}

/* Reads the state of a (or makes one N target per envelope recipient): 1, or 0 (retry). */
static int load_state(active *a)
{
  char const *id = idof(a);
  int r = queue_state_read(qdir, id, &a->t, &a->nt);
  if (r < 0 && errno == EPROTO) {
    LOG("warning ", id, ": unreadable state file, every recipient will be tried again");
    r = 0;
  }
  if (r < 0) {
    strerr_warnwu3sys("read state of ", id, " (will retry)");
    return 0;
  }
  if (r == 0) {
    size_t pos = (size_t)(a->sender + strlen(a->sender) + 1 - a->env.s), rl;
    char const *rc;
    unsigned int k = 0;
    char nb[UINT64_FMT], sb[UINT64_FMT];
    a->t = 0;
    a->nt = 0;
    while (queue_env_next(a->env.s, a->env.len, &pos, &rc, &rl))
      target_add(a, QUEUE_T_NEW, k++, rc, rl);
    fmtu(nb, k);
    fmtu(sb, a->h.msglen);
    LOG("new ", id, " from=<", a->sender, "> rcpts=", nb, " size=", sb);
    a->dirty = 1;
  }
  return 1;
}

/* Loads slot s: 1 loaded (in act), 0 not (gone, held, quarantined, deferred). */
static int load(uint32_t s)
{
  active *a;
  int fd;
  char const *id = SLOT(s).id;
  if (held(id) && !(SLOT(s).flags & (F_DELETE | F_BOUNCE))) {
    push(s, now + rescan_every);
    return 0;
  }
  a = calloc(1, sizeof *a);
  if (!a) dienomem();
  a->slot = s;
  fd = queue_open(qdir, id, &a->h, &a->env, 0);
  if (fd < 0) {
    int e = errno;
    active_free(a);
    if (e == EPROTO) quarantine(id, "corrupt or truncated message file");
    if (e == ENOENT || e == EPROTO) qindex_del(&ix, s);
    else {
      errno = e;
      strerr_warnwu3sys("open queue file ", id, " (will retry)");
      push(s, now + policy.base);
    }
    return 0;
  }
  close(fd);
  if (SLOT(s).flags & F_DELETE) {
    active_free(a);
    if (!queue_remove(qdir, id)) strerr_warnwu2sys("remove ", id);
    LOG("deleted ", id);
    qindex_del(&ix, s);
    return 0;
  }
  a->sender = a->env.s + 1;
  if (!load_state(a)) {
    active_free(a);
    push(s, now + policy.base);
    return 0;
  }
  a->running = calloc(a->nt + 1, 1);
  if (!a->running) dienomem();
  {
    active **n = realloc(act, (nact + 1) * sizeof *n);
    if (!n) dienomem();
    act = n;
    act[nact++] = a;
  }
  SLOT(s).flags |= F_ACTIVE;
  return 1;
}

/* Applies the queue-ctl requests a loaded message carries (at load, or when it settles
 * for requests that came while it was being delivered); each is applied once. */
static void apply_flags(active *a)
{
  uint32_t f = SLOT(a->slot).flags;
  size_t j;
  if (f & F_FORCE) a->force = 1;
  if (f & F_FLUSH)
    for (j = 0; j < a->nt; j++) a->t[j].next = 0;
  if (f & F_REQUEUE) {
    int r = queue_targets_requeue(&a->t, &a->nt, a->env.s, a->env.len);
    unsigned char *nr;
    char nb[UINT64_FMT];
    if (r < 0) dienomem();
    nr = realloc(a->running, a->nt + 1); /* called only with nothing running */
    if (!nr) dienomem();
    memset(nr, 0, a->nt + 1);
    a->running = nr;
    a->dirty = 1;
    fmtu(nb, (uint64_t)r);
    LOG("requeue ", idof(a), " rcpts=", nb);
  }
  if (f & F_BOUNCE) {
    if (queue_targets_return(a->t, a->nt, a->running,
                             "x-pillarbox; 5.0.0 returned by the postmaster") == (size_t)-1)
      dienomem();
    a->dirty = 1;
  }
  SLOT(a->slot).flags &= ~(uint32_t)(F_FLUSH | F_REQUEUE | F_BOUNCE);
}

/* ---- bounces (the report itself is lib/bounce) ---- */

/* Where the bounce of a goes: its sender; for a null sender the postmaster, unless what
 * failed was for the postmaster (a double bounce is dropped). 0: dropped. */
static char const *bounce_to(active const *a)
{
  size_t i;
  if (*a->sender) return a->sender;
  if (!postmaster.len) return 0;
  for (i = 0; i < a->nt; i++)
    if (a->t[i].state == QUEUE_T_FAILED && strcasecmp(env_rcpt(a, a->t[i].rcpt), postmaster.s))
      return postmaster.s;
  return 0;
}

static void mark_bounced(active *a)
{
  size_t i;
  for (i = 0; i < a->nt; i++)
    if (a->t[i].state == QUEUE_T_FAILED) a->t[i].state = QUEUE_T_BOUNCED;
  a->dirty = 1;
}

/* Sends one bounce for every F target of a; marks them B. 1 done, 0 trouble (retry later). */
static int bounce(active *a)
{
  size_t i, n = 0;
  bounce_item *it;
  bounce_msg m;
  stralloc nid = STRALLOC_ZERO;
  int code;
  for (i = 0; i < a->nt; i++) n += a->t[i].state == QUEUE_T_FAILED;
  if (!n) return 1;
  m.to = bounce_to(a);
  if (!m.to) {
    mark_bounced(a);
    LOG("bounce ", idof(a), " dropped: null sender and the postmaster is unreachable");
    return 1;
  }
  it = calloc(n, sizeof *it);
  if (!it) dienomem();
  for (i = 0, n = 0; i < a->nt; i++)
    if (a->t[i].state == QUEUE_T_FAILED) {
      it[n].rcpt = env_rcpt(a, a->t[i].rcpt);
      it[n++].diag = a->t[i].diag;
    }
  m.qdir = qdir;
  m.id = idof(a);
  m.arrival = a->h.arrival;
  m.now = now;
  m.me = me.s;
  code = bounce_send(&m, it, n, &nid);
  free(it);
  if (code) {
    errno = code == QX_NOMEM ? ENOMEM : errno;
    strerr_warnwu2sys("queue a bounce for ", idof(a));
  } else {
    char nb[UINT64_FMT];
    fmtu(nb, n);
    LOG("bounce ", idof(a), " to=<", m.to, "> rcpts=", nb, " id=", nid.s);
    mark_bounced(a);
    known(nid.s, nid.len - 1);
  }
  stralloc_free(&nid);
  return !code;
}

/* ---- settling a message: nothing running, nothing startable now ---- */

static void drop(unsigned int ai, int forget)
{
  uint32_t s = act[ai]->slot;
  active_free(act[ai]);
  act[ai] = act[--nact];
  if (forget) qindex_del(&ix, s);
}

static void settle(unsigned int ai)
{
  active *a = act[ai];
  uint32_t s = a->slot;
  size_t i;
  uint64_t next = UINT64_MAX;
  int pending = 0;
  if (SLOT(s).flags & F_DELETE) {
    if (!queue_remove(qdir, idof(a))) strerr_warnwu2sys("remove ", idof(a));
    LOG("deleted ", idof(a));
    return drop(ai, 1);
  }
  if (SLOT(s).flags & (F_FLUSH | F_REQUEUE | F_BOUNCE)) { /* asked for during delivery */
    apply_flags(a);
    if (resolve(a) < 0) next = now + policy.base;
  }
  if (!bounce(a)) next = now + policy.base;
  for (i = 0; i < a->nt; i++) {
    queue_target *t = &a->t[i];
    if (t->state == QUEUE_T_DONE || t->state == QUEUE_T_BOUNCED) continue;
    pending = 1;
    if (t->next < next) next = t->next;
  }
  if (!pending) {
    if (queue_remove(qdir, idof(a))) {
      LOG("done ", idof(a));
      return drop(ai, 1);
    }
    strerr_warnwu2sys("remove ", idof(a));
    next = now + policy.base;
  }
  if (a->dirty && !queue_state_write(qdir, idof(a), a->t, a->nt, 0))
    strerr_warnwu2sys("write state of ", idof(a));
  if (next < now) next = now;
  SLOT(s).flags &= ~(uint32_t)F_ACTIVE;
  if (!a->keepforce) SLOT(s).flags &= ~(uint32_t)F_FORCE;
  push(s, next);
  drop(ai, 0);
}

/* ---- children ---- */

static int open_message(active *a)
{
  stralloc p = STRALLOC_ZERO;
  int fd;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/mess/") || !stralloc_cats(&p, idof(a)) ||
      !stralloc_0(&p))
    dienomem();
  fd = open(p.s, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  stralloc_free(&p);
  if (fd < 0) return -1;
  if (lseek(fd, (off_t)a->h.offset, SEEK_SET) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Records a delivery: its handle, its report fd, the targets it works on. rfd -1: it could
 * not be started (errno): it is recorded as ended with 111 and the reason as its report. */
static child *kid_add(uint32_t h, int rfd, active *a, size_t const *tix, size_t n, int remote,
                      char const *prog)
{
  child *k, *nk = realloc(kids, (nkids + 1) * sizeof *nk);
  size_t i;
  if (!nk) dienomem();
  kids = nk;
  k = &kids[nkids++];
  memset(k, 0, sizeof *k);
  k->h = h;
  k->fd = rfd;
  k->a = a;
  k->remote = remote;
  k->tix = malloc(n * sizeof *k->tix);
  if (!k->tix) dienomem();
  memcpy(k->tix, tix, n * sizeof *tix);
  k->ntix = n;
  k->killat = now + (remote ? timeout_remote : timeout_local);
  for (i = 0; i < n; i++) a->running[tix[i]] = 1;
  a->nrunning++;
  if (remote) nremote++;
  else nlocal++;
  if (rfd < 0) {
    char const *e = strerror(errno);
    strerr_warnwu2sys("run ", prog);
    k->exited = 1;
    k->wstat = 111 << 8;
    if (!stralloc_cats(&k->out, "unable to run ") || !stralloc_cats(&k->out, prog) ||
        !stralloc_cats(&k->out, ": ") || !stralloc_cats(&k->out, e))
      dienomem();
  }
  return k;
}

/* Starts a child of kind on a's message: 1 started (or recorded as failed to start), -1 the
 * message could not be opened (retry soon). */
static int start(active *a, char kind, char const *const *argv, char const *const *env,
                 unsigned int nenv, size_t const *tix, size_t n, domain *d)
{
  int msgfd = open_message(a), rfd = -1;
  uint32_t h = 0;
  child *k;
  if (msgfd < 0) return -1;
  if (!qspawn_start(&spawner, kind, argv, env, nenv, msgfd, &rfd, &h)) rfd = -1;
  close(msgfd);
  k = kid_add(h, rfd, a, tix, n, kind == QSPAWN_REMOTE, argv[0]);
  if (d) {
    k->dom = d;
    d->running++;
  }
  return 1;
}

static int start_local(active *a, size_t ti)
{
  account acc = ACCOUNT_ZERO;
  queue_target *t = &a->t[ti];
  int r = lookup_account_nohash(t->addr, strlen(t->addr), &acc);
  if (r <= 0) {
    account_free(&acc);
    if (r == 0) fail_target(a, t, "local", "x-pillarbox; 5.1.1 no such user");
    else {
      t->attempts++;
      t->next = now + retry_delay(&policy, t->attempts);
      setdiag(t, "x-pillarbox; 4.3.0 account database unreadable");
      a->dirty = 1;
      log_delivery(a, t, "local", "deferred", "4.3.0 account database unreadable");
    }
    return 0;
  }
  {
    char const *argv[3] = {QSPAWN_LOCAL_PROG, acc.maildir.s, 0};
    stralloc e = STRALLOC_ZERO;
    char const *env[2];
    if (!stralloc_cats(&e, "SENDER=") || !stralloc_cats(&e, a->sender) || !stralloc_0(&e) ||
        !stralloc_cats(&e, "RECIPIENT=") || !stralloc_cats(&e, acc.address.s) || !stralloc_0(&e))
      dienomem();
    env[0] = e.s;
    env[1] = e.s + strlen(e.s) + 1;
    r = start(a, QSPAWN_LOCAL, argv, env, 2, &ti, 1, 0);
    stralloc_free(&e);
  }
  account_free(&acc);
  return r;
}

static int start_remote(active *a, domain *d, size_t *tix, size_t n)
{
  char const **argv = calloc(n + 4, sizeof *argv);
  size_t i;
  int r;
  if (!argv) dienomem();
  argv[0] = QSPAWN_REMOTE_PROG;
  argv[1] = d->name;
  argv[2] = *a->sender ? a->sender : "<>";
  for (i = 0; i < n; i++) argv[3 + i] = a->t[tix[i]].addr;
  r = start(a, QSPAWN_REMOTE, argv, 0, 0, tix, n, d);
  free(argv);
  return r;
}

/* Temporary failure of target t in a: schedules the retry, or fails it past the lifetime. */
static void defer(active *a, queue_target *t, char const *relay, char const *diag, size_t len)
{
  stralloc d = STRALLOC_ZERO;
  t->attempts++;
  a->dirty = 1;
  if (!queue_target_setdiag(t, diag, len)) dienomem();
  log_delivery(a, t, relay, "deferred", shown(t->diag));
  if (!retry_expired(&policy, a->h.arrival, now)) {
    t->next = now + retry_delay(&policy, t->attempts);
    return;
  }
  if (!retry_expired_diag(&d, diag, len) || !stralloc_0(&d)) dienomem();
  fail_target(a, t, relay, d.s);
  stralloc_free(&d);
}

/* the last line of a child's report (without "PROG: fatal: ") */
static void lastline(stralloc const *out, char const **s, size_t *len)
{
  size_t e = out->len, b;
  char const *c;
  while (e && (out->s[e - 1] == '\n' || out->s[e - 1] == '\r' || out->s[e - 1] == ' ')) e--;
  for (b = e; b && out->s[b - 1] != '\n'; b--)
    ;
  *s = out->s ? out->s + b : "";
  *len = e - b;
  c = *len ? memchr(*s, ':', *len) : 0;
  if (c && *len > (size_t)(c - *s) + 9 && !strncmp(c, ": fatal: ", 9)) {
    *len -= (size_t)(c + 9 - *s);
    *s = c + 9;
  }
}

static void finish_local(child *k)
{
  active *a = k->a;
  queue_target *t = &a->t[k->tix[0]];
  char const *why;
  size_t wl;
  int code = WIFEXITED(k->wstat) ? WEXITSTATUS(k->wstat) : -1;
  stralloc d = STRALLOC_ZERO;
  a->running[k->tix[0]] = 0;
  a->dirty = 1;
  nlocal--;
  if (code == 0) {
    t->state = QUEUE_T_DONE;
    setdiag(t, "");
    log_delivery(a, t, "local", "sent", "delivered");
    return;
  }
  lastline(&k->out, &why, &wl);
  if (!stralloc_cats(&d, "x-pillarbox; ") || !stralloc_catb(&d, why, wl) ||
      (!wl && !stralloc_cats(&d, k->timedout ? "4.4.1 deliver-maildir timed out"
                                 : code < 0 ? "deliver-maildir killed" : "deliver-maildir failed")) ||
      !stralloc_0(&d))
    dienomem();
  if (code == 100) fail_target(a, t, "local", d.s);
  else defer(a, t, "local", d.s, d.len - 1);
  stralloc_free(&d);
}

/* Splits the next line of smtp-send's report (K \t RCPT \t MTA \t DIAG) at *p: 1 if it is
 * one for rcpt (f[0..4) set), else 0. */
static int report_line(stralloc const *out, size_t *p, char const *rcpt, char const **f,
                       size_t *fl)
{
  char const *line, *nl;
  size_t e, q = 0, nf = 0;
  if (*p >= out->len || !(nl = memchr(out->s + *p, '\n', out->len - *p))) return 0;
  line = out->s + *p;
  e = (size_t)(nl - line);
  *p += e + 1;
  while (nf < 4) {
    char const *tab = nf < 3 ? memchr(line + q, '\t', e - q) : 0;
    size_t end = tab ? (size_t)(tab - line) : e;
    f[nf] = line + q;
    fl[nf++] = end - q;
    if (!tab) break;
    q = end + 1;
  }
  return nf == 4 && fl[0] == 1 && (f[0][0] == 'D' || f[0][0] == 'T' || f[0][0] == 'P') &&
         fl[1] == strlen(rcpt) && !memcmp(f[1], rcpt, fl[1]);
}

static void finish_remote(child *k)
{
  active *a = k->a;
  size_t i, p = 0;
  int anyok = 0, anytemp = 0;
  stralloc d = STRALLOC_ZERO, relay = STRALLOC_ZERO;
  for (i = 0; i < k->ntix; i++) {
    queue_target *t = &a->t[k->tix[i]];
    char const *f[4];
    size_t fl[4];
    char kind = 'T';
    a->running[k->tix[i]] = 0;
    d.len = relay.len = 0;
    if (report_line(&k->out, &p, t->addr, f, fl)) {
      kind = f[0][0];
      if (!stralloc_catb(&relay, f[2], fl[2]) || (!fl[2] && !stralloc_cats(&relay, "-")) ||
          !stralloc_cats(&d, "R=") || !stralloc_cat(&d, &relay) ||
          !stralloc_cats(&d, " smtp; ") || !stralloc_catb(&d, f[3], fl[3]))
        dienomem();
    } else if (!stralloc_cats(&relay, "-") ||
               !stralloc_cats(&d, "R=- x-pillarbox; 4.4.0 no report from smtp-send"))
      dienomem();
    if (!stralloc_0(&d) || !stralloc_0(&relay)) dienomem();
    if (!strcmp(relay.s, "-")) relay.s[0] = 0, relay.len = 1;
    a->dirty = 1;
    if (kind == 'D') {
      t->state = QUEUE_T_DONE;
      setdiag(t, d.s);
      log_delivery(a, t, relay.s[0] ? relay.s : "none", "sent", shown(d.s));
      anyok = 1;
    } else if (kind == 'P') {
      fail_target(a, t, relay.s[0] ? relay.s : "none", d.s);
      anyok = 1;
    } else {
      defer(a, t, relay.s[0] ? relay.s : "none", d.s, d.len - 1);
      anytemp = 1;
    }
  }
  stralloc_free(&d);
  stralloc_free(&relay);
  nremote--;
  if (!k->dom) return;
  k->dom->running--;
  if (anytemp && !anyok) {
    k->dom->fails++;
    k->dom->until = now + retry_delay(&policy, k->dom->fails);
  } else if (anyok)
    k->dom->fails = 0, k->dom->until = 0;
}

static void kid_read(child *k)
{
  char buf[4096];
  for (;;) {
    ssize_t r = read(k->fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) {
      close(k->fd);
      k->fd = -1;
      return;
    }
    if (k->out.len + (size_t)r <= CHILDOUT_MAX && !stralloc_catb(&k->out, buf, (size_t)r))
      dienomem();
  }
}

static void kid_done(unsigned int i)
{
  child *k = &kids[i];
  if (k->fd >= 0) kid_read(k);
  if (k->fd >= 0) { /* a grandchild holds the pipe: do not wait for it */
    close(k->fd);
    k->fd = -1;
  }
  if (k->remote) finish_remote(k);
  else finish_local(k);
  k->a->nrunning--;
  free(k->tix);
  stralloc_free(&k->out);
  kids[i] = kids[--nkids];
}

static void reap(void)
{
  uint32_t h;
  int w, r;
  while ((r = qspawn_reap(&spawner, &h, &w)) > 0) {
    unsigned int i;
    for (i = 0; i < nkids; i++)
      if (!kids[i].exited && kids[i].h == h) {
        kids[i].exited = 1;
        kids[i].wstat = w;
        if (kids[i].fd >= 0) kid_read(&kids[i]);
        break;
      }
  }
  if (r < 0) strerr_diefu1sys(111, "hear from queue-spawn (it is gone)");
}

/* ---- scheduling ---- */

/* a domain lets a target start now: not backed off (or forced), not at its limit */
static int domain_open(active const *a, domain const *d)
{
  return d && (d->until <= now || a->force) && d->running < conc_domain;
}

static int due(active const *a, size_t i, char st)
{
  return a->t[i].state == st && !a->running[i] && a->t[i].next <= now;
}

static void start_for(active *a)
{
  size_t i;
  for (i = 0; i < a->nt && nlocal < conc_local; i++)
    if (due(a, i, QUEUE_T_LOCAL) && start_local(a, i) < 0) {
      a->t[i].next = now + policy.base;
      break;
    }
  for (i = 0; i < a->nt && nremote < conc_remote; i++) { /* remote, grouped by domain */
    size_t tix[REMOTE_BATCH], n = 0, j;
    domain *d;
    if (!due(a, i, QUEUE_T_REMOTE)) continue;
    if (!strrchr(a->t[i].addr, '@') || !strrchr(a->t[i].addr, '@')[1]) {
      fail_target(a, &a->t[i], "none", "x-pillarbox; 5.1.3 bad recipient address");
      continue;
    }
    d = domain_of(a->t[i].addr);
    if (!domain_open(a, d)) continue;
    for (j = i; j < a->nt && n < REMOTE_BATCH; j++)
      if (due(a, j, QUEUE_T_REMOTE) && domain_of(a->t[j].addr) == d) tix[n++] = j;
    if (start_remote(a, d, tix, n) < 0) {
      for (j = 0; j < n; j++) a->t[tix[j]].next = now + policy.base;
      break;
    }
  }
}

/* 1 if a has a target that could start now if there were room */
static int startable(active *a)
{
  size_t i;
  for (i = 0; i < a->nt; i++) {
    if (due(a, i, QUEUE_T_LOCAL)) return 1;
    if (due(a, i, QUEUE_T_REMOTE) && domain_open(a, domain_of(a->t[i].addr))) return 1;
  }
  return 0;
}

/* a target blocked by its domain (backoff, or the per-domain limit) waits for it, so the
 * message leaves the active list and does not hold a place others could use */
static void domain_waits(active *a)
{
  size_t i;
  for (i = 0; i < a->nt; i++) {
    domain *d;
    if (!due(a, i, QUEUE_T_REMOTE)) continue;
    d = domain_of(a->t[i].addr);
    if (!d) a->t[i].next = now + policy.base; /* the domain table is full */
    else if (d->running >= conc_domain) {
      a->t[i].next = now + 1; /* its domain is busy */
      if (a->force) a->keepforce = 1;
    } else if (d->until > now && !a->force)
      a->t[i].next = d->until;
  }
}

static int room(void)
{
  return nlocal < conc_local || nremote < conc_remote;
}

static void schedule(void)
{
  unsigned int i;
  uint32_t s;
  if (stopping) return;
  /* load due messages while there is room */
  while ((s = qindex_top(&ix)) != QINDEX_NONE && SLOT(s).next <= now && nact < active_max &&
         room()) {
    active *a;
    qindex_unqueue(&ix, s);
    if (!load(s)) continue;
    a = act[nact - 1];
    apply_flags(a);
    if (resolve(a) < 0) {
      size_t j;
      for (j = 0; j < a->nt; j++)
        if (a->t[j].state == QUEUE_T_NEW) a->t[j].next = now + policy.base;
    }
    start_for(a);
  }
  /* fill free slots from loaded messages; settle the ones with nothing to do */
  for (i = 0; i < nact;) {
    active *a = act[i];
    if (!a->nrunning || room()) start_for(a);
    if (!a->nrunning && !startable(a)) {
      domain_waits(a);
      settle(i);
      continue;
    }
    i++;
  }
}

/* ---- scanning ---- */

/* calls f(dir, name) for every entry of QDIR/SUB but . and .. */
static void eachfile(char const *sub, void (*f)(char const *, char const *))
{
  stralloc p = STRALLOC_ZERO;
  DIR *d;
  struct dirent *de;
  if (!queue_path(&p, qdir, sub)) dienomem();
  d = opendir(p.s);
  if (!d) {
    if (errno != ENOENT) strerr_warnwu2sys("open ", p.s);
    stralloc_free(&p);
    return;
  }
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) f(p.s, de->d_name);
  }
  if (errno) strerr_warnwu2sys("read ", p.s);
  closedir(d);
  stralloc_free(&p);
}

static int scan_atstart;
static void scan_one(char const *dir, char const *name)
{
  (void)dir;
  if (name[0] == '.') return;
  if (!queue_id_ok(name, strlen(name))) {
    if (scan_atstart) LOG("warning: unexpected file in queue/mess: ", name);
    return;
  }
  known(name, strlen(name));
}

static void scan(int atstart)
{
  scan_atstart = atstart;
  eachfile("mess", &scan_one);
}

static void path2(stralloc *sa, char const *a, char const *b, char const *c)
{
  sa->len = 0;
  if (!stralloc_cats(sa, a) || !stralloc_cats(sa, b) || !stralloc_cats(sa, c) || !stralloc_0(sa))
    dienomem();
}

/* At start: stale tmp/ files, state files without a message, temp state files. */
static void clean_tmp(char const *dir, char const *name)
{
  stralloc f = STRALLOC_ZERO;
  struct stat st;
  path2(&f, dir, "/", name);
  if (name[0] != '.' && lstat(f.s, &st) == 0 && (uint64_t)st.st_mtime + STALE_TMP < now &&
      unlink(f.s) == 0)
    LOG("removed stale tmp/", name);
  stralloc_free(&f);
}

static void clean_state(char const *dir, char const *name)
{
  stralloc f = STRALLOC_ZERO;
  int orphan = 1;
  if (name[0] != '.') {
    path2(&f, qdir, "/mess/", name);
    orphan = access(f.s, F_OK) < 0 && errno == ENOENT;
  }
  path2(&f, dir, "/", name);
  if (orphan) unlink(f.s);
  stralloc_free(&f);
}

static void cleanup(void)
{
  eachfile("tmp", &clean_tmp);
  eachfile("state", &clean_state);
}

/* queue-ctl's requests: ctl/OP.ID files */
static void ctl_one(char const *dir, char const *n)
{
  static char const *const ops[] = {"flush", "delete", "bounce", "requeue", 0};
  static uint32_t const flags[] = {F_FLUSH | F_FORCE, F_DELETE, F_BOUNCE, F_REQUEUE | F_FLUSH};
  stralloc f = STRALLOC_ZERO;
  char const *id = 0;
  uint32_t s;
  unsigned int i;
  if (n[0] == '.') return;
  for (i = 0; ops[i]; i++)
    if (!strncmp(n, ops[i], strlen(ops[i])) && n[strlen(ops[i])] == '.') break;
  path2(&f, dir, "/", n);
  unlink(f.s);
  stralloc_free(&f);
  if (!ops[i]) return;
  id = n + strlen(ops[i]) + 1;
  if (!queue_id_ok(id, strlen(id))) return;
  s = known(id, strlen(id));
  if (s == QINDEX_NONE) return;
  SLOT(s).flags |= flags[i];
  LOG(ops[i], " ", id, " requested");
  if (!(SLOT(s).flags & F_ACTIVE)) push(s, 0);
}

static void ctl(void)
{
  eachfile("ctl", &ctl_one);
}

static void flush_all(void)
{
  uint32_t i;
  for (i = 0; i < ix.nslots; i++)
    if (SLOT(i).flags & QINDEX_USED) {
      SLOT(i).flags |= F_FLUSH;
      if (!(SLOT(i).flags & F_ACTIVE)) push(i, 0);
    }
  for (i = 0; i < ndomains; i++) domains[i].fails = 0, domains[i].until = 0;
  LOG("flush requested");
}

/* ---- configuration ---- */

static void readconfig(void)
{
  stralloc dom = STRALLOC_ZERO;
  int r;
  conc_local = control_uint("concurrency-local", 10);
  conc_remote = control_uint("concurrency-remote", 20);
  conc_domain = control_uint("concurrency-domain", 5);
  policy.base = control_uint("retry-base", 240);
  policy.max = control_uint("retry-max", 14400);
  policy.lifetime = control_uint("queue-lifetime", 432000);
  rescan_every = control_uint("queue-rescan", 60);
  term_wait = control_uint("queue-termwait", 60);
  timeout_local = control_uint("timeout-local", 600);
  timeout_remote = control_uint("timeout-remote", 3600);
  if (!timeout_local) timeout_local = 1;
  if (!timeout_remote) timeout_remote = 1;
  conc_local = conc_local ? conc_local > 1000 ? 1000 : conc_local : 1;
  conc_remote = conc_remote ? conc_remote > 1000 ? 1000 : conc_remote : 1;
  if (!conc_domain) conc_domain = 1;
  if (!policy.base) policy.base = 1;
  if (policy.max < policy.base) policy.max = policy.base;
  if (!rescan_every) rescan_every = 1;
  active_max = (unsigned int)(conc_local + conc_remote) * 2 + 16;
  me.len = 0;
  postmaster.len = 0;
  r = control_readline(&me, "me");
  if (r < 0) strerr_diefu1sys(111, "read control/me");
  if ((!r && !stralloc_cats(&me, "localhost")) || !stralloc_0(&me)) dienomem();
  r = control_readline(&dom, "domains");
  if (r < 0) strerr_diefu1sys(111, "read control/domains");
  if (!stralloc_cats(&postmaster, "postmaster@") ||
      !stralloc_catb(&postmaster, r ? dom.s : me.s, r ? dom.len : me.len - 1) ||
      !stralloc_0(&postmaster))
    dienomem();
  stralloc_free(&dom);
}

/* ---- the event loop ---- */

static int trig = -1, sfd = -1, killed = 0;
static uint64_t nextscan;
static tain stopby;

static void setup(void)
{
  sigset_t set;
  stralloc p = STRALLOC_ZERO;
  readconfig();
  if (!qspawn_init(&spawner)) strerr_dief1x(100, "QUEUE_SPAWNFD: not an open descriptor");
  if (!stralloc_cats(&qdirsa, mailroot()) || !stralloc_cats(&qdirsa, "/queue") ||
      !stralloc_0(&qdirsa))
    dienomem();
  qdir = qdirsa.s;
  if (!queue_init(qdir)) strerr_diefu2sys(111, "set up ", qdir);
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "init the self-pipe");
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGALRM);
  sigaddset(&set, SIGINT);
  if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  if (!queue_path(&p, qdir, "trigger")) dienomem();
  /* O_RDWR: the fifo never reports EOF when the last writer goes away */
  trig = open(p.s, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (trig < 0) strerr_diefu2sys(111, "open ", p.s);
  stralloc_free(&p);
}

static void on_signals(void)
{
  for (;;) {
    int sig = selfpipe_read();
    if (sig <= 0) return;
    if (sig == SIGCHLD) reap();
    else if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
      char nb[UINT64_FMT];
      fmtu(nb, nkids);
      LOG("stopping: waiting for ", nb, " deliveries");
      stopping = 1;
      tain_addsec_g(&stopby, (int)term_wait);
    } else if (sig == SIGHUP) {
      readconfig();
      lookup_close();
      nextscan = now;
    } else if (sig == SIGALRM)
      flush_all();
  }
}

static void on_trigger(void)
{
  static stralloc line = STRALLOC_ZERO;
  char buf[8192];
  size_t total = 0;
  for (;;) {
    ssize_t k = read(trig, buf, sizeof buf);
    size_t j;
    if (k <= 0) break;
    total += (size_t)k;
    for (j = 0; j < (size_t)k; j++) {
      if (buf[j] != '\n') {
        if (line.len < QUEUE_ID_MAX + 8 && !stralloc_catb(&line, buf + j, 1)) dienomem();
        continue;
      }
      if (line.len == 6 && !memcmp(line.s, "!flush", 6)) flush_all();
      else if (line.len == 4 && !memcmp(line.s, "!ctl", 4)) ctl();
      else if (line.len == 5 && !memcmp(line.s, "!scan", 5)) nextscan = now;
      else known(line.s, line.len);
      line.len = 0;
    }
  }
  if (total >= 60000) nextscan = now; /* the fifo may have overflowed: look for ourselves */
}

/* children past their time are killed; the ones that ended are recorded */
static void on_children(void)
{
  unsigned int i;
  for (i = 0; i < nkids; i++)
    if (!kids[i].exited && !kids[i].timedout && kids[i].killat <= now) {
      kids[i].timedout = 1;
      qspawn_kill(&spawner, kids[i].h, SIGKILL);
      LOG("warning ", idof(kids[i].a), ": ",
          kids[i].remote ? QSPAWN_REMOTE_PROG : QSPAWN_LOCAL_PROG, " timed out, killed");
    }
  for (i = 0; i < nkids;)
    if (kids[i].exited) kid_done(i);
    else i++;
}

/* while stopping: signal what still runs past the wait, record what finished */
static void on_stopping(void)
{
  unsigned int i;
  tain_now_g();
  if (nkids && !tain_less(&STAMP, &stopby)) {
    for (i = 0; i < nkids; i++) qspawn_kill(&spawner, kids[i].h, killed ? SIGKILL : SIGTERM);
    tain_addsec_g(&stopby, 5);
    LOG(killed ? "stopping: deliveries still running, sent them SIGKILL"
               : "stopping: deliveries still running, sent them SIGTERM");
    killed = 1;
  }
  for (i = 0; i < nact;)
    if (!act[i]->nrunning) settle(i);
    else i++;
}

/* when to wake up next */
static void deadline_at(tain *deadline)
{
  uint64_t wake = nextscan;
  uint32_t top = qindex_top(&ix);
  unsigned int i;
  if (top != QINDEX_NONE && SLOT(top).next < wake && nact < active_max) wake = SLOT(top).next;
  for (i = 0; i < nkids; i++)
    if (!kids[i].exited && !kids[i].timedout && kids[i].killat < wake) wake = kids[i].killat;
  tain_now_g();
  if (wake > now) tain_addsec_g(deadline, (int)(wake - now > 86400 ? 86400 : wake - now));
  else if (top != QINDEX_NONE && SLOT(top).next <= now && nact < active_max && !room())
    tain_addsec_g(deadline, 1); /* due but no room: wait for a child */
  else
    *deadline = STAMP;
  if (stopping && tain_less(&stopby, deadline)) *deadline = stopby;
}

/* one turn of the loop: 0 when it is time to exit */
static int turn(void)
{
  iopause_fd x[3 + KIDS_POLL_MAX];
  unsigned int n = 0, i, map[KIDS_POLL_MAX];
  tain deadline;
  now = (uint64_t)time(0);
  if (stopping && !nkids) return 0;
  deadline_at(&deadline);
  x[n].fd = sfd, x[n++].events = IOPAUSE_READ;
  x[n].fd = trig, x[n++].events = IOPAUSE_READ;
  x[n].fd = spawner.fd, x[n++].events = spawner.fd >= 0 ? IOPAUSE_READ : 0;
  for (i = 0; i < nkids && n < 3 + KIDS_POLL_MAX; i++)
    if (kids[i].fd >= 0) {
      map[n - 3] = i;
      x[n].fd = kids[i].fd;
      x[n++].events = IOPAUSE_READ;
    }
  if (iopause_g(x, n, &deadline) < 0) {
    if (errno == EINTR) return 1;
    strerr_diefu1sys(111, "iopause");
  }
  now = (uint64_t)time(0);
  for (i = 3; i < n; i++)
    if (x[i].revents) kid_read(&kids[map[i - 3]]);
  if (x[0].revents) on_signals();
  if (x[2].revents) reap();
  if (x[1].revents) on_trigger();
  on_children();
  if (stopping) {
    on_stopping();
    return 1;
  }
  if (now >= nextscan) {
    scan(0);
    ctl();
    nextscan = now + rescan_every;
  }
  schedule();
  return 1;
}

int main(int argc, char const *const *argv)
{
  char nb[UINT64_FMT];
  unsigned int i;
  (void)argv;
  if (argc > 1) strerr_dieusage(100, USAGE);
  setup();
  tain_now_set_stopwatch_g();
  now = (uint64_t)time(0);
  scan(1);
  fmtu(nb, ix.count);
  LOG("start queued=", nb, spawner.fd >= 0 ? " spawner=queue-spawn" : " spawner=direct");
  ctl();
  nextscan = now + rescan_every;
  schedule();
  cleanup();
  while (turn())
    ;
  for (i = 0; i < nact;) settle(i); /* nothing running: records state */
  LOG("stopped");
  return 0;
}
