/* queue-inject: commit one message to the queue, durably (the qmail-queue interface).
 *
 * Message on fd 0, then the envelope on fd 1 ("F" sender NUL, "T" rcpt NUL ..., NUL).
 * Up to SPILL bytes of message stay in memory and the queue file is written with one write;
 * a larger message is spilled to an anonymous (already unlinked) file in queue/tmp/ and
 * copied behind the envelope. Nothing is visible in queue/mess/ before the file is complete
 * and fsync'ed; exit 0 only after the rename and the fsync of queue/mess/.
 * Exit codes: qmail-queue's (queue.h QX_*, doc/queue-inject.8).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"
#include "queue.h"

char const *PROG = "queue-inject";
#define USAGE "queue-inject < message 1< envelope"

#define CHUNK 65536

static void die(int code, char const *what)
{
  strerr_dief1x(code, what);
}

static void alarmed(int sig)
{
  (void)sig;
  _exit(QX_TIMEOUT);
}

/* the message into q (memory, or a spill file in queue/tmp) */
static void read_message(queue_in *q)
{
  char buf[CHUNK];
  for (;;) {
    int code;
    ssize_t r = read(0, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(QX_READ, "read the message");
    }
    if (!r) break;
    code = queue_in_add(q, buf, (size_t)r);
    if (code == QX_REFUSED) {
      char fmt[UINT64_FMT];
      fmt[uint64_fmt(fmt, q->caps.databytes)] = 0;
      strerr_dief3x(QX_REFUSED, "message refused: larger than databytes (", fmt, " bytes)");
    }
    if (code == QX_NOMEM) die(code, "out of memory");
    if (code == QX_QUEUEDIR) strerr_diefu1sys(code, "create a spill file in queue/tmp");
    if (code) strerr_diefu1sys(code, "write a spill file");
  }
}

/* the envelope: read up to its final NUL, checking records as they complete */
static void read_envelope(stralloc *envsa, unsigned long addrmax, unsigned long rcptmax)
{
  char buf[CHUNK];
  {
    size_t pos = 0, nrcpt = 0;
    size_t envmax = (rcptmax + 1) * (addrmax + 2) + 1;
    int done = 0;
    while (!done) {
      ssize_t r = read(1, buf, sizeof buf);
      if (r < 0) {
        if (errno == EINTR) continue;
        strerr_diefu1sys(QX_READ, "read the envelope");
      }
      if (!r) die(QX_ENVELOPE, "envelope format error: truncated envelope");
      if (!stralloc_catb(envsa, buf, (size_t)r)) die(QX_NOMEM, "out of memory");
      for (;;) {
        char const *z;
        if (pos >= envsa->len) break;
        if (pos && envsa->s[pos] == 0) {
          if (pos + 1 != envsa->len) die(QX_ENVELOPE, "envelope format error: junk after the end");
          done = 1;
          break;
        }
        if (envsa->s[pos] != (pos ? 'T' : 'F'))
          die(QX_ENVELOPE, pos ? "envelope format error: expected a T record"
                               : "envelope format error: no F record");
        z = memchr(envsa->s + pos, 0, envsa->len - pos);
        if (!z) {
          if (envsa->len - pos > addrmax + 1) die(QX_ADDRLONG, "address too long");
          break;
        }
        if ((size_t)(z - envsa->s) - pos - 1 > addrmax) die(QX_ADDRLONG, "address too long");
        if (pos) nrcpt++;
        if (nrcpt > rcptmax) die(QX_REFUSED, "message refused: too many recipients");
        pos = (size_t)(z - envsa->s) + 1;
      }
      if (envsa->len > envmax && !done) die(QX_ENVELOPE, "envelope format error: too long");
    }
  }
}

int main(int argc, char const *const *argv)
{
  stralloc qdir = STRALLOC_ZERO, env = STRALLOC_ZERO, id = STRALLOC_ZERO;
  queue_tx tx = QUEUE_TX_ZERO;
  queue_in q = QUEUE_IN_ZERO;
  char const *bad = 0;
  int code;
  (void)argv;
  if (argc > 1) strerr_dieusage(100, USAGE);
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(QX_BUG, "ignore SIGPIPE");

  if (!stralloc_cats(&qdir, mailroot()) || !stralloc_cats(&qdir, "/queue") || !stralloc_0(&qdir))
    die(QX_NOMEM, "out of memory");
  if (queue_in_init(&q, qdir.s, &bad)) {
    if (errno) strerr_diefu3sys(QX_CONTROL, "read ", "control/", bad);
    strerr_dief3x(QX_CONTROL, "control/", bad, ": not a number");
  }

  if (sig_catch(SIGALRM, &alarmed) < 0) strerr_diefu1sys(QX_BUG, "catch SIGALRM");
  alarm((unsigned int)q.caps.timeout);

  /* QUEUE_IDFD: the id is made and told before the message is read; it will not change */
  {
    char const *x = getenv("QUEUE_IDFD");
    unsigned int fd;
    if (x && *x && uint0_scan(x, &fd)) {
      code = queue_tx_begin(qdir.s, &tx);
      if (code == QX_NOMEM) die(code, "out of memory");
      if (code) strerr_diefu2sys(code, "create a file in ", qdir.s);
      tx.id.s[tx.id.len - 1] = '\n';
      if (allwrite((int)fd, tx.id.s, tx.id.len) != tx.id.len)
        strerr_warnwu1sys("write the queue id to QUEUE_IDFD");
      tx.id.s[tx.id.len - 1] = 0; /* fd stays open: its end of file still means we exited */
    }
  }

  read_message(&q);
  read_envelope(&env, q.caps.addrmax, q.caps.rcptmax);
  alarm(0);

  code = queue_in_commit(&q, tx.id.len ? &tx : 0, env.s, env.len, &id);
  if (code == QX_ADDRLONG) die(code, "address too long");
  if (code == QX_REFUSED) die(code, "message refused: too many recipients");
  if (code == QX_ENVELOPE) die(code, "envelope format error");
  if (code) {
    if (code == QX_WRITE) strerr_dief1sys(code, "unable to write the queue file");
    if (code == QX_NOMEM) die(code, "out of memory");
    strerr_diefu2sys(code, "create a file in ", qdir.s);
  }
  return 0;
}
