/* queue-run: the scheduler. Reads the queue, delivers, retries, bounces (doc/queue-run.8).
 *
 * In memory, one small slot per queued message (lib/qindex: the id hash and the retry heap);
 * a message's envelope and state are read only when it is due ("loaded"), and at most
 * active_max messages (lib/qconf) are loaded at once, so 100,000 queued messages cost a few MB
 * and the first delivery starts right after the directory scan. The retry schedule is
 * lib/retry, the bounce lib/bounce, the starting of children lib/qspawn (directly, or through
 * the root spawner queue-spawn that runs them under their own uids), the settings lib/qconf,
 * the log lib/qlog.
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
#include "qdomain.h"
#include "qconf.h"
#include "qindex.h"
#include "qlog.h"
#include "qresolve.h"
#include "qspawn.h"
#include "queue.h"
#include "retry.h"

char const *PROG = "queue-run";
#define USAGE "queue-run"

#define CHILDOUT_MAX 262144   /* bytes of a child's report kept */
#define REMOTE_BATCH 100      /* recipients per smtp-send */
#define STALE_TMP 129600      /* 36 h: a tmp/ file this old belongs to a dead injector */
#define KIDS_POLL_MAX 2048    /* report pipes watched at once */

#define dienomem() strerr_diefu1sys(111, "allocate")

/* ---- configuration ---- */

static char const *qdir;
static stralloc qdirsa = STRALLOC_ZERO;
static qconf cf = QCONF_ZERO; /* control/ (lib/qconf) */
static qspawn spawner;

/* ---- the index of queued messages (lib/qindex) and its flags ---- */

#define F_ACTIVE 2  /* loaded, in the active list */
#define F_FLUSH 4   /* queue-ctl flush: every pending target due now */
#define F_DELETE 8
#define F_BOUNCE 16
#define F_REQUEUE 32 /* queue-ctl requeue: resolve the recipients again */
#define F_FORCE 64   /* flush or release by id: try now even if the domain is backed off */
#define F_NOSTATE 128 /* announced at injection, never loaded: it can have no state file */

static qindex ix = QINDEX_ZERO;
#define SLOT(s) (ix.slot[s])

#define push(s, next) qindex_reset(&ix, (s), (next))

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

/* An id just injected (a trigger line, a bounce queue-run made): if it is new to the index,
 * it has no state file yet, and its first load need not look for one */
static void fresh_id(char const *id, size_t len)
{
  char buf[QUEUE_ID_MAX];
  uint32_t s;
  if (!queue_id_ok(id, len)) return;
  memcpy(buf, id, len);
  buf[len] = 0;
  if (qindex_find(&ix, buf) != QINDEX_NONE) return;
  s = known(id, len);
  if (s != QINDEX_NONE) SLOT(s).flags |= F_NOSTATE;
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
  int hasstate;  /* state/ID exists (read at load): to remove with the message */
  int fd;        /* mess/ID as load opened it, at the message: the first delivery takes it */
};

typedef struct child_s child;
struct child_s {
  qspawn_child c; /* handle, report, exit status, timeout (lib/qspawn) */
  active *a;
  int remote;
  size_t *tix; /* targets it delivers */
  size_t ntix;
  qdomain *dom;
};

static active **act;
static unsigned int nact;
static child *kids;
static unsigned int nkids, nlocal, nremote;
static int stopping = 0;
static uint64_t now;

#define idof(a) ((char const *)SLOT((a)->slot).id)

#define fmtu(buf, u) ((buf)[uint64_fmt((buf), (u))] = 0)

static void active_free(active *a)
{
  if (a->fd >= 0) close(a->fd);
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

/* One line per delivery result, as Postfix writes them (lib/qlog) */
static void log_delivery(active const *a, queue_target const *t, char const *relay,
                         char const *status, char const *diag)
{
  char dl[QLOG_DELAY_FMT];
  qlog_delay(dl, idof(a), a->h.arrival);
  QLOG("delivery ", idof(a), " to=<", t->addr, "> orig_to=<",
      queue_env_rcpt(a->env.s, a->env.len, t->rcpt), "> relay=", relay, " delay=", dl,
      " status=", status, " (", diag, ")");
}

static void fail_target(active *a, queue_target *t, char const *relay, char const *diag)
{
  t->state = QUEUE_T_FAILED;
  setdiag(t, diag);
  a->dirty = 1;
  log_delivery(a, t, relay, "bounced", qlog_shown(diag));
}

static void quarantine(char const *id, char const *why)
{
  if (!queue_quarantine(qdir, id)) strerr_warnwu2sys("move to quarantine: ", id);
  QLOG("quarantine ", id, ": ", why);
}

/* Resolves the N targets (lib/qresolve): 0 ok, -1 temporary trouble (they stay N). */
static int resolve(active *a)
{
  size_t i, n = a->nt;
  int r = 0;
  for (i = 0; i < n; i++) {
    int k;
    if (a->t[i].state != QUEUE_T_NEW) continue;
    k = qresolve(&a->t, &a->nt, i);
    if (k == QRESOLVE_NOMEM) dienomem();
    if (k == QRESOLVE_TEMP) {
      strerr_warnwu3sys("look up ", a->t[i].addr, " (will retry)");
      r = -1;
      continue;
    }
    a->dirty = 1;
    if (k == QRESOLVE_FAILED)
      log_delivery(a, &a->t[i], "none", "bounced", qlog_shown(a->t[i].diag));
  }
  if (a->nt > n) { /* targets were added: the running flags must cover them */
    unsigned char *nr = realloc(a->running, a->nt + 1);
    if (!nr) dienomem();
    memset(nr + n, 0, a->nt + 1 - n);
    a->running = nr;
  }
  return r;
}

/* Reads the state of a (or makes one N target per envelope recipient): 1, or 0 (retry). */
static int load_state(active *a)
{
  char const *id = idof(a);
  int r = SLOT(a->slot).flags & F_NOSTATE ? 0 : queue_state_read(qdir, id, &a->t, &a->nt);
  SLOT(a->slot).flags &= ~(uint32_t)F_NOSTATE; /* from now on queue-run may write one */
  a->hasstate = r != 0;
  if (r < 0 && errno == EPROTO) {
    QLOG("warning ", id, ": unreadable state file, every recipient will be tried again");
    r = 0;
  }
  if (r < 0) {
    strerr_warnwu3sys("read state of ", id, " (will retry)");
    return 0;
  }
  if (r == 0) {
    char nb[UINT64_FMT], sb[UINT64_FMT];
    if (!queue_targets_fromenv(&a->t, &a->nt, a->env.s, a->env.len)) dienomem();
    fmtu(nb, a->nt);
    fmtu(sb, a->h.msglen);
    QLOG("new ", id, " from=<", a->sender, "> rcpts=", nb, " size=", sb);
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
  if (queue_held(qdir, id) && !(SLOT(s).flags & (F_DELETE | F_BOUNCE))) {
    push(s, now + cf.rescan);
    return 0;
  }
  a = calloc(1, sizeof *a);
  if (!a) dienomem();
  a->slot = s;
  a->fd = -1;
  fd = queue_open(qdir, id, &a->h, &a->env, 0);
  if (fd < 0) {
    int e = errno;
    active_free(a);
    if (e == EPROTO) quarantine(id, "corrupt or truncated message file");
    if (e == ENOENT || e == EPROTO) qindex_del(&ix, s);
    else {
      errno = e;
      strerr_warnwu3sys("open queue file ", id, " (will retry)");
      push(s, now + cf.policy.base);
    }
    return 0;
  }
  a->fd = fd;
  if (SLOT(s).flags & F_DELETE) {
    active_free(a);
    if (!queue_remove(qdir, id)) strerr_warnwu2sys("remove ", id);
    QLOG("deleted ", id);
    qindex_del(&ix, s);
    return 0;
  }
  a->sender = a->env.s + 1;
  if (!load_state(a)) {
    active_free(a);
    push(s, now + cf.policy.base);
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
    QLOG("requeue ", idof(a), " rcpts=", nb);
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

/* Sends one bounce for every F target of a; marks them B. 1 done, 0 trouble (retry later). */
static int bounce(active *a)
{
  bounce_msg m = {qdir, idof(a), a->h.arrival, now, cf.me.s, 0};
  stralloc nid = STRALLOC_ZERO, to = STRALLOC_ZERO;
  size_t n = 0;
  char nb[UINT64_FMT];
  int r;
  if (!bounce_sender(&to, a->sender, cf.me.s, cf.defdom.s)) dienomem();
  r = bounce_targets(&m, to.s, cf.postmaster.s, a->env.s, a->env.len, a->t, a->nt, &nid, &n);
  if (r > 0) {
    errno = r == QX_NOMEM ? ENOMEM : errno;
    strerr_warnwu2sys("queue a bounce for ", idof(a));
  } else if (r == BOUNCE_DROPPED)
    QLOG("bounce ", idof(a), " dropped: null sender and the postmaster is unreachable");
  else if (r == BOUNCE_SENT) {
    fmtu(nb, n);
    QLOG("bounce ", idof(a), " to=<", m.to, "> rcpts=", nb, " id=", nid.s);
    fresh_id(nid.s, nid.len - 1);
  }
  if (r == BOUNCE_SENT || r == BOUNCE_DROPPED) a->dirty = 1;
  stralloc_free(&nid);
  stralloc_free(&to);
  return r <= 0;
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
    QLOG("deleted ", idof(a));
    drop(ai, 1);
    return;
  }
  if (SLOT(s).flags & (F_FLUSH | F_REQUEUE | F_BOUNCE)) { /* asked for during delivery */
    apply_flags(a);
    if (resolve(a) < 0) next = now + cf.policy.base;
  }
  if (!bounce(a)) next = now + cf.policy.base;
  for (i = 0; i < a->nt; i++) {
    queue_target *t = &a->t[i];
    if (t->state == QUEUE_T_DONE || t->state == QUEUE_T_BOUNCED) continue;
    pending = 1;
    if (t->next < next) next = t->next;
  }
  if (!pending) {
    if (a->hasstate ? queue_remove(qdir, idof(a)) : queue_remove_mess(qdir, idof(a))) {
      QLOG("done ", idof(a));
      drop(ai, 1);
      return;
    }
    strerr_warnwu2sys("remove ", idof(a));
    next = now + cf.policy.base;
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

/* the message for a delivery: load's descriptor for the first one (no second open), then a
 * new open each (every delivery needs its own file offset) */
static int open_message(active *a)
{
  int fd = a->fd;
  if (fd >= 0) {
    a->fd = -1;
    return fd;
  }
  return queue_open_at(qdir, idof(a), a->h.offset);
}

/* Records a delivery (rfd -1: it could not be started, see qspawn_child_init) */
static child *kid_add(uint32_t h, int rfd, active *a, size_t const *tix, size_t n, int remote,
                      char const *prog)
{
  child *k, *nk = realloc(kids, (nkids + 1) * sizeof *nk);
  size_t i;
  if (!nk) dienomem();
  kids = nk;
  k = &kids[nkids++];
  memset(k, 0, sizeof *k);
  if (!qspawn_child_init(&k->c, h, rfd, prog,
                         now + (remote ? cf.timeout_remote : cf.timeout_local)))
    dienomem();
  k->a = a;
  k->remote = remote;
  k->tix = malloc(n * sizeof *k->tix);
  if (!k->tix) dienomem();
  memcpy(k->tix, tix, n * sizeof *tix);
  k->ntix = n;
  for (i = 0; i < n; i++) a->running[tix[i]] = 1;
  a->nrunning++;
  if (remote) nremote++;
  else nlocal++;
  return k;
}

/* Starts a delivery of a's message: 1 started (or recorded as failed to start), 0 a target
 * failed or was deferred at once, -1 the message could not be opened (retry soon). */
static int start_local(active *a, size_t ti)
{
  account acc = ACCOUNT_ZERO;
  queue_target *t = &a->t[ti];
  int r = lookup_account_nohash(t->addr, strlen(t->addr), &acc), msgfd, rfd = -1;
  uint32_t h = 0;
  if (r == 0) fail_target(a, t, "local", "x-pillarbox; 5.1.1 no such user");
  else if (r < 0) {
    r = 0;
    t->attempts++;
    t->next = now + retry_delay(&cf.policy, t->attempts);
    setdiag(t, "x-pillarbox; 4.3.0 account database unreadable");
    a->dirty = 1;
    log_delivery(a, t, "local", "deferred", "4.3.0 account database unreadable");
  } else if ((msgfd = open_message(a)) < 0)
    r = -1;
  else {
    /* the key makes a retry after a crash idempotent: message and target (deliver.h) */
    char key[QUEUE_ID_MAX + 1 + UINT64_FMT];
    size_t kl = strlen(idof(a));
    memcpy(key, idof(a), kl);
    key[kl++] = 'T';
    key[kl + uint64_fmt(key + kl, ti)] = 0;
    if (!qspawn_local(&spawner, msgfd, acc.maildir.s, a->sender, acc.address.s, key,
                      t->attempts, &rfd, &h))
      rfd = -1;
    close(msgfd);
    kid_add(h, rfd, a, &ti, 1, 0, QSPAWN_LOCAL_PROG);
  }
  account_free(&acc);
  return r;
}

static int start_remote(active *a, qdomain *d, size_t *tix, size_t n)
{
  char const **rc = calloc(n + 1, sizeof *rc);
  int msgfd = open_message(a), rfd = -1;
  uint32_t h = 0;
  size_t i;
  child *k;
  if (!rc) dienomem();
  for (i = 0; i < n; i++) rc[i] = a->t[tix[i]].addr;
  if (msgfd >= 0) {
    if (!qspawn_remote(&spawner, msgfd, d->name, a->sender, rc, n, &rfd, &h)) rfd = -1;
    close(msgfd);
    k = kid_add(h, rfd, a, tix, n, 1, QSPAWN_REMOTE_PROG);
    k->dom = d;
    d->running++;
  }
  free(rc);
  return msgfd < 0 ? -1 : 1;
}

/* Temporary failure of target t in a: schedules the retry, or fails it past the lifetime. */
static void defer(active *a, queue_target *t, char const *relay, char const *diag, size_t len)
{
  stralloc d = STRALLOC_ZERO;
  t->attempts++;
  a->dirty = 1;
  if (!queue_target_setdiag(t, diag, len)) dienomem();
  log_delivery(a, t, relay, "deferred", qlog_shown(t->diag));
  if (!retry_expired(&cf.policy, a->h.arrival, now)) {
    t->next = now + retry_delay(&cf.policy, t->attempts);
    return;
  }
  if (!retry_expired_diag(&d, diag, len) || !stralloc_0(&d)) dienomem();
  fail_target(a, t, relay, d.s);
  stralloc_free(&d);
}

static void finish_local(child *k)
{
  active *a = k->a;
  queue_target *t = &a->t[k->tix[0]];
  char const *why;
  size_t wl;
  int code = WIFEXITED(k->c.wstat) ? WEXITSTATUS(k->c.wstat) : -1;
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
  qspawn_lastline(&k->c.out, &why, &wl);
  if (!stralloc_cats(&d, "x-pillarbox; ") || !stralloc_catb(&d, why, wl) ||
      (!wl && !stralloc_cats(&d, k->c.timedout ? "4.4.1 deliver-maildir timed out"
                                 : code < 0    ? "deliver-maildir killed"
                                               : "deliver-maildir failed")) ||
      !stralloc_0(&d))
    dienomem();
  if (code == 100) fail_target(a, t, "local", d.s);
  else defer(a, t, "local", d.s, d.len - 1);
  stralloc_free(&d);
}

static void finish_remote(child *k)
{
  active *a = k->a;
  size_t i, p = 0;
  int anyok = 0, anytemp = 0;
  stralloc d = STRALLOC_ZERO, rl = STRALLOC_ZERO;
  for (i = 0; i < k->ntix; i++) {
    queue_target *t = &a->t[k->tix[i]];
    char const *f[4];
    size_t fl[4];
    char kind = 'T';
    char const *relay = "none";
    a->running[k->tix[i]] = 0;
    a->dirty = 1;
    d.len = rl.len = 0;
    if (qspawn_report_line(&k->c.out, &p, t->addr, f, fl)) {
      kind = f[0][0];
      if (fl[2] && (!stralloc_catb(&rl, f[2], fl[2]) || !stralloc_0(&rl))) dienomem();
      if (fl[2]) relay = rl.s;
      if (!stralloc_cats(&d, "R=") || !stralloc_cats(&d, fl[2] ? relay : "-") ||
          !stralloc_cats(&d, " smtp; ") || !stralloc_catb(&d, f[3], fl[3]))
        dienomem();
    } else if (!stralloc_cats(&d, "R=- x-pillarbox; 4.4.0 no report from smtp-send"))
      dienomem();
    if (!stralloc_0(&d)) dienomem();
    if (kind == 'D') {
      t->state = QUEUE_T_DONE;
      setdiag(t, d.s);
      log_delivery(a, t, relay, "sent", qlog_shown(d.s));
    } else if (kind == 'P')
      fail_target(a, t, relay, d.s);
    else
      defer(a, t, relay, d.s, d.len - 1);
    anyok |= kind != 'T';
    anytemp |= kind == 'T';
  }
  stralloc_free(&d);
  stralloc_free(&rl);
  nremote--;
  if (!k->dom) return;
  k->dom->running--;
  if (anytemp && !anyok) {
    k->dom->fails++;
    k->dom->until = now + retry_delay(&cf.policy, k->dom->fails);
  } else if (anyok)
    k->dom->fails = 0, k->dom->until = 0;
}

static void kid_done(unsigned int i)
{
  child *k = &kids[i];
  if (!qspawn_child_drain(&k->c, CHILDOUT_MAX)) dienomem();
  if (k->remote) finish_remote(k);
  else finish_local(k);
  k->a->nrunning--;
  free(k->tix);
  stralloc_free(&k->c.out);
  kids[i] = kids[--nkids];
}

static void reap(void)
{
  uint32_t h;
  int w, r;
  unsigned int i;
  while ((r = qspawn_reap(&spawner, &h, &w)) > 0)
    for (i = 0; i < nkids; i++)
      if (!kids[i].c.exited && kids[i].c.h == h) {
        kids[i].c.exited = 1;
        kids[i].c.wstat = w;
        break;
      }
  if (r < 0) strerr_diefu1sys(111, "hear from queue-spawn (it is gone)");
}

/* ---- scheduling ---- */

/* a domain lets a target start now: not backed off (or forced), not at its limit */
static int domain_open(active const *a, qdomain const *d)
{
  return d && (d->until <= now || a->force) && d->running < cf.conc_domain;
}

static int due(active const *a, size_t i, char st)
{
  return a->t[i].state == st && !a->running[i] && a->t[i].next <= now;
}

static void start_for(active *a)
{
  size_t i;
  for (i = 0; i < a->nt && nlocal < cf.conc_local; i++)
    if (due(a, i, QUEUE_T_LOCAL) && start_local(a, i) < 0) {
      a->t[i].next = now + cf.policy.base;
      break;
    }
  for (i = 0; i < a->nt && nremote < cf.conc_remote; i++) { /* remote, grouped by qdomain */
    size_t tix[REMOTE_BATCH], n = 0, j;
    qdomain *d;
    if (!due(a, i, QUEUE_T_REMOTE)) continue;
    if (!strrchr(a->t[i].addr, '@') || !strrchr(a->t[i].addr, '@')[1]) {
      fail_target(a, &a->t[i], "none", "x-pillarbox; 5.1.3 bad recipient address");
      continue;
    }
    d = qdomain_of(a->t[i].addr);
    if (!domain_open(a, d)) continue;
    for (j = i; j < a->nt && n < REMOTE_BATCH; j++)
      if (due(a, j, QUEUE_T_REMOTE) && qdomain_of(a->t[j].addr) == d) tix[n++] = j;
    if (start_remote(a, d, tix, n) < 0) {
      for (j = 0; j < n; j++) a->t[tix[j]].next = now + cf.policy.base;
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
    if (due(a, i, QUEUE_T_REMOTE) && domain_open(a, qdomain_of(a->t[i].addr))) return 1;
  }
  return 0;
}

/* a target blocked by its domain (backoff, or the per-domain limit) waits for it, so the
 * message leaves the active list and does not hold a place others could use */
static void domain_waits(active *a)
{
  size_t i;
  for (i = 0; i < a->nt; i++) {
    qdomain *d;
    if (!due(a, i, QUEUE_T_REMOTE)) continue;
    d = qdomain_of(a->t[i].addr);
    if (!d) a->t[i].next = now + cf.policy.base; /* the domain table is full */
    else if (d->running >= cf.conc_domain) {
      a->t[i].next = now + 1; /* its domain is busy */
      if (a->force) a->keepforce = 1;
    } else if (d->until > now && !a->force)
      a->t[i].next = d->until;
  }
}

#define room() (nlocal < cf.conc_local || nremote < cf.conc_remote)

static void schedule(void)
{
  unsigned int i;
  uint32_t s;
  if (stopping) return;
  /* load due messages while there is room */
  while ((s = qindex_top(&ix)) != QINDEX_NONE && SLOT(s).next <= now && nact < cf.active_max &&
         room()) {
    active *a;
    qindex_unqueue(&ix, s);
    if (!load(s)) continue;
    a = act[nact - 1];
    apply_flags(a);
    if (resolve(a) < 0) {
      size_t j;
      for (j = 0; j < a->nt; j++)
        if (a->t[j].state == QUEUE_T_NEW) a->t[j].next = now + cf.policy.base;
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

static void eachfile(char const *sub, void (*f)(char const *, char const *, void *))
{
  if (!queue_each(qdir, sub, f, 0)) strerr_warnwu3sys("read ", qdir, sub);
}

static int scan_atstart;
static void scan_one(char const *dir, char const *name, void *ctx)
{
  (void)ctx;
  (void)dir;
  if (name[0] == '.') return;
  if (!queue_id_ok(name, strlen(name))) {
    if (scan_atstart) QLOG("warning: unexpected file in queue/mess: ", name);
    return;
  }
  known(name, strlen(name));
}

static void scan(int atstart)
{
  scan_atstart = atstart;
  eachfile("mess", &scan_one);
}

static void removed_tmp(char const *path)
{
  QLOG("removed stale ", path);
}

/* queue-ctl's requests: ctl/OP.ID files */
static void ctl_one(char const *dir, char const *n, void *ctx)
{
  static uint32_t const flags[] = {F_FLUSH | F_FORCE, F_DELETE, F_BOUNCE, F_REQUEUE | F_FLUSH};
  stralloc f = STRALLOC_ZERO;
  char const *id;
  int op = queue_ctl_parse(n, &id);
  uint32_t s;
  (void)ctx;
  if (n[0] == '.') return;
  if (!stralloc_cats(&f, dir) || !stralloc_catb(&f, "/", 1) || !stralloc_cats(&f, n) ||
      !stralloc_0(&f))
    dienomem();
  unlink(f.s);
  stralloc_free(&f);
  if (op < 0 || (s = known(id, strlen(id))) == QINDEX_NONE) return;
  SLOT(s).flags |= flags[op];
  QLOG(queue_ctl_ops[op], " ", id, " requested");
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
  qdomain_reset_all();
  QLOG("flush requested");
}

/* ---- the event loop ---- */

static int trig = -1, sfd = -1, killed = 0;
static uint64_t nextscan;
static tain stopby;

static void setup(void)
{
  static int const sigs[] = {SIGCHLD, SIGTERM, SIGHUP, SIGALRM, SIGINT};
  sigset_t set;
  unsigned int i;
  qconf_read(&cf);
  if (!qspawn_init(&spawner)) strerr_dief1x(100, "QUEUE_SPAWNFD: not an open descriptor");
  if (!mailroot_path(&qdirsa, "queue")) dienomem();
  qdir = qdirsa.s;
  if (!queue_init(qdir)) strerr_diefu2sys(111, "set up ", qdir);
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "init the self-pipe");
  sigemptyset(&set);
  for (i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&set, sigs[i]);
  if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  lookup_batch(1); /* the databases are checked once per turn of the loop, not per lookup */
  trig = queue_trigger_open(qdir);
  if (trig < 0) strerr_diefu3sys(111, "open ", qdir, "/trigger");
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
      QLOG("stopping: waiting for ", nb, " deliveries");
      stopping = 1;
      tain_addsec_g(&stopby, (int)cf.termwait);
    } else if (sig == SIGHUP) {
      qconf_read(&cf);
      lookup_close();
      nextscan = now;
    } else if (sig == SIGALRM)
      flush_all();
  }
}

static void on_line(char const *s, size_t len, void *ctx)
{
  (void)ctx;
  if (len == 6 && !memcmp(s, "!flush", 6)) flush_all();
  else if (len == 4 && !memcmp(s, "!ctl", 4)) ctl();
  else if (len == 5 && !memcmp(s, "!scan", 5)) nextscan = now;
  else fresh_id(s, len);
}

static void on_trigger(void)
{
  static stralloc line = STRALLOC_ZERO;
  size_t total = queue_trigger_read(trig, &line, &on_line, 0);
  if (total == (size_t)-1) dienomem();
  if (total >= 60000) nextscan = now; /* the fifo may have overflowed: look for ourselves */
}

/* children past their time are killed; the ones that ended are recorded */
static void on_children(void)
{
  unsigned int i;
  for (i = 0; i < nkids; i++)
    if (!kids[i].c.exited && !kids[i].c.timedout && kids[i].c.killat <= now) {
      kids[i].c.timedout = 1;
      qspawn_kill(&spawner, kids[i].c.h, SIGKILL);
      QLOG("warning ", idof(kids[i].a), ": ",
          kids[i].remote ? QSPAWN_REMOTE_PROG : QSPAWN_LOCAL_PROG, " timed out, killed");
    }
  for (i = 0; i < nkids;)
    if (kids[i].c.exited) kid_done(i);
    else i++;
}

/* while stopping: signal what still runs past the wait, record what finished */
static void on_stopping(void)
{
  unsigned int i;
  tain_now_g();
  if (nkids && !tain_less(&STAMP, &stopby)) {
    for (i = 0; i < nkids; i++) qspawn_kill(&spawner, kids[i].c.h, killed ? SIGKILL : SIGTERM);
    tain_addsec_g(&stopby, 5);
    QLOG(killed ? "stopping: deliveries still running, sent them SIGKILL"
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
  if (top != QINDEX_NONE && SLOT(top).next < wake && nact < cf.active_max) wake = SLOT(top).next;
  for (i = 0; i < nkids; i++)
    if (!kids[i].c.exited && !kids[i].c.timedout && kids[i].c.killat < wake)
      wake = kids[i].c.killat;
  tain_now_g();
  if (wake > now) tain_addsec_g(deadline, (int)(wake - now > 86400 ? 86400 : wake - now));
  else if (top != QINDEX_NONE && SLOT(top).next <= now && nact < cf.active_max && !room())
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
  lookup_batch_next(); /* a rebuilt users.cdb or aliases.cdb is seen from this turn on */
  deadline_at(&deadline);
  x[n].fd = sfd, x[n++].events = IOPAUSE_READ;
  x[n].fd = trig, x[n++].events = IOPAUSE_READ;
  x[n].fd = spawner.fd, x[n++].events = spawner.fd >= 0 ? IOPAUSE_READ : 0;
  for (i = 0; i < nkids && n < 3 + KIDS_POLL_MAX; i++)
    if (kids[i].c.fd >= 0) {
      map[n - 3] = i;
      x[n].fd = kids[i].c.fd;
      x[n++].events = IOPAUSE_READ;
    }
  qlog_flush(); /* before waiting: what this turn did is in the log */
  if (iopause_g(x, n, &deadline) < 0) {
    if (errno == EINTR) return 1;
    strerr_diefu1sys(111, "iopause");
  }
  now = (uint64_t)time(0);
  for (i = 3; i < n; i++)
    if (x[i].revents && !qspawn_readout(&kids[map[i - 3]].c.fd, &kids[map[i - 3]].c.out,
                                        CHILDOUT_MAX))
      dienomem();
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
    nextscan = now + cf.rescan;
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
  QLOG("start queued=", nb, spawner.fd >= 0 ? " spawner=queue-spawn" : " spawner=direct");
  ctl();
  nextscan = now + cf.rescan;
  schedule();
  queue_cleanup(qdir, now - STALE_TMP, &removed_tmp);
  while (turn())
    ;
  for (i = 0; i < nact;) settle(i); /* nothing running: records state */
  QLOG("stopped");
  qlog_flush();
  return 0;
}
