/* queue-ctl: act on queued messages (doc/queue-ctl.8).
 *
 *   flush [ID...]   retry now (all messages without an id)
 *   hold ID...      queue-run leaves the message alone (queue/hold/ID)
 *   release ID...   undo hold, and retry now
 *   delete ID...    remove the message without delivering or bouncing it
 *   bounce ID...    fail every pending recipient and bounce to the sender now
 * hold and release act on the queue directly; flush, delete and bounce leave a request in
 * queue/ctl/ and wake queue-run through the trigger fifo (a request made while queue-run is
 * down is applied when it starts).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>

#include "control.h"
#include "queue.h"

char const *PROG = "queue-ctl";
#define USAGE "queue-ctl flush [ id ... ] | hold id ... | release id ... | delete id ... | bounce id ..."

static stralloc qdir = STRALLOC_ZERO;

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

/* tells queue-run; returns 0 if nobody listens */
static int wake(char const *line)
{
  stralloc p = STRALLOC_ZERO;
  int fd;
  path3(&p, "/trigger", "", "");
  fd = open(p.s, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  stralloc_free(&p);
  if (fd < 0) return 0;
  close(fd);
  queue_trigger(qdir.s, line);
  return 1;
}

int main(int argc, char const *const *argv)
{
  stralloc p = STRALLOC_ZERO;
  char const *op;
  int i, needwake = 0;
  if (argc < 2) strerr_dieusage(100, USAGE);
  op = argv[1];
  if (strcmp(op, "flush") && strcmp(op, "hold") && strcmp(op, "release") && strcmp(op, "delete") &&
      strcmp(op, "bounce"))
    strerr_dieusage(100, USAGE);
  if (argc < 3 && strcmp(op, "flush")) strerr_dieusage(100, USAGE);
  if (!stralloc_cats(&qdir, mailroot()) || !stralloc_cats(&qdir, "/queue") || !stralloc_0(&qdir))
    strerr_diefu1sys(111, "allocate");
  if (!queue_init(qdir.s)) strerr_diefu2sys(111, "set up ", qdir.s);

  /* check every id first: all or nothing */
  for (i = 2; i < argc; i++) {
    struct stat st;
    if (!queue_id_ok(argv[i], strlen(argv[i]))) strerr_dief2x(100, "not a queue id: ", argv[i]);
    path3(&p, "/mess/", argv[i], "");
    if (stat(p.s, &st) < 0) {
      if (errno == ENOENT) strerr_dief2x(100, "no such message: ", argv[i]);
      strerr_diefu2sys(111, "stat ", p.s);
    }
  }
  if (argc == 2) { /* flush everything */
    if (!wake("!flush")) strerr_warnw1x("queue-run is not running: nothing to flush");
    return 0;
  }
  for (i = 2; i < argc; i++) {
    char const *id = argv[i];
    if (!strcmp(op, "hold")) {
      path3(&p, "/hold/", id, "");
      touch(p.s);
      continue;
    }
    if (!strcmp(op, "release")) {
      path3(&p, "/hold/", id, "");
      if (unlink(p.s) < 0 && errno != ENOENT) strerr_diefu2sys(111, "remove ", p.s);
      path3(&p, "/ctl/flush.", id, "");
    } else {
      path3(&p, "/ctl/", op, ".");
      p.len--;
      if (!stralloc_cats(&p, id) || !stralloc_0(&p)) strerr_diefu1sys(111, "allocate");
    }
    touch(p.s);
    needwake = 1;
  }
  if (needwake && !wake("!ctl"))
    strerr_warnw1x("queue-run is not running: the request is applied when it starts");
  stralloc_free(&p);
  return 0;
}
