/* bounce: build and queue a non-delivery report. See bounce.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/stralloc.h>

#include "bounce.h"
#include "dsn.h"
#include "lookup.h"
#include "queue.h"

char const *bounce_status(char const *diag, char *buf, char dflt)
{
  char const *p = diag;
  for (; *p; p++) {
    size_t k = 0;
    if (!((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' && p[2] >= '0' && p[2] <= '9'))
      continue;
    if (p != diag && p[-1] != ' ') continue;
    while (k < 11 && ((p[k] >= '0' && p[k] <= '9') || p[k] == '.')) k++;
    memcpy(buf, p, k);
    buf[k] = 0;
    while (k && buf[k - 1] == '.') buf[--k] = 0;
    return buf;
  }
  buf[0] = dflt;
  memcpy(buf + 1, ".0.0", 5);
  return buf;
}

/* the original's first BOUNCE_HEAD_MAX bytes (its header is what goes back) */
static void read_head(bounce_msg const *m, stralloc *msg)
{
  queue_hdr h;
  stralloc env = STRALLOC_ZERO;
  int fd = queue_open(m->qdir, m->id, &h, &env, 0);
  stralloc_free(&env);
  if (fd < 0) return; /* gone or unreadable: a report without the header */
  {
    size_t want = h.msglen > BOUNCE_HEAD_MAX ? BOUNCE_HEAD_MAX : (size_t)h.msglen;
    if (stralloc_ready(msg, want + 1)) {
      ssize_t r = allread(fd, msg->s, want);
      msg->len = r > 0 ? (size_t)r : 0;
    }
  }
  close(fd);
}

int bounce_send(bounce_msg const *m, bounce_item const *items, size_t n, stralloc *newid)
{
  dsn_rcpt *r = calloc(n ? n : 1, sizeof *r);
  char (*st)[16] = calloc(n ? n : 1, sizeof *st);
  char (*mta)[256] = calloc(n ? n : 1, sizeof *mta);
  stralloc msg = STRALLOC_ZERO, out = STRALLOC_ZERO, env = STRALLOC_ZERO;
  int code = QX_NOMEM;
  size_t i;
  if (!r || !st || !mta) goto end;
  for (i = 0; i < n; i++) {
    char const *d = items[i].diag;
    if (!strncmp(d, "R=", 2)) { /* "R=host diagnostic": the remote MTA that answered */
      char const *sp = strchr(d, ' ');
      size_t l = sp ? (size_t)(sp - d - 2) : strlen(d + 2);
      if (l > 255) l = 255;
      memcpy(mta[i], d + 2, l);
      mta[i][l] = 0;
      d = sp ? sp + 1 : "";
    }
    r[i].rcpt = items[i].rcpt;
    r[i].status = bounce_status(d, st[i], '5');
    r[i].diagnostic = d;
    r[i].remote_mta = mta[i][0] && strcmp(mta[i], "-") ? mta[i] : 0;
    r[i].action_delayed = 0;
  }
  read_head(m, &msg);
  {
    dsn_msg dm;
    dm.me = m->me;
    dm.to = m->to;
    dm.queueid = m->id;
    dm.arrival = (time_t)m->arrival;
    dm.now = (time_t)m->now;
    dm.message = msg.s ? msg.s : "";
    dm.messagelen = msg.len;
    if (!dsn_build(&out, &dm, r, n)) goto end;
  }
  { /* the queue holds LF line ends */
    size_t j, k = 0;
    for (j = 0; j < out.len; j++)
      if (!(out.s[j] == '\r' && j + 1 < out.len && out.s[j + 1] == '\n')) out.s[k++] = out.s[j];
    out.len = k;
  }
  if (!stralloc_catb(&env, "F\0T", 3) || !stralloc_cats(&env, m->to) ||
      !stralloc_catb(&env, "\0\0", 2))
    goto end;
  code = queue_inject_mem(m->qdir, env.s, env.len, out.s, out.len, newid);
end:
  free(r);
  free(st);
  free(mta);
  stralloc_free(&msg);
  stralloc_free(&out);
  stralloc_free(&env);
  return code;
}

int bounce_targets(bounce_msg *m, char const *sender, char const *postmaster, char const *env,
                   size_t envlen, queue_target *t, size_t nt, stralloc *newid, size_t *count)
{
  size_t i, n = 0;
  bounce_item *it;
  int code;
  for (i = 0; i < nt; i++) n += t[i].state == QUEUE_T_FAILED;
  if (!n) return BOUNCE_NONE;
  m->to = sender;
  if (!*sender) { /* a failed bounce goes to the postmaster, unless it was for them */
    m->to = 0;
    for (i = 0; i < nt && postmaster && *postmaster; i++)
      if (t[i].state == QUEUE_T_FAILED &&
          strcasecmp(queue_env_rcpt(env, envlen, t[i].rcpt), postmaster))
        m->to = postmaster;
  }
  if (m->to) {
    it = calloc(n, sizeof *it);
    if (!it) return QX_NOMEM;
    for (i = 0, n = 0; i < nt; i++)
      if (t[i].state == QUEUE_T_FAILED) {
        it[n].rcpt = queue_env_rcpt(env, envlen, t[i].rcpt);
        it[n++].diag = t[i].diag;
      }
    code = bounce_send(m, it, n, newid);
    free(it);
    if (code) return code;
  }
  for (i = 0; i < nt; i++)
    if (t[i].state == QUEUE_T_FAILED) t[i].state = QUEUE_T_BOUNCED;
  *count = n;
  return m->to ? BOUNCE_SENT : BOUNCE_DROPPED;
}

int bounce_sender(stralloc *out, char const *sender, char const *me, char const *defdom)
{
  char const *at = strrchr(sender, '@');
  size_t l = at ? (size_t)(at - sender) : strlen(sender);
  out->len = 0;
  if (*sender && defdom && *defdom &&
      (!at || (!strcasecmp(at + 1, me) && lookup_is_local_domain(me, strlen(me)) == 0)))
    return stralloc_catb(out, sender, l) && stralloc_catb(out, "@", 1) &&
           stralloc_cats(out, defdom) && stralloc_0(out);
  return stralloc_cats(out, sender) && stralloc_0(out);
}
