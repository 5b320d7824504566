/* deliver: one message into one Maildir. See deliver.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "control.h"
#include "deliver.h"
#include "lookup.h"
#include "maildir.h"
#include "qspawn.h"
#include "quotastate.h"

#define IOBUF 65536
#define P "deliver-maildir: "

/* one delivery's state; the buffers are shared (one delivery at a time per process) */
typedef struct dctx_s dctx;
struct dctx_s {
  deliver_job const *j;
  stralloc *diag;
  maildir_tmp t;
  size_t rlen;     /* strlen(recipient) */
  size_t olen;     /* bytes waiting in obuf */
  uint64_t total;  /* bytes written to the file */
  maildir_loop lp; /* loop detection over the header section */
  int inheader;
  int code;        /* set by the first failure: 100 or 111 */
};
static char ibuf[IOBUF];
static char obuf[IOBUF];

/* Appends "deliver-maildir: KIND: [unable to ]S1S2S3[: strerror(errno)]\n" */
static void say(stralloc *d, char const *kind, int fu, char const *s1, char const *s2,
                char const *s3, int sys)
{
  char const *e = sys ? strerror(errno) : 0;
  if (!stralloc_cats(d, P) || !stralloc_cats(d, kind) || !stralloc_cats(d, ": ") ||
      (fu && !stralloc_cats(d, "unable to ")) || !stralloc_cats(d, s1) ||
      !stralloc_cats(d, s2) || !stralloc_cats(d, s3) ||
      (e && (!stralloc_cats(d, ": ") || !stralloc_cats(d, e))) || !stralloc_catb(d, "\n", 1))
    return; /* out of memory: the exit code still says it */
}

/* The first failure wins: records it, removes the tmp file; returns the code */
static int fail(dctx *c, int code, int fu, char const *s1, char const *s2, int sys)
{
  int e = errno;
  if (c->code) return c->code;
  c->code = code;
  say(c->diag, "fatal", fu, s1, s2, "", sys);
  maildir_tmp_abort(&c->t);
  errno = e;
  return code;
}

static void warn(dctx *c, char const *s1, char const *s2)
{
  say(c->diag, "warning", 1, s1, s2, "", 1);
}

static int out_flush(dctx *c)
{
  if (!c->olen || c->code) return c->code;
  if (allwrite(c->t.fd, obuf, c->olen) != c->olen)
    return fail(c, 111, 1, "write to Maildir ", c->j->dir, 1);
  c->total += c->olen;
  c->olen = 0;
  return 0;
}

static int out_put(dctx *c, char const *s, size_t n)
{
  while (n && !c->code) {
    size_t k = IOBUF - c->olen;
    if (k > n) k = n;
    memcpy(obuf + c->olen, s, k);
    c->olen += k;
    s += k;
    n -= k;
    if (c->olen == IOBUF) out_flush(c);
  }
  return c->code;
}

static int loopcheck(dctx *c)
{
  if (c->lp.verdict == MAILDIR_LOOP_DELIVERED)
    return fail(c, 100, 0, "mail loop: already delivered to ", c->j->recipient, 0);
  if (c->lp.verdict)
    return fail(c, 100, 0, "mail loop: ", "more than 100 Received: header lines", 0);
  return 0;
}

/* one byte of the LF-converted message, while still in the header section */
static void header_byte(dctx *c, char ch)
{
  maildir_loop_feed(&c->lp, &ch, 1);
  loopcheck(c);
  if (c->lp.done) c->inheader = 0;
}

/* copies n bytes of input, turning CRLF into LF; *cr carries a CR across calls */
static void copy(dctx *c, char const *s, size_t n, int *cr)
{
  size_t i = 0;
  if (*cr) {
    *cr = 0;
    if (!n || s[0] != '\n') {
      if (c->inheader) header_byte(c, '\r');
      out_put(c, "\r", 1);
    }
  }
  while (i < n && c->inheader && !c->code) {
    char ch = s[i++];
    if (ch == '\r') {
      if (i == n) {
        *cr = 1;
        return;
      }
      if (s[i] == '\n') continue;
    }
    header_byte(c, ch);
    out_put(c, &ch, 1);
  }
  while (i < n && !c->code) { /* body: copy runs between CRs */
    char const *p = memchr(s + i, '\r', n - i);
    size_t k = p ? (size_t)(p - (s + i)) : n - i;
    out_put(c, s + i, k);
    i += k;
    if (i == n) break;
    i++; /* the CR */
    if (i == n) {
      *cr = 1;
      return;
    }
    if (s[i] != '\n') out_put(c, "\r", 1);
  }
}

/* The usage record smtp-receive reads at RCPT (lib/quotastate), refreshed from maildirsize
 * for accounts with a quota when the instance is known. Advice only: a failure is a warning. */
static void record_usage(dctx *c)
{
  if (getenv("MAILROOT") && !quotastate_sync(0, c->j->recipient, c->rlen, c->j->dir))
    warn(c, "record the quota state of ", c->j->recipient);
}

static int badaddr(char const *s, size_t n)
{
  size_t i;
  if (n > DELIVER_ADDR_MAX) return 1;
  for (i = 0; i < n; i++)
    if ((unsigned char)s[i] < 32 || s[i] == 127) return 1;
  return 0;
}

/* The quota check, after the message is in tmp/ (total bytes): fails when it does not fit.
 * qsource 0: the limits of maildirsize itself; else qsize/qcount (and maildirsize follows
 * them). Sets *haveq if a quota applies, *havefile if maildirsize exists (or may: a
 * malformed one). Returns 0 or the failure's code. */
static int check_quota(dctx *c, int qsource, uint64_t qsize, uint64_t qcount,
                       unsigned long quotabounce, int *haveq, int *havefile)
{
  char const *dir = c->j->dir;
  maildir_quota q;
  int r = maildir_quota_readat(c->t.dirfd, &q);
  *haveq = qsize || qcount;
  *havefile = r != 0; /* a malformed file counts: it is there */
  if (r < 0) return fail(c, 111, 1, "read maildirsize in ", dir, 1);
  if (qsource) { /* the limits are given: maildirsize follows them */
    if (!*haveq) r = 0;
    else if (!r || q.maxsize != qsize || q.maxcount != qcount || q.stale ||
             q.filesize > MAILDIR_QUOTA_RECALC_SIZE) {
      if (maildir_quota_recalc(dir, qsize, qcount, &q) < 0)
        return fail(c, 111, 1, "recompute maildirsize in ", dir, 1);
      r = 2;
      *havefile = 1;
    }
  } else if (r) { /* the limits of maildirsize itself */
    *haveq = q.maxsize || q.maxcount;
    if (*haveq && (q.stale || q.filesize > MAILDIR_QUOTA_RECALC_SIZE)) {
      if (maildir_quota_recalc(dir, q.maxsize, q.maxcount, &q) < 0)
        return fail(c, 111, 1, "recompute maildirsize in ", dir, 1);
      r = 2;
    }
  }
  if (*haveq && !maildir_quota_fits(&q, c->total, 1)) {
    /* Over: the file may miss deletions by a reader; recompute if it is old. */
    if (r != 2 && q.mtime + MAILDIR_QUOTA_RECALC_AGE < time(0) &&
        maildir_quota_recalc(dir, q.maxsize, q.maxcount, &q) < 0)
      return fail(c, 111, 1, "recompute maildirsize in ", dir, 1);
    if (!maildir_quota_fits(&q, c->total, 1)) {
      record_usage(c);
      errno = EDQUOT;
      return fail(c, quotabounce ? 100 : 111, 0, "over quota: Maildir ", dir, 0);
    }
  }
  return 0;
}

/* The limits that apply and where they come from (see check_quota) */
static int quota_source(dctx *c, int *qsource, uint64_t *qsize, uint64_t *qcount,
                        unsigned long *quotabounce)
{
  deliver_job const *j = c->j;
  *qsource = 0;
  *qsize = *qcount = 0;
  *quotabounce = 0;
  if (j->quota) {
    if (j->quota[0] && !maildir_quota_parse(j->quota, strlen(j->quota), qsize, qcount))
      return fail(c, 100, 0, "bad quota: ", j->quota, 0);
    *qsource = 1;
  }
  if (getenv("MAILROOT")) {
    int r = control_readuint("quota-bounce", 0, quotabounce);
    if (r == 0) return fail(c, 100, 0, "control/quota-bounce: not a number", "", 0);
    if (r < 0) return fail(c, 111, 1, "read control/quota-bounce", "", 1);
    if (!*qsource) { /* the account's quota, as queue-run delivers for accounts */
      account acc = ACCOUNT_ZERO;
      r = lookup_account_nohash(j->recipient, c->rlen, &acc);
      if (r > 0) {
        *qsize = acc.quota;
        *qsource = 2;
      }
      account_free(&acc);
      if (r < 0) return fail(c, 111, 1, "read control/users.cdb", "", 1);
    }
  }
  return 0;
}

/* Opens the file in tmp/; with a key on a retry, first looks whether it was delivered:
 * 0 go on, 1 delivered before (nothing to do), or the failure's code (> 1) */
static int open_tmp(dctx *c, stralloc *keyname)
{
  deliver_job const *j = c->j;
  struct stat st;
  if (stat(j->dir, &st) < 0) return fail(c, 111, 1, "find Maildir ", j->dir, 1);
  if (!S_ISDIR(st.st_mode)) {
    say(c->diag, "fatal", 0, "bad Maildir: ", j->dir, ": not a directory", 0);
    return c->code = 100;
  }
  if (j->key) {
    int r;
    if (maildir_keyname(keyname, j->key) < 0)
      return errno == EINVAL ? fail(c, 100, 0, "DELIVERY_KEY: malformed: ", j->key, 0)
                             : fail(c, 111, 1, "allocate", "", 1);
    r = j->attempt ? maildir_key_seen(j->dir, keyname->s) : 0;
    if (r < 0) return fail(c, 111, 1, "read Maildir ", j->dir, 1);
    if (r) return 1;
  }
  if (maildir_tmp_open_seen(&c->t, j->dir, &st) < 0) {
    if (errno == ELOOP) {
      say(c->diag, "fatal", 0, "bad Maildir: ", j->dir, ": tmp/ or new/ is a symbolic link", 0);
      return c->code = 111;
    }
    return fail(c, 111, 1, "create a file in Maildir ", j->dir, 1);
  }
  return 0;
}

int deliver_maildir(deliver_job const *j, stralloc *diag)
{
  static dctx const zero = {0, 0, MAILDIR_TMP_ZERO, 0, 0, 0, {0}, 1, 0};
  stralloc newname = STRALLOC_ZERO, keyname = STRALLOC_ZERO;
  dctx c = zero;
  uint64_t qsize, qcount;
  unsigned long quotabounce;
  int qsource, haveq = 0, havefile = 0, cr = 0, r;
  c.j = j;
  c.diag = diag;
  c.t.name = (stralloc)STRALLOC_ZERO;
  c.rlen = strlen(j->recipient);
  if (quota_source(&c, &qsource, &qsize, &qcount, &quotabounce)) goto end;
  r = open_tmp(&c, &keyname);
  if (r) {
    if (r == 1) c.code = 0; /* delivered by an earlier attempt */
    goto end;
  }
  maildir_loop_init(&c.lp, j->recipient, c.rlen);
  out_put(&c, "Return-Path: <", 14);
  out_put(&c, j->sender, strlen(j->sender));
  out_put(&c, ">\nDelivered-To: ", 16);
  out_put(&c, j->recipient, c.rlen);
  out_put(&c, "\n", 1);
  while (!c.code) {
    ssize_t n = fd_read(j->fd, ibuf, sizeof ibuf);
    if (n < 0) fail(&c, 111, 1, "read ", "the message", 1);
    if (n <= 0) break;
    copy(&c, ibuf, (size_t)n, &cr);
  }
  if (cr && !c.code) copy(&c, "", 0, &cr);
  if (c.inheader && !c.code) {
    maildir_loop_end(&c.lp);
    loopcheck(&c);
  }
  if (out_flush(&c) ||
      check_quota(&c, qsource, qsize, qcount, quotabounce, &haveq, &havefile))
    goto end;
  r = j->key ? maildir_tmp_commit_key(&c.t, c.total, keyname.s, &newname)
             : maildir_tmp_commit(&c.t, c.total, 1, &newname);
  if (r < 0) {
    say(diag, "fatal", 1, "deliver into Maildir ", j->dir, "", 1);
    c.code = 111;
    goto end;
  }
  /* an existing maildirsize is kept up to date even when no limit applies now (not for a
   * message that was there already: it was counted then). None when the quota was checked
   * a moment ago: nothing to add to (a recount that made one in between may miss this
   * message; maildirsize is Maildir++'s estimate, recounted when old and over the limit). */
  if (r == 1 && havefile && maildir_quota_add(j->dir, (int64_t)c.total, 1) < 0)
    warn(&c, "update maildirsize in ", j->dir);
  if (haveq) record_usage(&c);
end:
  maildir_tmp_abort(&c.t); /* closes what is still open (nothing after a commit) */
  stralloc_free(&c.t.name);
  stralloc_free(&newname);
  stralloc_free(&keyname);
  return c.code;
}

int deliver_job_make(deliver_job *j, int argc, char const *const *argv,
                     char const *(*get)(char const *, void *), void *ctx, stralloc *diag)
{
  subgetopt l = SUBGETOPT_ZERO;
  char const *s;
  memset(j, 0, sizeof *j);
  j->fd = 0;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "q:", &l);
    if (opt == -1) break;
    if (opt != 'q') goto usage;
    j->quota = l.arg;
  }
  if (argc - l.ind != 1 || !argv[l.ind][0]) goto usage;
  j->dir = argv[l.ind];
  j->recipient = get("RECIPIENT", ctx);
  if (!j->recipient || !j->recipient[0])
    return say(diag, "fatal", 0, "RECIPIENT not set", "", "", 0), 100;
  if (badaddr(j->recipient, strlen(j->recipient)))
    return say(diag, "fatal", 0, "RECIPIENT: bad address", "", "", 0), 100;
  j->sender = get("SENDER", ctx);
  if (!j->sender) j->sender = "";
  if (badaddr(j->sender, strlen(j->sender)))
    return say(diag, "fatal", 0, "SENDER: bad address", "", "", 0), 100;
  j->key = get("DELIVERY_KEY", ctx);
  if (j->key && !j->key[0]) j->key = 0;
  s = get("DELIVERY_ATTEMPT", ctx);
  if (s && *s && !ulong0_scan(s, &j->attempt))
    return say(diag, "fatal", 0, "DELIVERY_ATTEMPT: not a number", "", "", 0), 100;
  return 0;
usage:
  say(diag, "usage", 0, "deliver-maildir [ -q quota ] DIR", "", "", 0);
  return 100;
}

/* the variable name in a request's env[] (NAME=value strings) */
static char const *reqenv(char const *name, void *ctx)
{
  char const *const *env = ctx;
  size_t n = strlen(name);
  for (; *env; env++)
    if (!strncmp(*env, name, n) && (*env)[n] == '=') return *env + n + 1;
  return 0;
}

int deliver_serve(int sock, unsigned long max)
{
  static qspawn_req req;
  stralloc diag = STRALLOC_ZERO;
  unsigned long served;
  maildir_hold_dirs(); /* request after request, mostly into the same few Maildirs */
  for (served = 0; served < max; served++) {
    deliver_job j;
    int argc = 0, code, r = qspawn_recv(sock, &req);
    if (!r) break;
    if (r < 0) {
      if (errno == EPROTO) continue; /* its fds were closed; there is nobody to answer */
      stralloc_free(&diag);
      return 111;
    }
    diag.len = 0;
    while (req.argv[argc]) argc++;
    if (req.kind != QSPAWN_LOCAL) {
      say(&diag, "fatal", 0, "not a local delivery request", "", "", 0);
      code = 100;
    } else {
      code = deliver_job_make(&j, argc, req.argv, &reqenv, (void *)req.env, &diag);
      if (!code) {
        j.fd = req.fd[0];
        code = deliver_maildir(&j, &diag);
      }
    }
    if (req.fd[1] >= 0 && diag.len && allwrite(req.fd[1], diag.s, diag.len) != diag.len) {
      /* the report is lost; the exit code still tells queue-run */
    }
    if (req.fd[0] >= 0) close(req.fd[0]);
    if (req.fd[1] >= 0) close(req.fd[1]);
    if (!qspawn_send_exit(sock, req.id, code << 8)) {
      stralloc_free(&diag);
      return 111;
    }
  }
  stralloc_free(&diag);
  return 0;
}
