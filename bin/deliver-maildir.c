/* deliver-maildir: deliver one message (fd 0) into one Maildir, durably. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/sgetopt.h>
#include <skalibs/strerr.h>
#include <skalibs/stralloc.h>

#include "control.h"
#include "lookup.h"
#include "maildir.h"
#include "quotastate.h"

#define USAGE "deliver-maildir [ -q quota ] DIR"
char const *PROG = "deliver-maildir";

#define ADDR_MAX 1000       /* SENDER, RECIPIENT: longer is refused (100) */
#define IOBUF 65536

static maildir_tmp t = MAILDIR_TMP_ZERO;
static char const *dir;
static char const *recipient;
static size_t recipientlen;

static char ibuf[IOBUF];
static char obuf[IOBUF];
static size_t olen;
static uint64_t total; /* bytes written to the file */

static void die_abort(int code, char const *s1, char const *s2, int sys)
{
  int e = errno;
  maildir_tmp_abort(&t);
  errno = e;
  if (sys)
    strerr_diefu3sys(code, s1, s2, "");
  else
    strerr_dief2x(code, s1, s2);
}

static void out_flush(void)
{
  if (!olen) return;
  if (allwrite(t.fd, obuf, olen) != olen) die_abort(111, "write to Maildir ", dir, 1);
  total += olen;
  olen = 0;
}

static void out_put(char const *s, size_t n)
{
  while (n) {
    size_t k = IOBUF - olen;
    if (k > n) k = n;
    memcpy(obuf + olen, s, k);
    olen += k;
    s += k;
    n -= k;
    if (olen == IOBUF) out_flush();
  }
}

static maildir_loop lp; /* loop detection over the header section */
static int inheader = 1;

static void loopcheck(void)
{
  if (lp.verdict == MAILDIR_LOOP_DELIVERED)
    die_abort(100, "mail loop: already delivered to ", recipient, 0);
  if (lp.verdict)
    die_abort(100, "mail loop: ", "more than 100 Received: header lines", 0);
}

/* one byte of the LF-converted message, while still in the header section */
static void header_byte(char c)
{
  maildir_loop_feed(&lp, &c, 1);
  loopcheck();
  if (lp.done) inheader = 0;
}

/* copies n bytes of input, turning CRLF into LF; *cr carries a CR across calls */
static void copy(char const *s, size_t n, int *cr)
{
  size_t i = 0;
  if (*cr) {
    *cr = 0;
    if (!n || s[0] != '\n') {
      if (inheader) header_byte('\r');
      out_put("\r", 1);
    }
  }
  while (i < n && inheader) {
    char c = s[i++];
    if (c == '\r') {
      if (i == n) {
        *cr = 1;
        return;
      }
      if (s[i] == '\n') continue;
    }
    header_byte(c);
    out_put(&c, 1);
  }
  while (i < n) { /* body: copy runs between CRs */
    char const *p = memchr(s + i, '\r', n - i);
    size_t k = p ? (size_t)(p - (s + i)) : n - i;
    out_put(s + i, k);
    i += k;
    if (i == n) break;
    i++; /* the CR */
    if (i == n) {
      *cr = 1;
      return;
    }
    if (s[i] != '\n') out_put("\r", 1);
  }
}

/* The usage record smtp-receive reads at RCPT (lib/quotastate), refreshed from maildirsize
 * for accounts with a quota when the instance is known. Advice only: a failure is a warning. */
static void record_usage(void)
{
  if (getenv("MAILROOT") && !quotastate_sync(0, recipient, recipientlen, dir))
    strerr_warnwu2sys("record the quota state of ", recipient);
}

static int badaddr(char const *s, size_t n)
{
  size_t i;
  if (n > ADDR_MAX) return 1;
  for (i = 0; i < n; i++)
    if ((unsigned char)s[i] < 32 || s[i] == 127) return 1;
  return 0;
}

/* The quota check, after the message is in tmp/ (total bytes): dies when it does not fit.
 * qsource 0: the limits of maildirsize itself; else qsize/qcount (and maildirsize follows
 * them). Returns 1 if a quota applies (q filled), else 0. */
static int check_quota(int qsource, uint64_t qsize, uint64_t qcount, unsigned long quotabounce,
                       maildir_quota *qp)
{
  int haveq;
  haveq = qsize || qcount;
  {
    int r = maildir_quota_read(dir, qp);
    if (r < 0) die_abort(111, "read maildirsize in ", dir, 1);
    if (qsource) { /* the limits are given: maildirsize follows them */
      if (!haveq) r = 0;
      else if (!r || qp->maxsize != qsize || qp->maxcount != qcount || qp->stale ||
               qp->filesize > MAILDIR_QUOTA_RECALC_SIZE) {
        if (maildir_quota_recalc(dir, qsize, qcount, qp) < 0)
          die_abort(111, "recompute maildirsize in ", dir, 1);
        r = 2;
      }
    } else if (r) { /* the limits of maildirsize itself */
      haveq = qp->maxsize || qp->maxcount;
      if (haveq && (qp->stale || qp->filesize > MAILDIR_QUOTA_RECALC_SIZE)) {
        if (maildir_quota_recalc(dir, qp->maxsize, qp->maxcount, qp) < 0)
          die_abort(111, "recompute maildirsize in ", dir, 1);
        r = 2;
      }
    }
    if (haveq && !maildir_quota_fits(qp, total, 1)) {
      /* Over: the file may miss deletions by a reader; recompute if it is old. */
      if (r != 2 && qp->mtime + MAILDIR_QUOTA_RECALC_AGE < time(0)) {
        if (maildir_quota_recalc(dir, qp->maxsize, qp->maxcount, qp) < 0)
          die_abort(111, "recompute maildirsize in ", dir, 1);
      }
      if (!maildir_quota_fits(qp, total, 1)) {
        record_usage();
        errno = EDQUOT;
        die_abort(quotabounce ? 100 : 111, "over quota: Maildir ", dir, 0);
      }
    }
  }
  return haveq;
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  char const *quotadef = 0;
  char const *sender;
  uint64_t qsize = 0, qcount = 0;
  unsigned long quotabounce = 0;
  maildir_quota q;
  int haveq = 0;
  int qsource = 0; /* 0: maildirsize, 1: -q, 2: the account in users.cdb */
  stralloc newname = STRALLOC_ZERO;
  struct stat st;
  int cr = 0;

  for (;;) {
    int opt = subgetopt_r(argc, argv, "q:", &l);
    if (opt == -1) break;
    if (opt == 'q')
      quotadef = l.arg;
    else
      strerr_dieusage(100, USAGE);
  }
  argc -= l.ind;
  argv += l.ind;
  if (argc != 1 || !argv[0][0]) strerr_dieusage(100, USAGE);
  dir = argv[0];

  recipient = getenv("RECIPIENT");
  if (!recipient || !recipient[0]) strerr_dief1x(100, "RECIPIENT not set");
  recipientlen = strlen(recipient);
  if (badaddr(recipient, recipientlen)) strerr_dief1x(100, "RECIPIENT: bad address");
  sender = getenv("SENDER");
  if (!sender) sender = "";
  if (badaddr(sender, strlen(sender))) strerr_dief1x(100, "SENDER: bad address");
  if (quotadef) {
    if (quotadef[0] && !maildir_quota_parse(quotadef, strlen(quotadef), &qsize, &qcount))
      strerr_dief2x(100, "bad quota: ", quotadef);
    qsource = 1;
  }
  if (getenv("MAILROOT")) {
    int r = control_readuint("quota-bounce", 0, &quotabounce);
    if (r == 0) strerr_dief1x(100, "control/quota-bounce: not a number");
    if (r < 0) strerr_diefu1sys(111, "read control/quota-bounce");
    if (!qsource) { /* the account's quota, as queue-run delivers for accounts */
      account acc = ACCOUNT_ZERO;
      r = lookup_account_nohash(recipient, recipientlen, &acc);
      if (r < 0) strerr_diefu1sys(111, "read control/users.cdb");
      if (r > 0) {
        qsize = acc.quota;
        qsource = 2;
      }
      account_free(&acc);
    }
  }

  if (stat(dir, &st) < 0) strerr_diefu2sys(111, "find Maildir ", dir);
  if (!S_ISDIR(st.st_mode)) strerr_dief3x(100, "bad Maildir: ", dir, ": not a directory");
  if (maildir_tmp_open(&t, dir) < 0) {
    if (errno == ELOOP)
      strerr_dief3x(111, "bad Maildir: ", dir, ": tmp/ or new/ is a symbolic link");
    strerr_diefu2sys(111, "create a file in Maildir ", dir);
  }

  maildir_loop_init(&lp, recipient, recipientlen);
  out_put("Return-Path: <", 14);
  out_put(sender, strlen(sender));
  out_put(">\nDelivered-To: ", 16);
  out_put(recipient, recipientlen);
  out_put("\n", 1);
  for (;;) {
    ssize_t n = fd_read(0, ibuf, sizeof ibuf);
    if (n < 0) die_abort(111, "read ", "the message", 1);
    if (!n) break;
    copy(ibuf, (size_t)n, &cr);
  }
  if (cr) copy("", 0, &cr);
  if (inheader) {
    maildir_loop_end(&lp);
    loopcheck();
  }
  out_flush();

  haveq = check_quota(qsource, qsize, qcount, quotabounce, &q);

  if (maildir_tmp_commit(&t, total, 1, &newname) < 0)
    strerr_diefu2sys(111, "deliver into Maildir ", dir);
  /* an existing maildirsize is kept up to date even when no limit applies now */
  if (maildir_quota_add(dir, (int64_t)total, 1) < 0)
    strerr_warnwu2sys("update maildirsize in ", dir);
  if (haveq) record_usage();
  return 0;
}
