/* imap_store: the commands that change messages: STORE (+/-FLAGS[.SILENT], keywords,
 * UNCHANGEDSINCE), COPY, MOVE (RFC 6851), EXPUNGE and UID EXPUNGE (UIDPLUS), CLOSE, and
 * APPEND (spooled literals, several messages at once: MULTIAPPEND). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include "imap_sess.h"
#include "imap_store.h"
#include "maildir.h"

static void out_uidset(uint32_t const *u, size_t n)
{
  size_t a = 0;
  while (a < n) {
    size_t b = a;
    while (b + 1 < n && u[b + 1] == u[b] + 1) b++;
    if (a) imap_out(",");
    imap_outu(u[a]);
    if (b > a) {
      imap_out(":");
      imap_outu(u[b]);
    }
    a = b + 1;
  }
}

void imap_cmd_store(imap_cmd *c, uint32_t first)
{
  size_t *idx = 0, k;
  long n;
  uint32_t j = first + 1, setf = 0, clrf = 0, setk = 0, clrk = 0, fl, kw;
  uint64_t unchangedsince = 0;
  int silent = 0, mode;
  unsigned char *failed = 0;
  imap_arg const *op;
  if (c->nargs < first + 3 || c->arg[first].type != IMAP_ATOM) {
    imap_bad("Error in IMAP command STORE: Invalid arguments");
    return;
  }
  if (c->arg[j].type == IMAP_LIST) {
    uint32_t e = c->arg[j].end, m;
    for (m = j + 1; m + 1 < e; m += 2) {
      if (imap_arg_is(&c->arg[m], "UNCHANGEDSINCE") &&
          imap_number64(c->arg[m + 1].s, c->arg[m + 1].len, &unchangedsince)) {
        imap_sess_condstore();
        if (!unchangedsince) unchangedsince = 0; /* 0: nothing may change; handled below */
      } else {
        imap_bad("Error in IMAP command STORE: Invalid modifier");
        return;
      }
    }
    j = e;
  }
  if (j + 1 >= c->nargs + 0 && j >= c->nargs) {
    imap_bad("Error in IMAP command STORE: Invalid arguments");
    return;
  }
  op = &c->arg[j];
  if (op->type != IMAP_ATOM || op->len < 5) {
    imap_bad("Error in IMAP command STORE: Invalid arguments");
    return;
  }
  {
    char const *s = op->s;
    size_t l = op->len;
    mode = 0;
    if (s[0] == '+') mode = 1, s++, l--;
    else if (s[0] == '-') mode = -1, s++, l--;
    if (l > 7 && imap_ieq(s + l - 7, 7, ".SILENT")) silent = 1, l -= 7;
    if (!imap_ieq(s, l, "FLAGS")) {
      imap_bad("Error in IMAP command STORE: Unknown item");
      return;
    }
  }
  j++;
  if (j >= c->nargs) {
    imap_bad("Error in IMAP command STORE: Missing flags");
    return;
  }
  if (sess.readonly) {
    imap_no("[READ-ONLY] Mailbox is read-only.");
    return;
  }
  if (c->arg[j].type != IMAP_LIST) {
    /* flags without parentheses: every remaining atom */
    uint32_t m;
    fl = kw = 0;
    for (m = j; m < c->nargs; m++) {
      uint32_t f1, k1;
      if (!imap_sess_flagbits(c, m, mode >= 0, &f1, &k1)) return;
      fl |= f1;
      kw |= k1;
    }
  } else if (!imap_sess_flagbits(c, j, mode >= 0, &fl, &kw))
    return;
  imap_sess_update(1, 0);
  n = imap_sess_set(c->arg[first].s, c->arg[first].len, sess.is_uid, &idx);
  if (n < 0) return;
  if (mode > 0) setf = fl, setk = kw;
  else if (mode < 0) clrf = fl, clrk = kw;
  else setf = fl, setk = kw, clrf = MS_SYSFLAGS, clrk = 0xffffffffu;
  if (n) failed = malloc((size_t)n);
  if (n && !failed) {
    free(idx);
    imap_no("[SERVERBUG] out of memory");
    return;
  }
  if (n && mailstore_store(&sess.ms, idx, (size_t)n, setf, clrf, setk, clrk,
                           unchangedsince ? unchangedsince : 0, failed) < 0) {
    strerr_warnwu2sys("store flags in ", sess.ms.dir);
    free(idx);
    free(failed);
    imap_no("[SERVERBUG] Internal error storing flags");
    return;
  }
  for (k = 0; k < (size_t)n; k++) {
    mailstore_msg *m = &sess.ms.msg[idx[k]];
    if (m->flags & MS_GONE) continue;
    if (failed[k]) continue;
    if (!silent || (sess.condstore && unchangedsince)) {
      imap_out("* ");
      imap_outu(idx[k] + 1);
      imap_out(" FETCH (");
      if (sess.is_uid) {
        imap_out("UID ");
        imap_outu(m->uid);
        imap_out(" ");
      }
      if (!silent) {
        imap_out("FLAGS ");
        imap_outflags(idx[k]);
        if (sess.condstore) imap_out(" ");
      }
      if (sess.condstore) {
        imap_out("MODSEQ (");
        imap_outu(m->modseq);
        imap_out(")");
      }
      imap_out(")\r\n");
    }
    m->flags &= ~MS_CHANGED;
  }
  imap_sess_update(0, 0);
  {
    int anyfail = 0;
    for (k = 0; k < (size_t)n; k++)
      if (failed[k]) anyfail = 1;
    if (anyfail) {
      imap_out(sess.tag);
      imap_out(" OK [MODIFIED ");
      for (k = 0; k < (size_t)n; k++) {
        static int sep;
        if (!k) sep = 0;
        if (!failed[k]) continue;
        if (sep) imap_out(",");
        imap_outu(sess.is_uid ? sess.ms.msg[idx[k]].uid : idx[k] + 1);
        sep = 1;
      }
      imap_out("] Conditional store failed\r\n");
    } else
      imap_ok("Store completed.");
  }
  free(idx);
  free(failed);
}

void imap_cmd_copy(imap_cmd *c, uint32_t first, int move)
{
  char name[MAILSTORE_NAME_MAX + 1], dir[MAILSTORE_NAME_MAX + 8];
  size_t len, *idx = 0, k;
  long n;
  uint32_t *uids = 0, *src = 0, uv = 0;
  struct stat st;
  if (c->nargs != first + 2 || c->arg[first].type != IMAP_ATOM ||
      !imap_sess_mboxname(&c->arg[first + 1], name, &len)) {
    imap_bad(move ? "Error in IMAP command MOVE: Invalid arguments"
                  : "Error in IMAP command COPY: Invalid arguments");
    return;
  }
  if (move && sess.readonly) {
    imap_no("[READ-ONLY] Mailbox is read-only.");
    return;
  }
  if (!mailstore_folder_dir(name, len, dir) || lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
    imap_no("[TRYCREATE] Mailbox doesn't exist");
    return;
  }
  imap_sess_update(1, 0);
  n = imap_sess_set(c->arg[first].s, c->arg[first].len, sess.is_uid, &idx);
  if (n < 0) return;
  /* gone messages cannot be copied */
  {
    size_t w = 0;
    for (k = 0; k < (size_t)n; k++)
      if (!(sess.ms.msg[idx[k]].flags & MS_GONE)) idx[w++] = idx[k];
    if ((size_t)n != w && !sess.is_uid) {
      free(idx);
      imap_no("[EXPUNGEISSUED] Some of the requested messages no longer exist");
      return;
    }
    n = (long)w;
  }
  if (!n) {
    free(idx);
    if (sess.is_uid) imap_ok(move ? "No messages found." : "No messages found.");
    else imap_ok(move ? "Move completed." : "Copy completed.");
    return;
  }
  uids = malloc((size_t)n * sizeof *uids);
  src = malloc((size_t)n * sizeof *src);
  if (!uids || !src) {
    free(idx);
    free(uids);
    free(src);
    imap_no("[SERVERBUG] out of memory");
    return;
  }
  for (k = 0; k < (size_t)n; k++) src[k] = sess.ms.msg[idx[k]].uid;
  if (!strcmp(dir, sess.ms.dir) && move) {
    /* MOVE into the same folder: a copy, then expunge of the originals */
    if (mailstore_copy(&sess.ms, idx, (size_t)n, dir, 0, uids, &uv) < 0 ||
        mailstore_expunge(&sess.ms, idx, (size_t)n) < 0)
      goto fail;
  } else if (mailstore_copy(&sess.ms, idx, (size_t)n, dir, move, uids, &uv) < 0)
    goto fail;
  {
    /* COPYUID: only the pairs that made it */
    size_t w = 0;
    for (k = 0; k < (size_t)n; k++)
      if (uids[k]) {
        src[w] = src[k];
        uids[w] = uids[k];
        w++;
      }
    if (move) {
      imap_out("* OK [COPYUID ");
      imap_outu(uv);
      imap_out(" ");
      out_uidset(src, w);
      imap_out(" ");
      out_uidset(uids, w);
      imap_out("] Moved UIDs.\r\n");
      imap_sess_update(1, 1);
      imap_ok("Move completed.");
    } else {
      imap_sess_quota_changed();
      imap_out(sess.tag);
      imap_out(" OK [COPYUID ");
      imap_outu(uv);
      imap_out(" ");
      out_uidset(src, w);
      imap_out(" ");
      out_uidset(uids, w);
      imap_out("] Copy completed.\r\n");
    }
  }
  free(idx);
  free(uids);
  free(src);
  return;
fail:
  {
    int e = errno;
    strerr_warnwu2sys(move ? "move messages to " : "copy messages to ", dir);
    free(idx);
    free(uids);
    free(src);
    if (e == ENOSPC || e == EDQUOT) imap_no("[OVERQUOTA] Quota exceeded (mailbox full)");
    else imap_no("[SERVERBUG] Internal error");
  }
}

/* Expunges the \Deleted messages (all, or those in the UID set). */
static int expunge(char const *uidset, size_t len)
{
  size_t *idx = 0, *del, nd = 0, k;
  long n;
  if (uidset) {
    n = imap_sess_set(uidset, len, 1, &idx);
    if (n < 0) return 0;
  } else {
    n = (long)sess.ms.n;
    idx = malloc((sess.ms.n + 1) * sizeof *idx);
    if (!idx) {
      imap_no("[SERVERBUG] out of memory");
      return 0;
    }
    for (k = 0; k < sess.ms.n; k++) idx[k] = k;
  }
  del = idx;
  for (k = 0; k < (size_t)n; k++) {
    mailstore_msg const *m = &sess.ms.msg[idx[k]];
    if ((m->flags & MS_DELETED) && !(m->flags & MS_GONE)) del[nd++] = idx[k];
  }
  if (nd && mailstore_expunge(&sess.ms, del, nd) < 0) {
    strerr_warnwu2sys("expunge in ", sess.ms.dir);
    free(idx);
    imap_no("[SERVERBUG] Internal error expunging");
    return 0;
  }
  free(idx);
  if (nd) imap_sess_quota_changed();
  return 1;
}

void imap_cmd_expunge(imap_cmd *c, uint32_t first)
{
  if (sess.readonly) {
    imap_no("[READ-ONLY] Mailbox is read-only.");
    return;
  }
  if (sess.is_uid) {
    if (c->nargs != first + 1 || c->arg[first].type != IMAP_ATOM) {
      imap_bad("Error in IMAP command UID EXPUNGE: Invalid arguments");
      return;
    }
    imap_sess_update(1, 0);
    if (!expunge(c->arg[first].s, c->arg[first].len)) return;
  } else {
    if (c->nargs != first) {
      imap_bad("Error in IMAP command EXPUNGE: Invalid arguments");
      return;
    }
    imap_sess_update(1, 0);
    if (!expunge(0, 0)) return;
  }
  imap_sess_update(1, 1);
  imap_ok("Expunge completed.");
}

void imap_cmd_close(int expunge_too)
{
  if (expunge_too && !sess.readonly) {
    size_t *idx, nd = 0, k;
    mailstore_sync(&sess.ms, 0);
    idx = malloc((sess.ms.n + 1) * sizeof *idx);
    if (idx) {
      for (k = 0; k < sess.ms.n; k++)
        if ((sess.ms.msg[k].flags & MS_DELETED) && !(sess.ms.msg[k].flags & MS_GONE))
          idx[nd++] = k;
      if (nd && mailstore_expunge(&sess.ms, idx, nd) < 0)
        strerr_warnwu2sys("expunge in ", sess.ms.dir);
      else if (nd)
        imap_sess_quota_changed();
      free(idx);
    }
  }
  imap_unselect();
  imap_ok(expunge_too ? "Close completed." : "Unselect completed.");
}

/* ---- APPEND ---- */

static stralloc spoolpath[IMAP_SPOOL_MAX];
static unsigned int nspooled;

int imap_spool_open(void *ctx, uint64_t size)
{
  stralloc *p;
  int fd;
  (void)ctx;
  (void)size;
  if (nspooled >= IMAP_SPOOL_MAX) return -1;
  p = &spoolpath[nspooled];
  p->len = 0;
  if (!stralloc_cats(p, "tmp/") || maildir_uniqname(p) < 0) return -1;
  fd = open(p->s, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -1;
  nspooled++;
  return fd;
}

void imap_spool_reset(imapio_spool *sp, imap_cmd const *c)
{
  unsigned int i;
  for (i = 0; i < c->nspool; i++)
    if (sp->fd[i] >= 0) {
      close(sp->fd[i]);
      sp->fd[i] = -1;
    }
  for (i = 0; i < nspooled; i++) unlink(spoolpath[i].s);
  nspooled = 0;
}

void imap_cmd_append(imap_cmd *c, imapio_spool *sp)
{
  char name[MAILSTORE_NAME_MAX + 1], dir[MAILSTORE_NAME_MAX + 8];
  size_t len;
  uint32_t j = 1, uids[IMAP_ARGS_MAX], uv = 0;
  unsigned int nmsg = 0, i;
  struct stat st;
  if (c->nargs < 2 || !imap_sess_mboxname(&c->arg[0], name, &len)) {
    imap_bad("Error in IMAP command APPEND: Invalid arguments");
    return;
  }
  /* check the whole syntax first: (flags) "date" literal, repeated */
  {
    uint32_t k = 1;
    while (k < c->nargs) {
      if (c->arg[k].type == IMAP_LIST) k = c->arg[k].end;
      if (k < c->nargs && c->arg[k].type == IMAP_QUOTED) {
        time_t t;
        if (!imap_datetime(c->arg[k].s, c->arg[k].len, &t)) {
          imap_bad("Error in IMAP command APPEND: Invalid date-time");
          return;
        }
        k++;
      }
      if (k >= c->nargs || (c->arg[k].type != IMAP_SPOOLED && c->arg[k].type != IMAP_LITERAL)) {
        imap_bad("Error in IMAP command APPEND: Invalid arguments");
        return;
      }
      k++;
      nmsg++;
    }
    if (!nmsg) {
      imap_bad("Error in IMAP command APPEND: Missing message");
      return;
    }
  }
  if (sp->spool_failed) {
    imap_no("[OVERQUOTA] Not enough disk space");
    return;
  }
  if (!mailstore_folder_dir(name, len, dir) || lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
    imap_no("[TRYCREATE] Mailbox doesn't exist");
    return;
  }
  for (i = 0; i < nmsg; i++) {
    uint32_t flags = 0;
    char const *kws[MAILSTORE_KEYWORDS];
    char kwbuf[MAILSTORE_KEYWORDS][MAILSTORE_KEYWORD_MAX + 1];
    unsigned int nkw = 0;
    time_t when = 0;
    imap_arg const *lit;
    if (c->arg[j].type == IMAP_LIST) {
      uint32_t f;
      for (f = j + 1; f < c->arg[j].end; f++) {
        imap_arg const *a = &c->arg[f];
        if (a->type != IMAP_ATOM) {
          imap_bad("Invalid flag");
          return;
        }
        if (imap_arg_is(a, "\\Seen")) flags |= MS_SEEN;
        else if (imap_arg_is(a, "\\Answered")) flags |= MS_ANSWERED;
        else if (imap_arg_is(a, "\\Flagged")) flags |= MS_FLAGGED;
        else if (imap_arg_is(a, "\\Deleted")) flags |= MS_DELETED;
        else if (imap_arg_is(a, "\\Draft")) flags |= MS_DRAFT;
        else if (a->s[0] == '\\') {
          imap_bad("Invalid system flag");
          return;
        } else if (nkw < MAILSTORE_KEYWORDS && a->len <= MAILSTORE_KEYWORD_MAX) {
          memcpy(kwbuf[nkw], a->s, a->len);
          kwbuf[nkw][a->len] = 0;
          kws[nkw] = kwbuf[nkw];
          nkw++;
        }
      }
      j = c->arg[j].end;
    }
    if (c->arg[j].type == IMAP_QUOTED) {
      imap_datetime(c->arg[j].s, c->arg[j].len, &when);
      j++;
    }
    lit = &c->arg[j++];
    if (lit->type == IMAP_LITERAL) {
      /* a small message came in memory: it goes to a file like a spooled one */
      int fd = imap_spool_open(0, lit->len);
      if (fd < 0 || allwrite(fd, lit->s, lit->len) < lit->len || fsync(fd) < 0) {
        if (fd >= 0) {
          close(fd);
          unlink(spoolpath[--nspooled].s);
        }
        imap_no("[SERVERBUG] Internal error writing the message");
        return;
      }
      close(fd);
      nspooled--; /* the slot is free again once the file is linked or removed */
      if (mailstore_add(dir, spoolpath[nspooled].s, flags, kws, nkw, when, &uids[i], &uv) < 0) {
        int e = errno;
        unlink(spoolpath[nspooled].s);
        strerr_warnwu2sys("append to ", dir);
        if (e == ENOSPC || e == EDQUOT) imap_no("[OVERQUOTA] Quota exceeded (mailbox full)");
        else imap_no("[SERVERBUG] Internal error appending");
        return;
      }
      continue;
    }
    if (sp->fd[lit->spool] >= 0) {
      if (fsync(sp->fd[lit->spool]) < 0) {
        imap_no("[SERVERBUG] Internal error writing the message");
        return;
      }
      close(sp->fd[lit->spool]);
      sp->fd[lit->spool] = -1;
    }
    if (mailstore_add(dir, spoolpath[lit->spool].s, flags, kws, nkw, when, &uids[i], &uv) < 0) {
      int e = errno;
      strerr_warnwu2sys("append to ", dir);
      if (e == ENOSPC || e == EDQUOT) imap_no("[OVERQUOTA] Quota exceeded (mailbox full)");
      else imap_no("[SERVERBUG] Internal error appending");
      return;
    }
  }
  imap_sess_quota_changed();
  if (sess.selected) imap_sess_update(1, 1);
  imap_out(sess.tag);
  imap_out(" OK [APPENDUID ");
  imap_outu(uv);
  imap_out(" ");
  out_uidset(uids, nmsg);
  imap_out("] Append completed.\r\n");
}
