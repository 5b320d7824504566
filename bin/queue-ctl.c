/* queue-ctl: act on queued messages (doc/queue-ctl.8).
 *
 *   queue-ctl [ -d DOMAIN ] OP [ ID... | ALL ]
 *   flush     retry now, even when the domain is backed off (no id: everything, and every
 *             domain's backoff is forgotten)
 *   hold      queue-run leaves the message alone (queue/hold/ID)
 *   release   undo hold, and retry now
 *   delete    remove the message without delivering or bouncing it
 *   bounce    fail every pending recipient and bounce to the sender now
 *   requeue   resolve the pending recipients again (after an alias change; postsuper -r)
 * ALL is every queued message; -d DOMAIN every message with a recipient at DOMAIN not yet
 * delivered. hold and release act on the queue directly; the others leave a request in
 * queue/ctl/ and wake queue-run; when queue-run is not running, delete, bounce and requeue
 * are also applied to the files at once (the request then finds nothing left to do).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/buffer.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"
#include "queue.h"

char const *PROG = "queue-ctl";
#define USAGE "queue-ctl [ -d domain ] flush|hold|release|delete|bounce|requeue [ id ... | ALL ]"

static stralloc qdir = STRALLOC_ZERO;
static char const *domain = 0;
static int running;

static void path3(stralloc *sa, char const *a, char const *b, char const *c)
{
  sa->len = 0;
  if (!stralloc_cats(sa, qdir.s) || !stralloc_cats(sa, a) || !stralloc_cats(sa, b) ||
      !stralloc_cats(sa, c) || !stralloc_0(sa))
    strerr_diefu1sys(111, "allocate");
}

static void touch(char const *p)
{
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) strerr_diefu2sys(111, "create ", p);
  if (close(fd) < 0) strerr_diefu2sys(111, "close ", p);
}

/* 1 if queue-run has the trigger fifo open (a writer can open it without blocking) */
static int queue_run_is_running(void)
{
  stralloc p = STRALLOC_ZERO;
  int fd;
  path3(&p, "/trigger", "", "");
  fd = open(p.s, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  stralloc_free(&p);
  if (fd < 0) return 0;
  close(fd);
  return 1;
}

/* 1 if addr's domain is `domain` */
static int indomain(char const *addr)
{
  char const *at = strrchr(addr, '@');
  return at && !strcasecmp(at + 1, domain);
}

/* 1 if message id has a recipient at `domain` not yet delivered (state, else envelope) */
static int matches(char const *id)
{
  queue_hdr h;
  stralloc env = STRALLOC_ZERO;
  queue_target *t = 0;
  size_t n = 0, i;
  int fd = queue_open(qdir.s, id, &h, &env, 0), r = 0;
  if (fd < 0) {
    stralloc_free(&env);
    return 0; /* gone meanwhile, or corrupt: not selected */
  }
  close(fd);
  if (queue_state_read(qdir.s, id, &t, &n) <= 0 &&
      !queue_targets_fromenv(&t, &n, env.s, env.len))
    strerr_diefu1sys(111, "allocate");
  for (i = 0; i < n && !r; i++)
    if (t[i].state != QUEUE_T_DONE && t[i].state != QUEUE_T_BOUNCED)
      r = indomain(t[i].addr) || indomain(queue_env_rcpt(env.s, env.len, t[i].rcpt));
  queue_targets_free(t, n);
  free(t);
  stralloc_free(&env);
  return r;
}

static void collect(char const *dir, char const *name, void *ctx)
{
  stralloc *ids = ctx;
  (void)dir;
  if (!queue_id_ok(name, strlen(name))) return;
  if (domain && !matches(name)) return;
  if (!stralloc_cats(ids, name) || !stralloc_0(ids)) strerr_diefu1sys(111, "allocate");
}

/* without queue-run: bounce or requeue applied to the state file itself */
static void edit_state(int op, char const *id)
{
  queue_hdr h;
  stralloc env = STRALLOC_ZERO;
  queue_target *t = 0;
  size_t n = 0;
  int fd = queue_open(qdir.s, id, &h, &env, 0), r;
  if (fd < 0) {
    if (errno == ENOENT) return;
    strerr_diefu2sys(111, "open queue file ", id);
  }
  close(fd);
  r = queue_state_read(qdir.s, id, &t, &n);
  if (r < 0 && errno != EPROTO) strerr_diefu2sys(111, "read the state of ", id);
  if (r <= 0 && !queue_targets_fromenv(&t, &n, env.s, env.len))
    strerr_diefu1sys(111, "allocate");
  if (op == QUEUE_CTL_BOUNCE)
    r = queue_targets_return(t, n, 0, "x-pillarbox; 5.0.0 returned by the postmaster") !=
        (size_t)-1;
  else
    r = queue_targets_requeue(&t, &n, env.s, env.len) >= 0;
  if (!r) strerr_diefu1sys(111, "allocate");
  if (!queue_state_write(qdir.s, id, t, n, 1)) strerr_diefu2sys(111, "write the state of ", id);
  queue_targets_free(t, n);
  free(t);
  stralloc_free(&env);
}

static void act(char const *op, char const *id)
{
  stralloc p = STRALLOC_ZERO;
  int k;
  if (!strcmp(op, "hold")) {
    path3(&p, "/hold/", id, "");
    touch(p.s);
    stralloc_free(&p);
    return;
  }
  if (!strcmp(op, "release")) {
    path3(&p, "/hold/", id, "");
    if (unlink(p.s) < 0 && errno != ENOENT) strerr_diefu2sys(111, "remove ", p.s);
    op = "flush";
  }
  path3(&p, "/ctl/", op, ".");
  p.len--;
  if (!stralloc_cats(&p, id) || !stralloc_0(&p)) strerr_diefu1sys(111, "allocate");
  touch(p.s);
  stralloc_free(&p);
  if (running) return;
  for (k = 0; queue_ctl_ops[k] && strcmp(queue_ctl_ops[k], op); k++)
    ;
  if (k == QUEUE_CTL_DELETE) {
    if (!queue_remove(qdir.s, id) && errno != ENOENT) strerr_diefu2sys(111, "remove ", id);
    path3(&p, "/hold/", id, "");
    unlink(p.s);
    stralloc_free(&p);
  } else if (k == QUEUE_CTL_BOUNCE || k == QUEUE_CTL_REQUEUE)
    edit_state(k, id);
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  stralloc p = STRALLOC_ZERO, ids = STRALLOC_ZERO;
  char const *op;
  size_t pos, count = 0;
  int i, all = 0;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "d:", &l);
    if (opt == -1) break;
    if (opt != 'd' || !*l.arg) strerr_dieusage(100, USAGE);
    domain = l.arg;
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc < 1) strerr_dieusage(100, USAGE);
  op = *argv;
  { /* options may follow the operation too: queue-ctl delete -d DOMAIN */
    subgetopt m = SUBGETOPT_ZERO;
    for (;;) {
      int opt = subgetopt_r(argc, argv, "d:", &m);
      if (opt == -1) break;
      if (opt != 'd' || !*m.arg) strerr_dieusage(100, USAGE);
      domain = m.arg;
    }
    argc -= m.ind;
    argv += m.ind;
  }
  {
    static char const *const ops[] = {"flush", "hold", "release", "delete", "bounce", "requeue", 0};
    for (i = 0; ops[i] && strcmp(ops[i], op); i++)
      ;
    if (!ops[i]) strerr_dieusage(100, USAGE);
  }
  all = argc == 1 && !strcmp(argv[0], "ALL");
  if (!argc && strcmp(op, "flush") && !domain) strerr_dieusage(100, USAGE);
  if (!mailroot_path(&qdir, "queue")) strerr_diefu1sys(111, "allocate");
  if (!queue_init(qdir.s)) strerr_diefu2sys(111, "set up ", qdir.s);
  running = queue_run_is_running();

  if (all || domain) { /* the selection, made once */
    if (argc && !all) strerr_dief1x(100, "-d DOMAIN takes no ids (or ALL)");
    if (!queue_each(qdir.s, "mess", &collect, &ids)) strerr_diefu2sys(111, "read ", qdir.s);
  } else if (!argc) { /* flush everything */
    if (!running) strerr_warnw1x("queue-run is not running: nothing to flush");
    else queue_trigger(qdir.s, "!flush");
    return 0;
  } else
    for (i = 0; i < argc; i++) { /* check every id first: all or nothing */
      struct stat st;
      if (!queue_id_ok(argv[i], strlen(argv[i]))) strerr_dief2x(100, "not a queue id: ", argv[i]);
      path3(&p, "/mess/", argv[i], "");
      if (stat(p.s, &st) < 0) {
        if (errno == ENOENT) strerr_dief2x(100, "no such message: ", argv[i]);
        strerr_diefu2sys(111, "stat ", p.s);
      }
      if (!stralloc_cats(&ids, argv[i]) || !stralloc_0(&ids)) strerr_diefu1sys(111, "allocate");
    }
  for (pos = 0; pos < ids.len; pos += strlen(ids.s + pos) + 1, count++) act(op, ids.s + pos);
  if (strcmp(op, "hold") && running) queue_trigger(qdir.s, "!ctl");
  if (strcmp(op, "hold") && !running && count && strcmp(op, "delete"))
    strerr_warnw1x("queue-run is not running: the request is applied when it starts");
  if (all || domain) {
    char fmt[SIZE_FMT];
    fmt[size_fmt(fmt, count)] = 0;
    if (buffer_puts(buffer_1, op) < 0 || buffer_puts(buffer_1, ": ") < 0 ||
        buffer_puts(buffer_1, fmt) < 0 ||
        buffer_putsflush(buffer_1, count == 1 ? " message\n" : " messages\n") < 0)
      strerr_diefu1sys(111, "write to stdout");
  }
  stralloc_free(&p);
  stralloc_free(&ids);
  return 0;
}
