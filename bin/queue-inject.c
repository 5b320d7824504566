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

#define SPILL 65536
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

static unsigned long getlimit(char const *name, unsigned long def)
{
  unsigned long u;
  int r = control_readuint(name, def, &u);
  if (r < 0) strerr_diefu3sys(QX_CONTROL, "read ", "control/", name);
  if (r == 0) strerr_dief3x(QX_CONTROL, "control/", name, ": not a number");
  return u;
}

/* the message, in memory up to SPILL bytes, else in an anonymous file in queue/tmp (*spill) */
static uint64_t read_message(char const *qdir, unsigned long databytes, stralloc *msg, int *spill)
{
  char buf[CHUNK];
  uint64_t msglen = 0;
  for (;;) {
    ssize_t r = read(0, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(QX_READ, "read the message");
    }
    if (!r) break;
    msglen += (uint64_t)r;
    if (msglen > databytes) {
      char fmt[UINT64_FMT];
      fmt[uint64_fmt(fmt, databytes)] = 0;
      strerr_dief3x(QX_REFUSED, "message refused: larger than databytes (", fmt, " bytes)");
    }
    if (*spill < 0 && msg->len + (size_t)r > SPILL) {
      /* too big for memory: move what we have into an anonymous file in queue/tmp */
      unsigned int tries;
      for (tries = 0; *spill < 0 && tries < 16; tries++) {
        stralloc p = STRALLOC_ZERO;
        char num[UINT64_FMT];
        num[uint64_fmt(num, (uint64_t)getpid() * 100 + tries)] = 0;
        if (!stralloc_cats(&p, qdir) || !stralloc_cats(&p, "/tmp/spill.") ||
            !stralloc_cats(&p, num) || !stralloc_0(&p))
          die(QX_NOMEM, "out of memory");
        *spill = open(p.s, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (*spill < 0 && errno == ENOENT && queue_init(qdir))
          *spill = open(p.s, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (*spill >= 0) unlink(p.s);
        else if (errno != EEXIST) strerr_diefu2sys(QX_QUEUEDIR, "create ", p.s);
        stralloc_free(&p);
      }
      if (*spill < 0) strerr_diefu1sys(QX_QUEUEDIR, "create a spill file");
      if (allwrite(*spill, msg->s, msg->len) != msg->len)
        strerr_diefu1sys(QX_WRITE, "write a spill file");
      stralloc_free(msg);
    }
    if (*spill >= 0) {
      if (allwrite(*spill, buf, (size_t)r) != (size_t)r)
        strerr_diefu1sys(QX_WRITE, "write a spill file");
    } else if (!stralloc_catb(msg, buf, (size_t)r))
      die(QX_NOMEM, "out of memory");
  }
  return msglen;
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
  stralloc qdir = STRALLOC_ZERO, msg = STRALLOC_ZERO, env = STRALLOC_ZERO, id = STRALLOC_ZERO;
  queue_tx tx = QUEUE_TX_ZERO;
  int announced = 0;
  unsigned long databytes, addrmax, rcptmax, timeout;
  uint64_t msglen = 0;
  int spill = -1, code;
  (void)argv;
  if (argc > 1) strerr_dieusage(100, USAGE);
  if (sig_altignore(SIGPIPE) < 0) strerr_diefu1sys(QX_BUG, "ignore SIGPIPE");

  databytes = getlimit("databytes", QUEUE_DATABYTES);
  addrmax = getlimit("queue-addrmax", QUEUE_ADDR_MAX);
  rcptmax = getlimit("queue-rcptmax", QUEUE_RCPT_MAX);
  timeout = getlimit("queue-timeout", 86400);
  if (!databytes) databytes = QUEUE_DATABYTES;
  if (!addrmax || addrmax > 4096) addrmax = 4096;
  if (!rcptmax || rcptmax > QUEUE_RCPT_HARDMAX) rcptmax = QUEUE_RCPT_HARDMAX;
  if (!timeout || timeout > 86400 * 7) timeout = 86400;
  if (!stralloc_cats(&qdir, mailroot()) || !stralloc_cats(&qdir, "/queue") || !stralloc_0(&qdir))
    die(QX_NOMEM, "out of memory");

  if (sig_catch(SIGALRM, &alarmed) < 0) strerr_diefu1sys(QX_BUG, "catch SIGALRM");
  alarm((unsigned int)timeout);

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
      announced = 1;
    }
  }

  msglen = read_message(qdir.s, databytes, &msg, &spill);
  read_envelope(&env, addrmax, rcptmax);
  {
    queue_env e;
    code = queue_env_parse(env.s, env.len, addrmax, rcptmax, &e);
    if (code == QX_ADDRLONG) die(code, "address too long");
    if (code == QX_REFUSED) die(code, "message refused: too many recipients");
    if (code) die(code, "envelope format error");
  }
  alarm(0);

  if (announced) code = queue_tx_commit(qdir.s, &tx, env.s, env.len, msg.s, msg.len, spill, msglen);
  else if (spill >= 0) code = queue_inject_fd(qdir.s, env.s, env.len, spill, msglen, &id);
  else code = queue_inject_mem(qdir.s, env.s, env.len, msg.s, msg.len, &id);
  if (code) {
    if (code == QX_WRITE) strerr_dief1sys(code, "unable to write the queue file");
    if (code == QX_NOMEM) die(code, "out of memory");
    strerr_diefu2sys(code, "create a file in ", qdir.s);
  }
  return 0;
}
