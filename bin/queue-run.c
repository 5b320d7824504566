/* queue-run: the scheduler. Reads the queue, delivers, retries, bounces (doc/queue-run.8).
 *
 * In memory, one small entry per queued message (id, next try, heap position) and a hash
 * set of ids; a message's envelope and state are read only when it is due ("loaded"), and at
 * most ACTIVE_MAX messages are loaded at once, so 100,000 queued messages cost a few MB and
 * the first delivery starts right after the directory scan.
 * Event loop: iopause on the self-pipe (SIGCHLD, SIGTERM, SIGHUP, SIGALRM), the trigger fifo
 * and the children's output pipes, with a deadline at the next due message or rescan.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/buffer.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/random.h>
#include <skalibs/selfpipe.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "control.h"
#include "dsn.h"
#include "lookup.h"
#include "queue.h"

char const *PROG = "queue-run";
#define USAGE "queue-run"

#define CHILDOUT_MAX 262144   /* bytes of a child's report kept */
#define REMOTE_BATCH 100      /* recipients per smtp-send */
#define DOMAINS_MAX 4096      /* domains remembered for backoff */
#define STALE_TMP 129600      /* 36 h: a tmp/ file this old belongs to a dead injector */
#define BOUNCE_HEAD_MAX 131072 /* bytes of the original read for the bounce's headers */

/* ---- configuration ---- */

static char const *qdir;
static stralloc qdirsa = STRALLOC_ZERO;
static unsigned long conc_local, conc_remote, conc_domain, retry_base, retry_max, lifetime,
  rescan_every, term_wait, timeout_local, timeout_remote;
static stralloc me = STRALLOC_ZERO, postmaster = STRALLOC_ZERO;
static unsigned int active_max;

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

/* ---- the index of queued messages: slots, a hash set of ids, a heap by next try ---- */

#define F_USED 1
#define F_ACTIVE 2 /* loaded, in the active list */
#define F_FLUSH 4  /* queue-ctl flush: every pending target due now */
#define F_DELETE 8
#define F_BOUNCE 16

typedef struct slot_s slot;
struct slot_s {
  char id[QUEUE_ID_MAX];
  uint64_t next;
  uint32_t heapidx; /* UINT32_MAX: not in the heap */
  uint32_t flags;
};

static slot *slots;
static uint32_t nslots, slotcap, freelist_n, *freelist, freelist_cap;
static uint32_t *hash;
static uint32_t hashcap; /* power of 2; entries hold slot+1, 0 = empty */
static uint32_t hashn;
static uint32_t *heap, heapn, heapcap;

static uint32_t hstr(char const *s)
{
  uint32_t h = 5381;
  while (*s) h = (h * 33) ^ (unsigned char)*s++;
  return h;
}

static void hash_grow(void);

static uint32_t hash_find(char const *id)
{
  uint32_t i = hstr(id) & (hashcap - 1);
  while (hash[i]) {
    if (!strcmp(slots[hash[i] - 1].id, id)) return hash[i];
    i = (i + 1) & (hashcap - 1);
  }
  return 0;
}

static void hash_put(uint32_t s)
{
  uint32_t i;
  if ((hashn + 1) * 2 > hashcap) hash_grow();
  i = hstr(slots[s].id) & (hashcap - 1);
  while (hash[i]) i = (i + 1) & (hashcap - 1);
  hash[i] = s + 1;
  hashn++;
}

static void hash_grow(void)
{
  uint32_t *old = hash, oldcap = hashcap, i;
  hashcap = hashcap ? hashcap * 2 : 1024;
  hash = calloc(hashcap, sizeof *hash);
  if (!hash) strerr_diefu1sys(111, "allocate");
  hashn = 0;
  for (i = 0; i < oldcap; i++)
    if (old[i]) {
      uint32_t j = hstr(slots[old[i] - 1].id) & (hashcap - 1);
      while (hash[j]) j = (j + 1) & (hashcap - 1);
      hash[j] = old[i];
      hashn++;
    }
  free(old);
}

static void hash_del(char const *id)
{
  uint32_t i = hstr(id) & (hashcap - 1), j;
  while (hash[i] && strcmp(slots[hash[i] - 1].id, id)) i = (i + 1) & (hashcap - 1);
  if (!hash[i]) return;
  hash[i] = 0;
  hashn--;
  /* backward shift: re-place the entries of the cluster after i */
  j = (i + 1) & (hashcap - 1);
  while (hash[j]) {
    uint32_t v = hash[j], k;
    hash[j] = 0;
    k = hstr(slots[v - 1].id) & (hashcap - 1);
    while (hash[k]) k = (k + 1) & (hashcap - 1);
    hash[k] = v;
    j = (j + 1) & (hashcap - 1);
  }
}

static int heap_less(uint32_t a, uint32_t b)
{
  return slots[heap[a]].next < slots[heap[b]].next;
}

static void heap_swap(uint32_t a, uint32_t b)
{
  uint32_t t = heap[a];
  heap[a] = heap[b];
  heap[b] = t;
  slots[heap[a]].heapidx = a;
  slots[heap[b]].heapidx = b;
}

static void heap_up(uint32_t i)
{
  while (i && heap_less(i, (i - 1) / 2)) {
    heap_swap(i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(uint32_t i)
{
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < heapn && heap_less(l, m)) m = l;
    if (r < heapn && heap_less(r, m)) m = r;
    if (m == i) return;
    heap_swap(i, m);
    i = m;
  }
}

static void heap_push(uint32_t s, uint64_t next)
{
  if (heapn == heapcap) {
    uint32_t c = heapcap ? heapcap * 2 : 1024;
    uint32_t *h = realloc(heap, c * sizeof *h);
    if (!h) strerr_diefu1sys(111, "allocate");
    heap = h;
    heapcap = c;
  }
  slots[s].next = next;
  heap[heapn] = s;
  slots[s].heapidx = heapn++;
  heap_up(heapn - 1);
}

static void heap_remove(uint32_t s)
{
  uint32_t i = slots[s].heapidx;
  if (i == UINT32_MAX) return;
  heapn--;
  if (i != heapn) {
    heap[i] = heap[heapn];
    slots[heap[i]].heapidx = i;
    heap_down(i);
    heap_up(slots[heap[i]].heapidx);
  }
  slots[s].heapidx = UINT32_MAX;
}

static void heap_reset(uint32_t s, uint64_t next)
{
  heap_remove(s);
  heap_push(s, next);
}

static uint32_t slot_new(char const *id)
{
  uint32_t s;
  if (freelist_n) s = freelist[--freelist_n];
  else {
    if (nslots == slotcap) {
      uint32_t c = slotcap ? slotcap * 2 : 1024;
      slot *n = realloc(slots, c * sizeof *n);
      if (!n) strerr_diefu1sys(111, "allocate");
      slots = n;
      slotcap = c;
    }
    s = nslots++;
  }
  memset(&slots[s], 0, sizeof slots[s]);
  strcpy(slots[s].id, id);
  slots[s].flags = F_USED;
  slots[s].heapidx = UINT32_MAX;
  hash_put(s);
  return s;
}

static void slot_free(uint32_t s)
{
  heap_remove(s);
  hash_del(slots[s].id);
  slots[s].flags = 0;
  if (freelist_n == freelist_cap) {
    uint32_t c = freelist_cap ? freelist_cap * 2 : 256;
    uint32_t *n = realloc(freelist, c * sizeof *n);
    if (!n) strerr_diefu1sys(111, "allocate");
    freelist = n;
    freelist_cap = c;
  }
  freelist[freelist_n++] = s;
}

/* Makes a new id known (due now). */
static void known(char const *id, size_t len)
{
  char buf[QUEUE_ID_MAX];
  if (!queue_id_ok(id, len)) return;
  memcpy(buf, id, len);
  buf[len] = 0;
  if (hash_find(buf)) return;
  heap_push(slot_new(buf), 0);
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
  if (ndomains == DOMAINS_MAX) {
    /* forget a domain with nothing running and no backoff */
    for (i = 0; i < ndomains; i++)
      if (!domains[i].running && !domains[i].fails) break;
    if (i == ndomains) return 0;
  } else {
    /* allocated once: children keep pointers into this table */
    if (!domains) {
      domains = calloc(DOMAINS_MAX, sizeof *domains);
      if (!domains) strerr_diefu1sys(111, "allocate");
    }
    i = ndomains++;
  }
  memset(&domains[i], 0, sizeof domains[i]);
  memcpy(domains[i].name, name, len);
  domains[i].name[len] = 0;
  return &domains[i];
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
  int hasstate;
};

typedef struct child_s child;
struct child_s {
  pid_t pid;
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

static uint64_t nowsec(void)
{
  return (uint64_t)time(0);
}

static char const *idof(active const *a)
{
  return slots[a->slot].id;
}

static void fmtu(char *buf, uint64_t u)
{
  buf[uint64_fmt(buf, u)] = 0;
}

static uint64_t backoff(unsigned int attempts)
{
  uint64_t d = retry_base;
  unsigned int i;
  for (i = 1; i < attempts && d < retry_max; i++) d *= 2;
  if (d > retry_max) d = retry_max;
  d += random_uint32((uint32_t)(d / 4 + 1));
  return d;
}

static void active_free(active *a)
{
  queue_targets_free(a->t, a->nt);
  free(a->t);
  free(a->running);
  stralloc_free(&a->env);
  free(a);
}

static void quarantine(char const *id, char const *why)
{
  stralloc p = STRALLOC_ZERO, q = STRALLOC_ZERO;
  if (stralloc_cats(&p, qdir) && stralloc_cats(&p, "/mess/") && stralloc_cats(&p, id) &&
      stralloc_0(&p) && stralloc_cats(&q, qdir) && stralloc_cats(&q, "/quarantine/") &&
      stralloc_cats(&q, id) && stralloc_0(&q)) {
    if (rename(p.s, q.s) < 0 && errno != ENOENT)
      strerr_warnwu2sys("move to quarantine: ", p.s);
    p.len = 0;
    if (stralloc_cats(&p, qdir) && stralloc_cats(&p, "/state/") && stralloc_cats(&p, id) &&
        stralloc_0(&p))
      unlink(p.s);
  }
  stralloc_free(&p);
  stralloc_free(&q);
  LOG("quarantine ", id, ": ", why);
}

/* Adds targets to a: returns index of the first, or dies on allocation failure. */
static void target_add(active *a, char state, unsigned int rcpt, char const *addr, size_t len,
                       char const *diag)
{
  queue_target *n = realloc(a->t, (a->nt + 1) * sizeof *n);
  if (!n) strerr_diefu1sys(111, "allocate");
  a->t = n;
  memset(&n[a->nt], 0, sizeof n[a->nt]);
  n[a->nt].state = state;
  n[a->nt].rcpt = rcpt;
  n[a->nt].addr = malloc(len + 1);
  if (!n[a->nt].addr) strerr_diefu1sys(111, "allocate");
  memcpy(n[a->nt].addr, addr, len);
  n[a->nt].addr[len] = 0;
  n[a->nt].diag = 0;
  if (!queue_target_setdiag(&n[a->nt], diag, strlen(diag))) strerr_diefu1sys(111, "allocate");
  a->nt++;
}

/* The envelope recipient number i (for bounces and logs). */
static char const *env_rcpt(active const *a, unsigned int i)
{
  size_t pos = (size_t)(a->sender + strlen(a->sender) + 1 - a->env.s);
  char const *r = "";
  size_t rl;
  unsigned int k = 0;
  while (queue_env_next(a->env.s, a->env.len, &pos, &r, &rl)) {
    if (k++ == i) return r;
  }
  return "";
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

/* Resolves N targets through lookup: returns 0 ok, -1 temporary trouble (message deferred). */
static int resolve(active *a)
{
  size_t i, n = a->nt;
  stralloc tg = STRALLOC_ZERO;
  int r = 0;
  for (i = 0; i < n; i++) {
    queue_target *t = &a->t[i];
    int k;
    if (t->state != QUEUE_T_NEW) continue;
    tg.len = 0;
    k = lookup_resolve(t->addr, strlen(t->addr), &tg);
    if (k == LOOKUP_ETEMP) {
      strerr_warnwu3sys("look up ", t->addr, " (will retry)");
      r = -1;
      continue;
    }
    a->dirty = 1;
    if (k == LOOKUP_UNKNOWN) {
      t->state = QUEUE_T_FAILED;
      queue_target_setdiag(t, "x-pillarbox; 5.1.1 no such user", 31);
      LOG("delivery ", idof(a), " ", t->addr, " fail: 5.1.1 no such user");
    } else if (k == LOOKUP_ELOOP) {
      t->state = QUEUE_T_FAILED;
      queue_target_setdiag(t, "x-pillarbox; 5.4.6 alias loop or expansion too large", 52);
      LOG("delivery ", idof(a), " ", t->addr, " fail: 5.4.6 alias loop or expansion too large");
    } else {
      /* the first target replaces the N entry, the others are appended */
      size_t p = 0, first = 1;
      while (p < tg.len) {
        char const *s = tg.s + p;
        size_t l = strlen(s);
        char st = s[0] == 'L' ? QUEUE_T_LOCAL : QUEUE_T_REMOTE;
        if (l >= 2 && duplicate(a, st, s + 1, l - 1)) {
          /* the same mailbox twice (a list and a +tag, say): one copy */
        } else if (l >= 2) {
          if (first) {
            char *nd = malloc(l);
            if (!nd) strerr_diefu1sys(111, "allocate");
            memcpy(nd, s + 1, l - 1);
            nd[l - 1] = 0;
            t = &a->t[i];
            free(t->addr);
            t->addr = nd;
            t->state = st;
            first = 0;
          } else
            target_add(a, st, a->t[i].rcpt, s + 1, l - 1, "");
        }
        p += l + 1;
      }
      if (first && tg.len) { /* every target was a duplicate */
        a->t[i].state = QUEUE_T_DONE;
        queue_target_setdiag(&a->t[i], "duplicate", 9);
      } else if (first) { /* no targets at all: an empty alias */
        a->t[i].state = QUEUE_T_FAILED;
        queue_target_setdiag(&a->t[i], "x-pillarbox; 5.1.1 alias without targets", 40);
      }
    }
  }
  stralloc_free(&tg);
  if (a->nt > n) { /* targets were added: the running flags must cover them */
    unsigned char *nr = realloc(a->running, a->nt + 1);
    if (!nr) strerr_diefu1sys(111, "allocate");
    memset(nr + n, 0, a->nt + 1 - n);
    a->running = nr;
  }
  return r;
}

/* Loads slot s: 1 loaded (in act), 0 not (gone, quarantined, deferred). */
static int load(uint32_t s)
{
  active *a;
  int fd, r;
  char const *id = slots[s].id;
  uint64_t size = 0;
  struct stat st;
  {
    stralloc p = STRALLOC_ZERO;
    int held;
    if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/hold/") || !stralloc_cats(&p, id) ||
        !stralloc_0(&p))
      strerr_diefu1sys(111, "allocate");
    held = stat(p.s, &st) == 0;
    stralloc_free(&p);
    if (held && !(slots[s].flags & (F_DELETE | F_BOUNCE))) {
      heap_push(s, now + rescan_every);
      return 0;
    }
  }
  a = calloc(1, sizeof *a);
  if (!a) strerr_diefu1sys(111, "allocate");
  a->slot = s;
  fd = queue_open(qdir, id, &a->h, &a->env, &size);
  if (fd < 0) {
    int e = errno;
    active_free(a);
    if (e == ENOENT) slot_free(s);
    else if (e == EPROTO) {
      quarantine(id, "corrupt or truncated message file");
      slot_free(s);
    } else {
      errno = e;
      strerr_warnwu3sys("open queue file ", id, " (will retry)");
      heap_push(s, now + retry_base);
    }
    return 0;
  }
  close(fd);
  if (slots[s].flags & F_DELETE) {
    active_free(a);
    if (!queue_remove(qdir, id)) strerr_warnwu2sys("remove ", id);
    LOG("deleted ", id);
    slot_free(s);
    return 0;
  }
  a->sender = a->env.s + 1;
  r = queue_state_read(qdir, id, &a->t, &a->nt);
  if (r < 0 && errno == EPROTO) {
    LOG("warning ", id, ": unreadable state file, every recipient will be tried again");
    r = 0;
  }
  if (r < 0) {
    strerr_warnwu3sys("read state of ", id, " (will retry)");
    active_free(a);
    heap_push(s, now + retry_base);
    return 0;
  }
  if (r == 0) {
    /* new: one N target per envelope recipient */
    size_t pos = (size_t)(a->sender + strlen(a->sender) + 1 - a->env.s), rl;
    char const *rc;
    unsigned int k = 0;
    char nb[UINT64_FMT], sb[UINT64_FMT];
    a->t = 0;
    a->nt = 0;
    while (queue_env_next(a->env.s, a->env.len, &pos, &rc, &rl)) target_add(a, QUEUE_T_NEW, k++, rc, rl, "");
    fmtu(nb, k);
    fmtu(sb, a->h.msglen);
    LOG("new ", id, " from=<", a->sender, "> rcpts=", nb, " size=", sb);
    a->dirty = 1;
  } else
    a->hasstate = 1;
  a->running = calloc(a->nt + 1, 1);
  if (!a->running) strerr_diefu1sys(111, "allocate");
  {
    active **n = realloc(act, (nact + 1) * sizeof *n);
    if (!n) strerr_diefu1sys(111, "allocate");
    act = n;
    act[nact++] = a;
  }
  slots[s].flags |= F_ACTIVE;
  return 1;
}

/* ---- bounces ---- */

static char const *status_of(char const *diag, char *buf, char dflt)
{
  /* the first token that looks like an enhanced status code */
  char const *p = diag;
  while (*p) {
    if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' && p[2] >= '0' && p[2] <= '9') {
      size_t k = 0;
      while (k < 11 && ((p[k] >= '0' && p[k] <= '9') || p[k] == '.')) k++;
      if (p == diag || p[-1] == ' ') {
        memcpy(buf, p, k);
        buf[k] = 0;
        while (k && buf[k - 1] == '.') buf[--k] = 0;
        return buf;
      }
    }
    p++;
  }
  buf[0] = dflt;
  memcpy(buf + 1, ".0.0", 5);
  return buf;
}

/* Sends one bounce for every F target of a; marks them B. 1 done, 0 trouble (retry later). */
static int bounce(active *a)
{
  size_t i, n = 0;
  dsn_rcpt *r;
  char (*stat)[16];
  char **mta;
  stralloc msg = STRALLOC_ZERO, out = STRALLOC_ZERO, env = STRALLOC_ZERO, nid = STRALLOC_ZERO;
  char const *to = a->sender;
  int ok = 0;
  for (i = 0; i < a->nt; i++)
    if (a->t[i].state == QUEUE_T_FAILED) n++;
  if (!n) return 1;
  if (!*a->sender) {
    /* a failed bounce goes to the postmaster; a failed message to the postmaster with a
     * null sender (a double bounce) is dropped */
    int pm = 1;
    for (i = 0; i < a->nt; i++)
      if (a->t[i].state == QUEUE_T_FAILED && strcasecmp(env_rcpt(a, a->t[i].rcpt), postmaster.s))
        pm = 0;
    if (pm || !postmaster.len) {
      for (i = 0; i < a->nt; i++)
        if (a->t[i].state == QUEUE_T_FAILED) a->t[i].state = QUEUE_T_BOUNCED;
      a->dirty = 1;
      LOG("bounce ", idof(a), " dropped: null sender and the postmaster is unreachable");
      return 1;
    }
    to = postmaster.s;
  }
  r = calloc(n, sizeof *r);
  stat = calloc(n, sizeof *stat);
  mta = calloc(n, sizeof *mta);
  if (!r || !stat || !mta) strerr_diefu1sys(111, "allocate");
  n = 0;
  for (i = 0; i < a->nt; i++) {
    queue_target *t = &a->t[i];
    char const *d = t->diag;
    if (t->state != QUEUE_T_FAILED) continue;
    if (!strncmp(d, "R=", 2)) { /* "R=host diagnostic": the remote MTA that answered */
      char const *sp = strchr(d, ' ');
      size_t l = sp ? (size_t)(sp - d - 2) : strlen(d + 2);
      mta[n] = malloc(l + 1);
      if (!mta[n]) strerr_diefu1sys(111, "allocate");
      memcpy(mta[n], d + 2, l);
      mta[n][l] = 0;
      d = sp ? sp + 1 : "";
    }
    r[n].rcpt = env_rcpt(a, t->rcpt);
    r[n].status = status_of(d, stat[n], '5');
    r[n].diagnostic = d;
    r[n].remote_mta = mta[n] && strcmp(mta[n], "-") ? mta[n] : 0;
    r[n].action_delayed = 0;
    n++;
  }
  {
    int fd;
    queue_hdr h;
    stralloc e2 = STRALLOC_ZERO;
    fd = queue_open(qdir, idof(a), &h, &e2, 0);
    stralloc_free(&e2);
    if (fd >= 0) {
      size_t want = h.msglen > BOUNCE_HEAD_MAX ? BOUNCE_HEAD_MAX : (size_t)h.msglen;
      if (stralloc_ready(&msg, want + 1)) msg.len = allread(fd, msg.s, want);
      close(fd);
    }
  }
  {
    dsn_msg m;
    m.me = me.s;
    m.to = to;
    m.queueid = idof(a);
    m.arrival = (time_t)a->h.arrival;
    m.now = (time_t)now;
    m.message = msg.s ? msg.s : "";
    m.messagelen = msg.len;
    if (!dsn_build(&out, &m, r, n)) strerr_diefu1sys(111, "build a bounce");
  }
  /* the queue holds LF line ends */
  {
    size_t j, k = 0;
    for (j = 0; j < out.len; j++)
      if (!(out.s[j] == '\r' && j + 1 < out.len && out.s[j + 1] == '\n')) out.s[k++] = out.s[j];
    out.len = k;
  }
  if (!stralloc_catb(&env, "F\0T", 3) || !stralloc_cats(&env, to) || !stralloc_catb(&env, "\0\0", 2))
    strerr_diefu1sys(111, "allocate");
  {
    int code = queue_inject_mem(qdir, env.s, env.len, out.s, out.len, &nid);
    if (code) {
      errno = code == QX_NOMEM ? ENOMEM : errno;
      strerr_warnwu2sys("queue a bounce for ", idof(a));
    } else {
      char nb[UINT64_FMT];
      fmtu(nb, n);
      LOG("bounce ", idof(a), " to=<", to, "> rcpts=", nb, " id=", nid.s);
      for (i = 0; i < a->nt; i++)
        if (a->t[i].state == QUEUE_T_FAILED) a->t[i].state = QUEUE_T_BOUNCED;
      a->dirty = 1;
      known(nid.s, nid.len - 1);
      ok = 1;
    }
  }
  for (i = 0; i < n; i++) free(mta[i]);
  free(mta);
  free(stat);
  free(r);
  stralloc_free(&msg);
  stralloc_free(&out);
  stralloc_free(&env);
  stralloc_free(&nid);
  return ok;
}

/* queue-ctl bounce: every target not yet delivered (and not running) fails */
static void return_all(active *a)
{
  size_t j;
  for (j = 0; j < a->nt; j++)
    if (!a->running[j] && (a->t[j].state == QUEUE_T_NEW || a->t[j].state == QUEUE_T_LOCAL ||
                           a->t[j].state == QUEUE_T_REMOTE)) {
      a->t[j].state = QUEUE_T_FAILED;
      queue_target_setdiag(&a->t[j], "x-pillarbox; 5.0.0 returned by the postmaster", 45);
      a->dirty = 1;
    }
}

/* ---- settling a message: nothing running, nothing startable now ---- */

static void settle(unsigned int ai)
{
  active *a = act[ai];
  uint32_t s = a->slot;
  size_t i;
  uint64_t next = UINT64_MAX;
  int pending = 0;
  if (slots[s].flags & F_DELETE) {
    if (!queue_remove(qdir, idof(a))) strerr_warnwu2sys("remove ", idof(a));
    LOG("deleted ", idof(a));
    goto gone;
  }
  if (slots[s].flags & F_BOUNCE) return_all(a); /* asked for while it was being delivered */
  if (!bounce(a)) next = now + retry_base;
  for (i = 0; i < a->nt; i++) {
    queue_target *t = &a->t[i];
    if (t->state == QUEUE_T_DONE || t->state == QUEUE_T_BOUNCED) continue;
    pending = 1;
    if (t->next < next) next = t->next;
  }
  if (!pending) {
    if (!queue_remove(qdir, idof(a))) {
      strerr_warnwu2sys("remove ", idof(a));
      next = now + retry_base;
    } else {
      LOG("done ", idof(a));
      goto gone;
    }
  }
  if (a->dirty) {
    if (!queue_state_write(qdir, idof(a), a->t, a->nt, 0)) strerr_warnwu2sys("write state of ", idof(a));
    a->dirty = 0;
  }
  if (next < now) next = now;
  slots[s].flags &= ~(uint32_t)(F_ACTIVE | F_FLUSH | F_BOUNCE);
  active_free(a);
  act[ai] = act[--nact];
  heap_push(s, next);
  return;
gone:
  active_free(a);
  act[ai] = act[--nact];
  slot_free(s);
}

/* ---- children ---- */

static int open_message(active *a)
{
  stralloc p = STRALLOC_ZERO;
  int fd;
  if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/mess/") || !stralloc_cats(&p, idof(a)) ||
      !stralloc_0(&p))
    strerr_diefu1sys(111, "allocate");
  fd = open(p.s, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  stralloc_free(&p);
  if (fd < 0) return -1;
  if (lseek(fd, (off_t)a->h.offset, SEEK_SET) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Forks PROG with argv, fd 0 = msgfd, fd outfd (1 or 2) = a pipe; the other of 1/2 to /dev/null
 * for remote (stderr is inherited). Returns pid, *rfd the read end; -1 on failure. */
static pid_t spawn(char const *const *argv, int msgfd, int outfd, char const *sender,
                   char const *rcpt, int *rfd)
{
  int p[2];
  pid_t pid;
  if (pipe(p) < 0) return -1;
  pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return -1;
  }
  if (!pid) {
    selfpipe_finish();
    if (dup2(msgfd, 0) < 0 || dup2(p[1], outfd) < 0) _exit(111);
    if (outfd == 2) {
      int nul = open("/dev/null", O_WRONLY);
      if (nul < 0 || dup2(nul, 1) < 0) _exit(111);
    }
    if (sender && setenv("SENDER", sender, 1) < 0) _exit(111);
    if (rcpt && setenv("RECIPIENT", rcpt, 1) < 0) _exit(111);
    execvp(argv[0], (char *const *)argv);
    {
      char const *e = strerror(errno);
      if (write(outfd, "unable to run ", 14) < 0 || write(outfd, argv[0], strlen(argv[0])) < 0 ||
          write(outfd, ": ", 2) < 0 || write(outfd, e, strlen(e)) < 0) {
      }
    }
    _exit(111);
  }
  close(p[1]);
  if (ndelay_on(p[0]) < 0 || coe(p[0]) < 0) {
    close(p[0]);
    kill(pid, SIGKILL);
    return pid; /* reaped later; its result is a temporary failure */
  }
  *rfd = p[0];
  return pid;
}

/* Records a started delivery: the child, its report fd, and the targets it works on. */
static child *kid_add(pid_t pid, int rfd, active *a, size_t const *tix, size_t n)
{
  child *k, *nk = realloc(kids, (nkids + 1) * sizeof *nk);
  size_t i;
  if (!nk) strerr_diefu1sys(111, "allocate");
  kids = nk;
  k = &kids[nkids++];
  memset(k, 0, sizeof *k);
  k->pid = pid;
  k->fd = rfd;
  k->a = a;
  k->tix = malloc(n * sizeof *k->tix);
  if (!k->tix) strerr_diefu1sys(111, "allocate");
  memcpy(k->tix, tix, n * sizeof *tix);
  k->ntix = n;
  for (i = 0; i < n; i++) a->running[tix[i]] = 1;
  a->nrunning++;
  return k;
}

static int start_local(active *a, size_t ti)
{
  account acc = ACCOUNT_ZERO;
  queue_target *t = &a->t[ti];
  int r = lookup_account_nohash(t->addr, strlen(t->addr), &acc), msgfd, rfd = -1;
  pid_t pid;
  child *k;
  if (r <= 0) {
    account_free(&acc);
    if (r == 0) {
      t->state = QUEUE_T_FAILED;
      queue_target_setdiag(t, "x-pillarbox; 5.1.1 no such user", 31);
      LOG("delivery ", idof(a), " ", t->addr, " fail: 5.1.1 no such user");
    } else {
      t->attempts++;
      t->next = now + backoff(t->attempts);
      queue_target_setdiag(t, "x-pillarbox; 4.3.0 account database unreadable", 45);
      LOG("delivery ", idof(a), " ", t->addr, " defer: 4.3.0 account database unreadable");
    }
    a->dirty = 1;
    return 0;
  }
  msgfd = open_message(a);
  if (msgfd < 0) {
    account_free(&acc);
    return -1;
  }
  {
    char const *argv[3] = {"deliver-maildir", acc.maildir.s, 0};
    pid = spawn(argv, msgfd, 2, a->sender, acc.address.s, &rfd);
  }
  close(msgfd);
  account_free(&acc);
  if (pid < 0) {
    strerr_warnwu1sys("fork deliver-maildir");
    return -1;
  }
  k = kid_add(pid, rfd, a, &ti, 1);
  k->killat = now + timeout_local;
  nlocal++;
  return 1;
}

static int start_remote(active *a, domain *d, size_t *tix, size_t n)
{
  char const **argv = calloc(n + 4, sizeof *argv);
  int msgfd, rfd = -1;
  pid_t pid;
  size_t i;
  child *k;
  if (!argv) strerr_diefu1sys(111, "allocate");
  argv[0] = "smtp-send";
  argv[1] = d->name;
  argv[2] = *a->sender ? a->sender : "<>";
  for (i = 0; i < n; i++) argv[3 + i] = a->t[tix[i]].addr;
  msgfd = open_message(a);
  if (msgfd < 0) {
    free(argv);
    return -1;
  }
  pid = spawn(argv, msgfd, 1, 0, 0, &rfd);
  close(msgfd);
  free(argv);
  if (pid < 0) {
    strerr_warnwu1sys("fork smtp-send");
    return -1;
  }
  k = kid_add(pid, rfd, a, tix, n);
  k->remote = 1;
  k->dom = d;
  k->killat = now + timeout_remote;
  d->running++;
  nremote++;
  return 1;
}

/* Temporary failure of target t in a: schedules the retry, or fails it past the lifetime. */
static void defer(active *a, queue_target *t, char const *diag, size_t len)
{
  t->attempts++;
  if (now >= a->h.arrival + lifetime) {
    stralloc d = STRALLOC_ZERO;
    t->state = QUEUE_T_FAILED;
    if (!stralloc_cats(&d, "x-pillarbox; 5.4.7 message expired in the queue; last error: ") ||
        !stralloc_catb(&d, diag, len))
      strerr_diefu1sys(111, "allocate");
    if (!strncmp(diag, "R=", 2)) { /* keep the remote MTA in front */
      char const *sp = memchr(diag, ' ', len);
      size_t l = sp ? (size_t)(sp - diag) + 1 : len;
      d.len = 0;
      if (!stralloc_catb(&d, diag, l) ||
          !stralloc_cats(&d, "x-pillarbox; 5.4.7 message expired in the queue; last error: ") ||
          !stralloc_catb(&d, diag + l, len - l))
        strerr_diefu1sys(111, "allocate");
    }
    queue_target_setdiag(t, d.s, d.len);
    stralloc_free(&d);
    LOG("delivery ", idof(a), " ", t->addr, " fail: 5.4.7 message expired in the queue");
  } else {
    t->next = now + backoff(t->attempts);
    queue_target_setdiag(t, diag, len);
  }
}

static void lastline(stralloc *out, char const **s, size_t *len)
{
  size_t e = out->len, b;
  if (!out->s) {
    *s = "";
    *len = 0;
    return;
  }
  while (e && (out->s[e - 1] == '\n' || out->s[e - 1] == '\r' || out->s[e - 1] == ' ')) e--;
  b = e;
  while (b && out->s[b - 1] != '\n') b--;
  *s = out->s + b;
  *len = e - b;
}

static void finish_local(child *k)
{
  active *a = k->a;
  queue_target *t = &a->t[k->tix[0]];
  char const *why;
  size_t wl;
  int code = WIFEXITED(k->wstat) ? WEXITSTATUS(k->wstat) : -1;
  stralloc d = STRALLOC_ZERO;
  lastline(&k->out, &why, &wl);
  /* drop "deliver-maildir: fatal: " */
  {
    char const *c = memchr(why, ':', wl);
    if (c && wl > (size_t)(c - why) + 2 && !strncmp(c, ": fatal: ", 9)) {
      wl -= (size_t)(c + 9 - why);
      why = c + 9;
    }
  }
  a->running[k->tix[0]] = 0;
  a->dirty = 1;
  if (code == 0) {
    t->state = QUEUE_T_DONE;
    queue_target_setdiag(t, "", 0);
    LOG("delivery ", idof(a), " ", t->addr, " ok: delivered");
  } else {
    if (!stralloc_cats(&d, "x-pillarbox; ") || !stralloc_catb(&d, why, wl))
      strerr_diefu1sys(111, "allocate");
    if (!wl && !stralloc_cats(&d, k->timedout ? "4.4.1 deliver-maildir timed out"
                                  : code < 0 ? "deliver-maildir killed" : "deliver-maildir failed"))
      strerr_diefu1sys(111, "allocate");
    if (!stralloc_0(&d)) strerr_diefu1sys(111, "allocate");
    if (code == 100) {
      t->state = QUEUE_T_FAILED;
      queue_target_setdiag(t, d.s, d.len - 1);
      LOG("delivery ", idof(a), " ", t->addr, " fail: ", d.s + 13);
    } else {
      LOG("delivery ", idof(a), " ", t->addr, " defer: ", d.s + 13);
      defer(a, t, d.s, d.len - 1);
    }
  }
  stralloc_free(&d);
  nlocal--;
}

static void finish_remote(child *k)
{
  active *a = k->a;
  size_t i, p = 0, anyok = 0, anytemp = 0;
  stralloc d = STRALLOC_ZERO;
  for (i = 0; i < k->ntix; i++) {
    queue_target *t = &a->t[k->tix[i]];
    char const *line = 0, *f[4];
    size_t fl[4], nf = 0, e;
    char kind = 'T';
    a->running[k->tix[i]] = 0;
    if (p < k->out.len) {
      char const *nl = memchr(k->out.s + p, '\n', k->out.len - p);
      if (nl) {
        size_t q;
        line = k->out.s + p;
        e = (size_t)(nl - line);
        q = 0;
        while (nf < 4) {
          char const *tab = nf < 3 ? memchr(line + q, '\t', e - q) : 0;
          size_t end = tab ? (size_t)(tab - line) : e;
          f[nf] = line + q;
          fl[nf++] = end - q;
          if (!tab) break;
          q = end + 1;
        }
        p = (size_t)(nl - k->out.s) + 1;
      }
    }
    d.len = 0;
    if (line && nf == 4 && fl[0] == 1 && fl[1] == strlen(t->addr) && !memcmp(f[1], t->addr, fl[1]) &&
        (f[0][0] == 'D' || f[0][0] == 'T' || f[0][0] == 'P')) {
      kind = f[0][0];
      if (!stralloc_cats(&d, "R=") || !stralloc_catb(&d, f[2], fl[2] ? fl[2] : 0) ||
          (!fl[2] && !stralloc_cats(&d, "-")) || !stralloc_cats(&d, " smtp; ") ||
          !stralloc_catb(&d, f[3], fl[3]))
        strerr_diefu1sys(111, "allocate");
    } else if (!stralloc_cats(&d, "R=- x-pillarbox; 4.4.0 no report from smtp-send"))
      strerr_diefu1sys(111, "allocate");
    if (!stralloc_0(&d)) strerr_diefu1sys(111, "allocate");
    {
      char const *shown = strchr(d.s, ' ') + 1;
      a->dirty = 1;
      if (kind == 'D') {
        t->state = QUEUE_T_DONE;
        queue_target_setdiag(t, d.s, d.len - 1);
        LOG("delivery ", idof(a), " ", t->addr, " ok: ", shown);
        anyok = 1;
      } else if (kind == 'P') {
        t->state = QUEUE_T_FAILED;
        queue_target_setdiag(t, d.s, d.len - 1);
        LOG("delivery ", idof(a), " ", t->addr, " fail: ", shown);
        anyok = 1;
      } else {
        LOG("delivery ", idof(a), " ", t->addr, " defer: ", shown);
        defer(a, t, d.s, d.len - 1);
        anytemp = 1;
      }
    }
  }
  stralloc_free(&d);
  if (k->dom) {
    k->dom->running--;
    if (anytemp && !anyok) {
      k->dom->fails++;
      k->dom->until = now + backoff(k->dom->fails);
    } else if (anyok) {
      k->dom->fails = 0;
      k->dom->until = 0;
    }
  }
  nremote--;
}

static void kid_done(unsigned int i)
{
  child *k = &kids[i];
  active *a = k->a;
  if (k->remote) finish_remote(k);
  else finish_local(k);
  a->nrunning--;
  if (k->fd >= 0) close(k->fd);
  free(k->tix);
  stralloc_free(&k->out);
  kids[i] = kids[--nkids];
}

static void kid_read(child *k)
{
  char buf[4096];
  for (;;) {
    ssize_t r = read(k->fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      r = 0;
    }
    if (!r) {
      close(k->fd);
      k->fd = -1;
      return;
    }
    if (k->out.len + (size_t)r <= CHILDOUT_MAX && !stralloc_catb(&k->out, buf, (size_t)r))
      strerr_diefu1sys(111, "allocate");
  }
}

static void reap(void)
{
  for (;;) {
    int w;
    unsigned int i;
    pid_t pid = wait_nohang(&w);
    if (pid <= 0) return;
    for (i = 0; i < nkids; i++)
      if (kids[i].pid == pid) {
        kids[i].exited = 1;
        kids[i].wstat = w;
        if (kids[i].fd >= 0) kid_read(&kids[i]);
        break;
      }
  }
}

/* ---- scheduling ---- */

static void start_for(active *a)
{
  size_t i;
  /* local targets */
  for (i = 0; i < a->nt && nlocal < conc_local; i++) {
    queue_target *t = &a->t[i];
    if (t->state != QUEUE_T_LOCAL || a->running[i] || t->next > now) continue;
    if (start_local(a, i) < 0) {
      t->next = now + retry_base;
      break;
    }
  }
  /* remote targets, grouped by domain */
  for (i = 0; i < a->nt && nremote < conc_remote; i++) {
    queue_target *t = &a->t[i];
    char const *at;
    domain *d;
    size_t tix[REMOTE_BATCH], n = 0, j;
    if (t->state != QUEUE_T_REMOTE || a->running[i] || t->next > now) continue;
    at = strrchr(t->addr, '@');
    if (!at || !at[1]) {
      t->state = QUEUE_T_FAILED;
      queue_target_setdiag(t, "x-pillarbox; 5.1.3 bad recipient address", 40);
      a->dirty = 1;
      continue;
    }
    d = domain_get(at + 1, strlen(at + 1));
    if (!d || d->until > now || d->running >= conc_domain) continue;
    for (j = i; j < a->nt && n < REMOTE_BATCH; j++) {
      queue_target *u = &a->t[j];
      char const *at2;
      if (u->state != QUEUE_T_REMOTE || a->running[j] || u->next > now) continue;
      at2 = strrchr(u->addr, '@');
      if (at2 && !strcasecmp(at2 + 1, d->name)) tix[n++] = j;
    }
    if (start_remote(a, d, tix, n) < 0) {
      for (j = 0; j < n; j++) a->t[tix[j]].next = now + retry_base;
      break;
    }
  }
}

/* 1 if a has a target that could start now if there were room */
static int startable(active *a)
{
  size_t i;
  for (i = 0; i < a->nt; i++) {
    queue_target *t = &a->t[i];
    if (a->running[i] || t->next > now) continue;
    if (t->state == QUEUE_T_LOCAL) return 1;
    if (t->state == QUEUE_T_REMOTE) {
      char const *at = strrchr(t->addr, '@');
      domain *d = at ? domain_get(at + 1, strlen(at + 1)) : 0;
      if (d && d->until <= now && d->running < conc_domain) return 1;
    }
  }
  return 0;
}

/* a target blocked by its domain (backoff, or the per-domain limit) waits for it, so the
 * message leaves the active list and does not hold a place others could use */
static void domain_waits(active *a)
{
  size_t i;
  for (i = 0; i < a->nt; i++) {
    queue_target *t = &a->t[i];
    if (t->state == QUEUE_T_REMOTE && !a->running[i] && t->next <= now) {
      char const *at = strrchr(t->addr, '@');
      domain *d = at ? domain_get(at + 1, strlen(at + 1)) : 0;
      if (!d) t->next = now + retry_base; /* the domain table is full */
      else if (d->until > now) t->next = d->until;
      else if (d->running >= conc_domain) t->next = now + 1; /* its domain is busy */
    }
  }
}

static void schedule(void)
{
  unsigned int i;
  if (stopping) return;
  /* load due messages while there is room */
  while (heapn && slots[heap[0]].next <= now && nact < active_max &&
         (nlocal < conc_local || nremote < conc_remote)) {
    uint32_t s = heap[0];
    heap_remove(s);
    if (!load(s)) continue;
    {
      active *a = act[nact - 1];
      if (slots[s].flags & F_FLUSH) {
        size_t j;
        for (j = 0; j < a->nt; j++) a->t[j].next = 0;
      }
      if (slots[s].flags & F_BOUNCE) return_all(a);
      if (resolve(a) < 0) {
        size_t j;
        for (j = 0; j < a->nt; j++)
          if (a->t[j].state == QUEUE_T_NEW) a->t[j].next = now + retry_base;
      }
      start_for(a);
    }
  }
  /* fill free slots from loaded messages; settle the ones with nothing to do */
  for (i = 0; i < nact;) {
    active *a = act[i];
    if (!a->nrunning) start_for(a);
    if (!a->nrunning && !startable(a)) {
      domain_waits(a);
      settle(i);
      continue;
    }
    if (a->nrunning && (nlocal < conc_local || nremote < conc_remote)) start_for(a);
    i++;
  }
}

/* ---- scanning ---- */

static void scan(int atstart)
{
  stralloc p = STRALLOC_ZERO;
  DIR *d;
  struct dirent *de;
  if (!queue_path(&p, qdir, "mess")) strerr_diefu1sys(111, "allocate");
  d = opendir(p.s);
  if (!d) {
    strerr_warnwu2sys("open ", p.s);
    stralloc_free(&p);
    return;
  }
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (de->d_name[0] == '.') continue;
    if (!queue_id_ok(de->d_name, strlen(de->d_name))) {
      if (atstart) LOG("warning: unexpected file in queue/mess: ", de->d_name);
      continue;
    }
    known(de->d_name, strlen(de->d_name));
  }
  if (errno) strerr_warnwu2sys("read ", p.s);
  closedir(d);
  stralloc_free(&p);
}

/* At start: stale tmp/ files, state files without a message, temp state files. */
static void cleanup(void)
{
  stralloc p = STRALLOC_ZERO, f = STRALLOC_ZERO;
  DIR *d;
  struct dirent *de;
  struct stat st;
  if (!queue_path(&p, qdir, "tmp")) strerr_diefu1sys(111, "allocate");
  d = opendir(p.s);
  if (d) {
    while ((de = readdir(d))) {
      if (de->d_name[0] == '.') continue;
      f.len = 0;
      if (!stralloc_cats(&f, p.s) || !stralloc_catb(&f, "/", 1) || !stralloc_cats(&f, de->d_name) ||
          !stralloc_0(&f))
        strerr_diefu1sys(111, "allocate");
      if (lstat(f.s, &st) == 0 && (uint64_t)st.st_mtime + STALE_TMP < now) {
        if (unlink(f.s) == 0) LOG("removed stale tmp/", de->d_name);
      }
    }
    closedir(d);
  }
  if (!queue_path(&p, qdir, "state")) strerr_diefu1sys(111, "allocate");
  d = opendir(p.s);
  if (d) {
    while ((de = readdir(d))) {
      int orphan;
      if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
      f.len = 0;
      if (de->d_name[0] == '.') orphan = 1;
      else {
        if (!stralloc_cats(&f, qdir) || !stralloc_cats(&f, "/mess/") ||
            !stralloc_cats(&f, de->d_name) || !stralloc_0(&f))
          strerr_diefu1sys(111, "allocate");
        orphan = access(f.s, F_OK) < 0 && errno == ENOENT;
      }
      if (!orphan) continue;
      f.len = 0;
      if (!stralloc_cats(&f, p.s) || !stralloc_catb(&f, "/", 1) || !stralloc_cats(&f, de->d_name) ||
          !stralloc_0(&f))
        strerr_diefu1sys(111, "allocate");
      unlink(f.s);
    }
    closedir(d);
  }
  stralloc_free(&p);
  stralloc_free(&f);
}

/* queue-ctl's requests: ctl/OP.ID files */
static void ctl(void)
{
  stralloc p = STRALLOC_ZERO, f = STRALLOC_ZERO;
  DIR *d;
  struct dirent *de;
  if (!queue_path(&p, qdir, "ctl")) strerr_diefu1sys(111, "allocate");
  d = opendir(p.s);
  if (!d) {
    stralloc_free(&p);
    return;
  }
  while ((de = readdir(d))) {
    char const *n = de->d_name, *dot = strchr(n, '.');
    uint32_t flag = 0, s;
    if (n[0] == '.' || !dot) continue;
    if (!strncmp(n, "flush.", 6)) flag = F_FLUSH;
    else if (!strncmp(n, "delete.", 7)) flag = F_DELETE;
    else if (!strncmp(n, "bounce.", 7)) flag = F_BOUNCE;
    f.len = 0;
    if (!stralloc_cats(&f, p.s) || !stralloc_catb(&f, "/", 1) || !stralloc_cats(&f, n) ||
        !stralloc_0(&f))
      strerr_diefu1sys(111, "allocate");
    unlink(f.s);
    if (!flag || !queue_id_ok(dot + 1, strlen(dot + 1))) continue;
    known(dot + 1, strlen(dot + 1));
    s = hash_find(dot + 1);
    if (!s) continue;
    s--;
    slots[s].flags |= flag | F_FLUSH;
    LOG(flag == F_FLUSH ? "flush " : flag == F_DELETE ? "delete " : "bounce ", dot + 1,
        " requested");
    if (!(slots[s].flags & F_ACTIVE)) heap_reset(s, 0);
  }
  closedir(d);
  stralloc_free(&p);
  stralloc_free(&f);
}

static void flush_all(void)
{
  uint32_t i;
  for (i = 0; i < nslots; i++)
    if ((slots[i].flags & F_USED)) {
      slots[i].flags |= F_FLUSH;
      if (!(slots[i].flags & F_ACTIVE)) heap_reset(i, 0);
    }
  for (i = 0; i < ndomains; i++) domains[i].fails = 0, domains[i].until = 0;
  LOG("flush requested");
}

/* ---- main ---- */

static void readconfig(void)
{
  conc_local = control_uint("concurrency-local", 10);
  conc_remote = control_uint("concurrency-remote", 20);
  conc_domain = control_uint("concurrency-domain", 5);
  retry_base = control_uint("retry-base", 240);
  retry_max = control_uint("retry-max", 14400);
  lifetime = control_uint("queue-lifetime", 432000);
  rescan_every = control_uint("queue-rescan", 60);
  term_wait = control_uint("queue-termwait", 60);
  timeout_local = control_uint("timeout-local", 600);
  timeout_remote = control_uint("timeout-remote", 3600);
  if (!timeout_local) timeout_local = 1;
  if (!timeout_remote) timeout_remote = 1;
  if (!conc_local) conc_local = 1;
  if (conc_local > 1000) conc_local = 1000;
  if (!conc_remote) conc_remote = 1;
  if (conc_remote > 1000) conc_remote = 1000;
  if (!conc_domain) conc_domain = 1;
  if (!retry_base) retry_base = 1;
  if (retry_max < retry_base) retry_max = retry_base;
  if (!rescan_every) rescan_every = 1;
  active_max = (unsigned int)(conc_local + conc_remote) * 2 + 16;
  me.len = 0;
  postmaster.len = 0;
  {
    stralloc dom = STRALLOC_ZERO;
    int r = control_readline(&me, "me");
    if (r < 0) strerr_diefu1sys(111, "read control/me");
    if (!r && !stralloc_cats(&me, "localhost")) strerr_diefu1sys(111, "allocate");
    if (!stralloc_0(&me)) strerr_diefu1sys(111, "allocate");
    r = control_readline(&dom, "domains");
    if (r < 0) strerr_diefu1sys(111, "read control/domains");
    if (!stralloc_cats(&postmaster, "postmaster@") ||
        !stralloc_catb(&postmaster, r ? dom.s : me.s, r ? dom.len : me.len - 1) ||
        !stralloc_0(&postmaster))
      strerr_diefu1sys(111, "allocate");
    stralloc_free(&dom);
  }
}

int main(int argc, char const *const *argv)
{
  int trig = -1, sfd, killed = 0;
  uint64_t nextscan;
  tain stopby;
  stralloc line = STRALLOC_ZERO;
  (void)argv;
  if (argc > 1) strerr_dieusage(100, USAGE);
  readconfig();
  if (!stralloc_cats(&qdirsa, mailroot()) || !stralloc_cats(&qdirsa, "/queue") ||
      !stralloc_0(&qdirsa))
    strerr_diefu1sys(111, "allocate");
  qdir = qdirsa.s;
  if (!queue_init(qdir)) strerr_diefu2sys(111, "set up ", qdir);
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(111, "ignore SIGPIPE");
  sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "init the self-pipe");
  {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGALRM);
    sigaddset(&set, SIGINT);
    if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  }
  {
    stralloc p = STRALLOC_ZERO;
    if (!queue_path(&p, qdir, "trigger")) strerr_diefu1sys(111, "allocate");
    /* O_RDWR: the fifo never reports EOF when the last writer goes away */
    trig = open(p.s, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (trig < 0) strerr_diefu2sys(111, "open ", p.s);
    stralloc_free(&p);
  }
  tain_now_set_stopwatch_g();
  now = nowsec();
  hash_grow();
  scan(1);
  {
    char nb[UINT64_FMT];
    fmtu(nb, hashn);
    LOG("start queued=", nb);
  }
  ctl();
  nextscan = now + rescan_every;
  schedule();
  cleanup();

  for (;;) {
    iopause_fd x[2 + 2048];
    unsigned int n = 0, i, map[2048];
    tain deadline;
    uint64_t wake;
    int r;
    now = nowsec();
    if (stopping && !nkids) break;
    wake = nextscan;
    if (heapn && slots[heap[0]].next < wake && nact < active_max) wake = slots[heap[0]].next;
    for (i = 0; i < nkids; i++)
      if (!kids[i].exited && !kids[i].timedout && kids[i].killat < wake) wake = kids[i].killat;
    if (wake <= now) wake = now;
    tain_now_g();
    if (wake > now) tain_addsec_g(&deadline, (int)(wake - now > 86400 ? 86400 : wake - now));
    else deadline = STAMP;
    if (!(wake > now) && heapn && slots[heap[0]].next <= now && nact < active_max &&
        !(nlocal < conc_local || nremote < conc_remote))
      tain_addsec_g(&deadline, 1); /* due but no room: wait for a child */
    if (stopping && tain_less(&stopby, &deadline)) deadline = stopby;
    x[n].fd = sfd;
    x[n++].events = IOPAUSE_READ;
    x[n].fd = trig;
    x[n++].events = IOPAUSE_READ;
    for (i = 0; i < nkids && n < 2 + 2048; i++)
      if (kids[i].fd >= 0) {
        map[n - 2] = i;
        x[n].fd = kids[i].fd;
        x[n++].events = IOPAUSE_READ;
      }
    r = iopause_g(x, n, &deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "iopause");
    }
    now = nowsec();
    for (i = 2; i < n; i++)
      if (x[i].revents) kid_read(&kids[map[i - 2]]);
    if (x[0].revents) {
      for (;;) {
        int sig = selfpipe_read();
        if (sig <= 0) break;
        if (sig == SIGCHLD) reap();
        else if (sig == SIGTERM || sig == SIGINT) {
          if (!stopping) {
            char nb[UINT64_FMT];
            fmtu(nb, nkids);
            LOG("stopping: waiting for ", nb, " deliveries");
            stopping = 1;
            tain_addsec_g(&stopby, (int)term_wait);
          }
        } else if (sig == SIGHUP) {
          readconfig();
          lookup_close();
          nextscan = now;
        } else if (sig == SIGALRM)
          flush_all();
      }
    }
    if (x[1].revents) {
      char buf[8192];
      size_t total = 0;
      for (;;) {
        ssize_t k = read(trig, buf, sizeof buf);
        size_t j;
        if (k <= 0) break;
        total += (size_t)k;
        for (j = 0; j < (size_t)k; j++) {
          if (buf[j] != '\n') {
            if (line.len < QUEUE_ID_MAX + 8 && !stralloc_catb(&line, buf + j, 1))
              strerr_diefu1sys(111, "allocate");
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
    /* children past their time */
    for (i = 0; i < nkids; i++)
      if (!kids[i].exited && !kids[i].timedout && kids[i].killat <= now) {
        char const *what = kids[i].remote ? "smtp-send" : "deliver-maildir";
        kids[i].timedout = 1;
        kill(kids[i].pid, SIGKILL);
        LOG("warning ", idof(kids[i].a), ": ", what, " timed out, killed");
      }
    /* children that exited and whose report is complete */
    for (i = 0; i < nkids;) {
      if (kids[i].exited && kids[i].fd < 0) kid_done(i);
      else if (kids[i].exited) {
        kid_read(&kids[i]);
        if (kids[i].fd >= 0) { /* a grandchild holds the pipe: do not wait for it */
          close(kids[i].fd);
          kids[i].fd = -1;
        }
        kid_done(i);
      } else
        i++;
    }
    if (stopping) {
      tain_now_g();
      if (nkids && !tain_less(&STAMP, &stopby)) {
        for (i = 0; i < nkids; i++) kill(kids[i].pid, killed ? SIGKILL : SIGTERM);
        tain_addsec_g(&stopby, 5);
        LOG(killed ? "stopping: deliveries still running, sent them SIGKILL"
                   : "stopping: deliveries still running, sent them SIGTERM");
        killed = 1;
      }
      /* record what finished */
      for (i = 0; i < nact;) {
        if (!act[i]->nrunning) settle(i);
        else i++;
      }
      continue;
    }
    if (now >= nextscan) {
      scan(0);
      ctl();
      nextscan = now + rescan_every;
    }
    schedule();
  }
  {
    unsigned int i;
    for (i = 0; i < nact;) settle(i); /* nothing running: records state */
  }
  LOG("stopped");
  return 0;
}
