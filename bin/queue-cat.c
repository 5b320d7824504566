/* queue-cat: print a queued message, as Postfix's `postcat -q` (doc/queue-cat.8).
 *
 *   queue-cat [ -e | -h | -b ] ID
 * Without an option: the envelope (arrival, size, sender, each recipient with its delivery
 * state and last diagnostic), then the message as it is queued. -e: the envelope only;
 * -h: the message's header section only; -b: its body only. Reads the queue, writes nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/buffer.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"
#include "qlog.h"
#include "queue.h"

char const *PROG = "queue-cat";
#define USAGE "queue-cat [ -e | -h | -b ] id"

static void out(char const *s)
{
  if (buffer_puts(buffer_1, s) < 0) strerr_diefu1sys(111, "write to stdout");
}

static void outb(char const *s, size_t n)
{
  if (buffer_put(buffer_1, s, n) < 0) strerr_diefu1sys(111, "write to stdout");
}

static void outu(uint64_t u)
{
  char b[UINT64_FMT];
  outb(b, uint64_fmt(b, u));
}

static void envelope(char const *qdir, char const *id, queue_hdr const *h, stralloc const *env)
{
  queue_target *t = 0;
  size_t n = 0, i;
  int r = queue_state_read(qdir, id, &t, &n);
  if (r < 0 && errno != EPROTO) strerr_diefu2sys(111, "read the state of ", id);
  out("*** ENVELOPE RECORDS ");
  out(id);
  out(" ***\narrival: ");
  outu(h->arrival);
  out("\nsize: ");
  outu(h->msglen);
  out("\nsender: ");
  out(env->s + 1);
  out("\n");
  if (r <= 0) { /* never tried: the envelope's recipients */
    n = 0;
    free(t);
    if (!queue_targets_fromenv(&t, &n, env->s, env->len)) strerr_diefu1sys(111, "allocate");
    r = 1;
  }
  for (i = 0; r > 0 && i < n; i++) {
    out("recipient: ");
    out(queue_env_rcpt(env->s, env->len, t[i].rcpt));
    if (strcmp(t[i].addr, queue_env_rcpt(env->s, env->len, t[i].rcpt))) {
      out(" -> ");
      out(t[i].addr);
    }
    out(" ");
    out(queue_t_name(t[i].state));
    if (t[i].attempts) {
      out(" attempts=");
      outu(t[i].attempts);
    }
    if (t[i].diag[0]) {
      out(" (");
      out(qlog_shown(t[i].diag));
      out(")");
    }
    out("\n");
  }
  queue_targets_free(t, n);
  free(t);
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  stralloc qdir = STRALLOC_ZERO, env = STRALLOC_ZERO;
  queue_hdr h;
  char what = 0;
  char buf[65536];
  int fd, inhead = 1, nl = 1;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "ehb", &l);
    if (opt == -1) break;
    if (opt != 'e' && opt != 'h' && opt != 'b') strerr_dieusage(100, USAGE);
    what = (char)opt;
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc != 1) strerr_dieusage(100, USAGE);
  if (!queue_id_ok(argv[0], strlen(argv[0]))) strerr_dief2x(100, "not a queue id: ", argv[0]);
  if (!mailroot_path(&qdir, "queue")) strerr_diefu1sys(111, "allocate");
  fd = queue_open(qdir.s, argv[0], &h, &env, 0);
  if (fd < 0) {
    if (errno == ENOENT) strerr_dief2x(100, "no such message: ", argv[0]);
    if (errno == EPROTO) strerr_dief2x(100, "corrupt queue file: ", argv[0]);
    strerr_diefu2sys(111, "open queue file ", argv[0]);
  }
  if (!what || what == 'e') envelope(qdir.s, argv[0], &h, &env);
  if (!what) {
    out("*** MESSAGE CONTENTS ");
    out(argv[0]);
    out(" ***\n");
  }
  while (what != 'e') { /* the message, or its header or body (split at the first empty line) */
    ssize_t r = fd_read(fd, buf, sizeof buf), i, from = 0;
    if (r < 0) strerr_diefu2sys(111, "read queue file ", argv[0]);
    if (!r) break;
    for (i = 0; i < r && inhead && what; i++) {
      if (buf[i] == '\n' && nl) {
        if (what == 'h') outb(buf + from, (size_t)(i - from));
        inhead = 0;
        from = i + 1;
        break;
      }
      nl = buf[i] == '\n';
    }
    if (inhead && what == 'h') outb(buf, (size_t)r);
    if (!inhead && what == 'h') break;
    if (!inhead || !what) outb(buf + from, (size_t)(r - from));
  }
  if (!what) out("*** MESSAGE FILE END ***\n");
  if (!buffer_flush(buffer_1)) strerr_diefu1sys(111, "write to stdout");
  close(fd);
  return 0;
}
