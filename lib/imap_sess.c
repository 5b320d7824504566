/* imap_sess: session state, replies and untagged updates. See imap_sess.h. */
#include <errno.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/strerr.h>
#include "imap_sess.h"
#include "imapio.h"
#include "quotastate.h"

imap_sess sess = {.ms = MAILSTORE_ZERO, .cache = MSGCACHE_ZERO, .scratch = STRALLOC_ZERO};

static void die_io(void)
{
  _exit(errno == ETIMEDOUT ? 99 : 0);
}

void imap_outn(char const *s, size_t len)
{
  if (!imapio_put(s, len)) die_io();
}

void imap_out(char const *s)
{
  imap_outn(s, strlen(s));
}

void imap_outu(uint64_t u)
{
  if (!imapio_putu(u)) die_io();
}

void imap_outlit(char const *s, size_t len, int binary)
{
  imap_out(binary ? "~{" : "{");
  imap_outu(len);
  imap_out("}\r\n");
  imap_outn(s, len);
}

void imap_outstr(char const *s, size_t len)
{
  size_t i;
  if (len > 1024) {
    imap_outlit(s, len, 0);
    return;
  }
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\r' || c == '\n' || !c || c >= 0x80) {
      imap_outlit(s, len, 0);
      return;
    }
  }
  imap_out("\"");
  for (i = 0; i < len; i++) {
    if (s[i] == '"' || s[i] == '\\') imap_out("\\");
    imap_outn(s + i, 1);
  }
  imap_out("\"");
}

void imap_outnstr(char const *s, size_t len)
{
  if (!s) imap_out("NIL");
  else imap_outstr(s, len);
}

void imap_outmbox(char const *name, size_t len)
{
  if (sess.utf8) {
    char buf[4 * MAILSTORE_NAME_MAX];
    long n = imap_mutf7_to_utf8(name, len, buf, sizeof buf);
    if (n >= 0) {
      imap_outstr(buf, (size_t)n);
      return;
    }
  }
  imap_outstr(name, len);
}

void imap_outflags(size_t i)
{
  mailstore_msg const *m = &sess.ms.msg[i];
  static char const *const names[] = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
                                      "\\Draft"};
  int first = 1, k;
  imap_out("(");
  for (k = 0; k < 5; k++)
    if (m->flags & (1u << k)) {
      if (!first) imap_out(" ");
      imap_out(names[k]);
      first = 0;
    }
  for (k = 0; k < MAILSTORE_KEYWORDS; k++)
    if ((m->keywords & (1u << k)) && sess.ms.kw[k]) {
      if (!first) imap_out(" ");
      imap_out(sess.ms.kw[k]);
      first = 0;
    }
  if ((m->flags & MS_RECENT) && !sess.rev2) {
    if (!first) imap_out(" ");
    imap_out("\\Recent");
  }
  imap_out(")");
}

static void tagged(char const *what, char const *text)
{
  imap_out(sess.tag ? sess.tag : "*");
  imap_out(what);
  imap_out(text);
  imap_out("\r\n");
}

void imap_ok(char const *text)
{
  tagged(" OK ", text);
}

void imap_no(char const *text)
{
  tagged(" NO ", text);
}

void imap_bad(char const *text)
{
  tagged(" BAD ", text);
}

char const *imap_capabilities(void)
{
  return "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE "
         "SPECIAL-USE CHILDREN LIST-EXTENDED LIST-STATUS ESEARCH BINARY CONDSTORE QUOTA "
         "UTF8=ACCEPT MULTIAPPEND QRESYNC IMAP4rev2 SEARCHRES";
}

void imap_sess_vanished(uint64_t modseq, imap_range const *set, size_t nset, int earlier)
{
  uint32_t *v = 0;
  long n = mailstore_vanished(&sess.ms, modseq, &v), i;
  int any = 0;
  uint32_t star = sess.ms.uidnext ? sess.ms.uidnext - 1 : 0;
  if (n < 0) return;
  for (i = 0; i < n; i++) {
    long j;
    if (nset && !imap_seqset_has(set, nset, v[i], star)) continue;
    if (!any) imap_out(earlier ? "* VANISHED (EARLIER) " : "* VANISHED ");
    else imap_out(",");
    any = 1;
    imap_outu(v[i]);
    /* a run of consecutive UIDs as a range */
    j = i;
    while (j + 1 < n && v[j + 1] == v[j] + 1 &&
           (!nset || imap_seqset_has(set, nset, v[j + 1], star)))
      j++;
    if (j > i) {
      imap_out(":");
      imap_outu(v[j]);
      i = j;
    }
  }
  if (any) imap_out("\r\n");
  free(v);
}

void imap_sess_condstore(void)
{
  if (sess.condstore) return;
  sess.condstore = 1;
  if (sess.selected) {
    imap_out("* OK [HIGHESTMODSEQ ");
    imap_outu(sess.ms.highestmodseq);
    imap_out("] Highest\r\n");
  }
}

void imap_sess_flags(void)
{
  int k;
  imap_out("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
  for (k = 0; k < MAILSTORE_KEYWORDS; k++)
    if (sess.ms.kw[k]) {
      imap_out(" ");
      imap_out(sess.ms.kw[k]);
    }
  imap_out(")\r\n* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
  for (k = 0; k < MAILSTORE_KEYWORDS; k++)
    if (sess.ms.kw[k]) {
      imap_out(" ");
      imap_out(sess.ms.kw[k]);
    }
  if (!sess.readonly && sess.ms.nkw < MAILSTORE_KEYWORDS) imap_out(" \\*");
  imap_out(")] Flags permitted.\r\n");
}

void imap_sess_update(int sync, int expunge)
{
  size_t i, n, recent = 0;
  unsigned int nkw;
  char const *oldkw[MAILSTORE_KEYWORDS];
  if (!sess.selected) return;
  nkw = sess.ms.nkw;
  memcpy(oldkw, sess.ms.kw, sizeof oldkw);
  if (sync && mailstore_sync(&sess.ms, 0) < 0) {
    strerr_warnwu2sys("sync ", sess.ms.dir);
    return;
  }
  if (nkw != sess.ms.nkw || memcmp(oldkw, sess.ms.kw, sizeof oldkw)) imap_sess_flags();
  if (expunge) {
    int any = 0;
    if (sess.qresync) {
      for (i = 0; i < sess.ms.n; i++)
        if ((sess.ms.msg[i].flags & MS_GONE) && (sess.ms.msg[i].flags & MS_REPORTED)) {
          imap_out(any ? "," : "* VANISHED ");
          imap_outu(sess.ms.msg[i].uid);
          any = 1;
        }
      if (any) imap_out("\r\n");
    } else {
      i = sess.ms.n;
      while (i--)
        if ((sess.ms.msg[i].flags & MS_GONE) && (sess.ms.msg[i].flags & MS_REPORTED)) {
          imap_out("* ");
          imap_outu(i + 1);
          imap_out(" EXPUNGE\r\n");
        }
    }
    for (i = 0; i < sess.ms.n; i++)
      if ((sess.ms.msg[i].flags & MS_GONE) && (sess.ms.msg[i].flags & MS_REPORTED)) break;
    if (i < sess.ms.n || 1) {
      size_t before = sess.ms.n, k, j = 0;
      /* drop reported gone ones; gone ones never reported just vanish silently */
      for (k = 0; k < sess.ms.n; k++)
        if (!(sess.ms.msg[k].flags & MS_GONE)) sess.ms.msg[j++] = sess.ms.msg[k];
      sess.ms.n = j;
      if (before != j) {
        size_t rep = 0;
        for (k = 0; k < j; k++)
          if (sess.ms.msg[k].flags & MS_REPORTED) rep++;
        sess.reported = rep;
      }
    }
  }
  n = sess.ms.n;
  for (i = 0; i < n; i++)
    if (sess.ms.msg[i].flags & MS_RECENT) recent++;
  if (n != sess.reported) {
    /* RECENT goes with EXISTS (as Dovecot sends it), not after an expunge */
    int grew = n > sess.reported;
    imap_out("* ");
    imap_outu(n);
    imap_out(" EXISTS\r\n");
    sess.reported = n;
    if (!grew) sess.recent_told = recent;
  } else
    sess.recent_told = recent;
  if (recent != sess.recent_told && !sess.rev2) {
    imap_out("* ");
    imap_outu(recent);
    imap_out(" RECENT\r\n");
    sess.recent_told = recent;
  }
  for (i = 0; i < n; i++) {
    mailstore_msg *m = &sess.ms.msg[i];
    if ((m->flags & MS_CHANGED) && (m->flags & MS_REPORTED) && !(m->flags & MS_GONE)) {
      imap_out("* ");
      imap_outu(i + 1);
      imap_out(" FETCH (");
      if (sess.is_uid || sess.qresync) {
        imap_out("UID ");
        imap_outu(m->uid);
        imap_out(" ");
      }
      imap_out("FLAGS ");
      imap_outflags(i);
      if (sess.condstore) {
        imap_out(" MODSEQ (");
        imap_outu(m->modseq);
        imap_out(")");
      }
      imap_out(")\r\n");
    }
    m->flags &= ~MS_CHANGED;
    m->flags |= MS_REPORTED;
  }
}

long imap_sess_set(char const *s, size_t len, int is_uid, size_t **out)
{
  static imap_range r[IMAP_SEQSET_MAX];
  int nr;
  size_t i, k = 0, n = sess.reported;
  size_t *v;
  uint32_t star;
  if (n > sess.ms.n) n = sess.ms.n;
  if (len == 1 && s[0] == '$') {
    /* SEARCHRES: the saved result, as UIDs, whichever kind of command uses it */
    size_t a = 0;
    v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
      imap_no("[SERVERBUG] out of memory");
      return -2;
    }
    for (i = 0; i < n; i++) {
      if (sess.ms.msg[i].flags & MS_GONE) continue;
      while (a < sess.nsaved && sess.saved[a] < sess.ms.msg[i].uid) a++;
      if (a < sess.nsaved && sess.saved[a] == sess.ms.msg[i].uid) v[k++] = i;
    }
    *out = v;
    return (long)k;
  }
  nr = imap_seqset(s, len, r, IMAP_SEQSET_MAX);
  if (nr < 0) {
    imap_bad("Error in IMAP command: Invalid messageset");
    return -1;
  }
  v = malloc((n ? n : 1) * sizeof *v);
  if (!v) {
    imap_no("[SERVERBUG] out of memory");
    return -2;
  }
  if (is_uid) {
    star = n ? sess.ms.msg[n - 1].uid : 0;
    for (i = 0; i < n; i++) {
      if (sess.ms.msg[i].flags & MS_GONE) continue;
      if (imap_seqset_has(r, (size_t)nr, sess.ms.msg[i].uid, star)) v[k++] = i;
    }
    /* "n:*" with n above the largest UID still matches the last message (RFC 3501 6.4.8) */
  } else {
    int j;
    star = (uint32_t)n;
    for (j = 0; j < nr; j++) {
      uint32_t lo = r[j].lo == IMAP_STAR ? star : r[j].lo;
      uint32_t hi = r[j].hi == IMAP_STAR ? star : r[j].hi;
      if (!n || lo > n || hi > n || !lo) {
        free(v);
        imap_bad("Error in IMAP command: Invalid messageset");
        return -1;
      }
    }
    for (i = 0; i < n; i++)
      if (imap_seqset_has(r, (size_t)nr, (uint32_t)(i + 1), star)) v[k++] = i;
  }
  *out = v;
  return (long)k;
}

int imap_sess_flagbits(imap_cmd const *c, uint32_t i, int create, uint32_t *flags,
                       uint32_t *kw)
{
  uint32_t j, end;
  *flags = 0;
  *kw = 0;
  if (c->arg[i].type == IMAP_LIST) {
    j = i + 1;
    end = c->arg[i].end;
  } else {
    j = i;
    end = i + 1;
  }
  for (; j < end; j = imap_next(c, j)) {
    imap_arg const *a = &c->arg[j];
    if (a->type != IMAP_ATOM) {
      imap_bad("Invalid flag");
      return 0;
    }
    if (imap_arg_is(a, "\\Seen")) *flags |= MS_SEEN;
    else if (imap_arg_is(a, "\\Answered")) *flags |= MS_ANSWERED;
    else if (imap_arg_is(a, "\\Flagged")) *flags |= MS_FLAGGED;
    else if (imap_arg_is(a, "\\Deleted")) *flags |= MS_DELETED;
    else if (imap_arg_is(a, "\\Draft")) *flags |= MS_DRAFT;
    else if (imap_arg_is(a, "\\Recent")) {
      imap_bad("Cannot set \\Recent");
      return 0;
    } else if (a->s[0] == '\\') {
      imap_bad("Invalid system flag");
      return 0;
    } else {
      int k;
      size_t x;
      for (x = 0; x < a->len; x++) {
        unsigned char ch = (unsigned char)a->s[x];
        if (ch <= 0x20 || ch >= 0x7f || strchr("(){%*\"\\]", ch)) {
          imap_bad("Invalid keyword");
          return 0;
        }
      }
      k = mailstore_keyword(&sess.ms, a->s, a->len, create);
      if (k < 0) {
        if (!create) continue;
        if (errno == ENOSPC) imap_no("[LIMIT] Too many keywords");
        else imap_bad("Invalid keyword");
        return 0;
      }
      *kw |= 1u << k;
    }
  }
  return 1;
}

int imap_sess_mboxname(imap_arg const *a, char *out, size_t *outlen)
{
  long n;
  if (!imap_is_string(a) || a->len > 4 * MAILSTORE_NAME_MAX) return 0;
  if (sess.utf8) {
    n = imap_utf8_to_mutf7(a->s, a->len, out, MAILSTORE_NAME_MAX);
    if (n < 0) return 0;
  } else {
    if (a->len > MAILSTORE_NAME_MAX) return 0;
    memcpy(out, a->s, a->len);
    n = (long)a->len;
  }
  out[n] = 0;
  if (memchr(out, 0, (size_t)n)) return 0;
  if (imap_ieq(out, (size_t)n, "INBOX")) {
    memcpy(out, "INBOX", 6);
    n = 5;
  }
  *outlen = (size_t)n;
  return 1;
}

int imap_sess_read(size_t i, char const **s, size_t *len, time_t *mtime)
{
  static stralloc buf = STRALLOC_ZERO;
  struct stat st;
  size_t got = 0;
  int fd = mailstore_openmsg(&sess.ms, i);
  if (fd < 0) return 0;
  if (fstat(fd, &st) < 0) {
    fd_close(fd);
    return 0;
  }
  /* read(), not mmap(): unmapping costs a TLB shootdown per message, which dominated */
  if (buf.a > (4u << 20) && (size_t)st.st_size < (1u << 20)) stralloc_free(&buf);
  if (!stralloc_ready(&buf, (size_t)st.st_size + 1)) {
    fd_close(fd);
    return 0;
  }
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf.s + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  fd_close(fd);
  *s = buf.s;
  *len = got;
  if (mtime) *mtime = st.st_mtime;
  return 1;
}

void imap_sess_quota_changed(void)
{
  char const *u = getenv("USER");
  if (!getenv("MAILROOT") || !u || !*u) return; /* no instance: no record to keep */
  if (!quotastate_sync(0, u, strlen(u), ".")) strerr_warnwu1sys("refresh the quota record");
}
