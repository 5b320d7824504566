/* imap_mbox: the commands about folders: SELECT/EXAMINE, LIST/LSUB (LIST-EXTENDED,
 * LIST-STATUS, SPECIAL-USE, CHILDREN), STATUS, CREATE, DELETE, RENAME, SUBSCRIBE and
 * UNSUBSCRIBE. Names are modified UTF-7 on the wire (UTF-8 once UTF8=ACCEPT is enabled) and
 * on disk, hierarchy separator '.'. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <skalibs/strerr.h>
#include "imap_sess.h"

#define SEP '.'

/* ---- pattern matching ---- */

static int match(char const *p, size_t pl, char const *s, size_t sl)
{
  while (pl) {
    if (*p == '*' || *p == '%') {
      size_t k;
      int star = *p == '*';
      p++;
      pl--;
      for (k = 0; k <= sl; k++) {
        if (match(p, pl, s + k, sl - k)) return 1;
        if (k < sl && !star && s[k] == SEP) return 0;
      }
      return 0;
    }
    if (!sl || *p != *s) return 0;
    p++;
    pl--;
    s++;
    sl--;
  }
  return !sl;
}

/* INBOX is matched case-insensitively (as "INBOX"). */
static int match_name(char const *p, size_t pl, char const *s, size_t sl)
{
  char buf[MAILSTORE_NAME_MAX * 2 + 8];
  if (pl >= 5 && imap_ieq(p, 5, "INBOX") &&
      (pl == 5 || p[5] == SEP || p[5] == '*' || p[5] == '%') && pl < sizeof buf) {
    memcpy(buf, "INBOX", 5);
    memcpy(buf + 5, p + 5, pl - 5);
    return match(buf, pl, s, sl);
  }
  return match(p, pl, s, sl);
}

/* ---- the name tree ---- */

typedef struct node_s node;
struct node_s {
  char const *name;
  size_t len;
  int exists;     /* a folder on disk (or INBOX) */
  int subscribed;
  int children;   /* has sub-folders */
  int subchild;   /* has a subscribed descendant */
};

static node *nodes;
static size_t nnodes, anodes;
static stralloc pool = STRALLOC_ZERO;

static node *find(char const *name, size_t len)
{
  size_t i;
  for (i = 0; i < nnodes; i++)
    if (nodes[i].len == len && !memcmp(nodes[i].name, name, len)) return &nodes[i];
  return 0;
}

static node *add(char const *name, size_t len)
{
  node *n = find(name, len);
  if (n) return n;
  if (nnodes == anodes) {
    size_t na = anodes ? anodes * 2 : 32;
    node *x = realloc(nodes, na * sizeof *x);
    if (!x) return 0;
    nodes = x;
    anodes = na;
  }
  n = &nodes[nnodes++];
  memset(n, 0, sizeof *n);
  n->name = name;
  n->len = len;
  return n;
}

static int nodecmp(void const *a, void const *b)
{
  node const *x = a, *y = b;
  int ix = x->len == 5 && !memcmp(x->name, "INBOX", 5);
  int iy = y->len == 5 && !memcmp(y->name, "INBOX", 5);
  size_t l = x->len < y->len ? x->len : y->len;
  int r;
  if (ix != iy) return ix ? -1 : 1;
  r = memcmp(x->name, y->name, l);
  return r ? r : x->len < y->len ? -1 : x->len > y->len;
}

/* Builds the tree: every folder, INBOX, the subscriptions, and the parents they imply. */
static int build(void)
{
  size_t i, start;
  int nf;
  nnodes = 0;
  pool.len = 0;
  /* the pool must not move once names point into it: sizes are known after reading */
  if (!stralloc_cats(&pool, "INBOX") || !stralloc_0(&pool)) return 0;
  nf = mailstore_folder_list(&pool);
  if (nf < 0) return 0;
  start = pool.len;
  if (mailstore_subscriptions(&pool) < 0) return 0;
  {
    /* make room for nothing more: pointers below are into the final pool */
    size_t i2;
    node *n = add(pool.s, 5);
    if (!n) return 0;
    n->exists = 1;
    for (i2 = 6; i2 < start; i2 += strlen(pool.s + i2) + 1) {
      n = add(pool.s + i2, strlen(pool.s + i2));
      if (!n) return 0;
      n->exists = 1;
    }
    for (i2 = start; i2 < pool.len; i2 += strlen(pool.s + i2) + 1) {
      size_t l = strlen(pool.s + i2);
      if (imap_ieq(pool.s + i2, l, "INBOX")) n = &nodes[0];
      else n = add(pool.s + i2, l);
      if (!n) return 0;
      n->subscribed = 1;
    }
  }
  /* parents */
  for (i = 0; i < nnodes; i++) {
    size_t k = nodes[i].len;
    int sub = nodes[i].subscribed, ex = nodes[i].exists;
    while (k--) {
      if (nodes[i].name[k] != SEP) continue;
      {
        node *p = add(nodes[i].name, k);
        if (!p) return 0;
        if (ex) p->children = 1;
        if (sub) p->subchild = 1;
      }
    }
  }
  qsort(nodes, nnodes, sizeof *nodes, &nodecmp);
  return 1;
}

/* ---- LIST / LSUB ---- */

static void status_items(char const *name, size_t len, imap_cmd *c, uint32_t list);

void imap_cmd_list(imap_cmd *c, int lsub)
{
  uint32_t j = 0, pat, patend, sel_subscribed = 0, sel_recursive = 0, sel_special = 0;
  int ret_subscribed = 0, ret_children = 1, ret_special = 1, extended = 0;
  uint32_t ret_status = 0;
  imap_arg *ref;
  size_t i;
  char refbuf[MAILSTORE_NAME_MAX * 4 + 1];
  size_t reflen;
  if (!lsub && j < c->nargs && c->arg[j].type == IMAP_LIST) {
    uint32_t k;
    extended = 1;
    for (k = j + 1; k < c->arg[j].end; k++) {
      if (imap_arg_is(&c->arg[k], "SUBSCRIBED")) sel_subscribed = 1;
      else if (imap_arg_is(&c->arg[k], "RECURSIVEMATCH")) sel_recursive = 1;
      else if (imap_arg_is(&c->arg[k], "SPECIAL-USE")) sel_special = 1;
      else if (imap_arg_is(&c->arg[k], "REMOTE")) {}
      else {
        imap_bad("Error in IMAP command LIST: Unknown selection option");
        return;
      }
    }
    if (sel_recursive && !sel_subscribed && !sel_special) {
      imap_bad("Error in IMAP command LIST: RECURSIVEMATCH alone");
      return;
    }
    j = c->arg[j].end;
  }
  if (j + 2 > c->nargs || !imap_is_string(&c->arg[j])) {
    imap_bad(lsub ? "Error in IMAP command LSUB: Invalid arguments"
                  : "Error in IMAP command LIST: Invalid arguments");
    return;
  }
  ref = &c->arg[j++];
  pat = j;
  if (c->arg[j].type == IMAP_LIST && !lsub) {
    patend = c->arg[j].end;
    pat = j + 1;
    extended = 1;
    j = patend;
  } else if (imap_is_string(&c->arg[j])) {
    patend = j + 1;
    j++;
  } else {
    imap_bad("Error in IMAP command LIST: Invalid arguments");
    return;
  }
  if (!lsub && j < c->nargs && imap_arg_is(&c->arg[j], "RETURN")) {
    uint32_t k, e;
    if (j + 1 >= c->nargs || c->arg[j + 1].type != IMAP_LIST) {
      imap_bad("Error in IMAP command LIST: Invalid RETURN");
      return;
    }
    e = c->arg[j + 1].end;
    for (k = j + 2; k < e; k = imap_next(c, k)) {
      if (imap_arg_is(&c->arg[k], "SUBSCRIBED")) ret_subscribed = 1;
      else if (imap_arg_is(&c->arg[k], "CHILDREN")) ret_children = 1;
      else if (imap_arg_is(&c->arg[k], "SPECIAL-USE")) ret_special = 1;
      else if (imap_arg_is(&c->arg[k], "STATUS") && k + 1 < e &&
               c->arg[k + 1].type == IMAP_LIST) {
        ret_status = k + 1;
        k++;
      } else {
        imap_bad("Error in IMAP command LIST: Unknown return option");
        return;
      }
    }
    extended = 1;
    j = e;
  }
  if (j != c->nargs) {
    imap_bad("Error in IMAP command LIST: Invalid arguments");
    return;
  }
  if (sel_subscribed) ret_subscribed = 1;
  if (sess.utf8) {
    long n = imap_utf8_to_mutf7(ref->s, ref->len, refbuf, sizeof refbuf - 1);
    if (n < 0) n = 0;
    reflen = (size_t)n;
  } else {
    reflen = ref->len < sizeof refbuf ? ref->len : sizeof refbuf - 1;
    memcpy(refbuf, ref->s, reflen);
  }
  /* LIST "" "": the hierarchy delimiter */
  if (!extended && patend == pat + 1 && !c->arg[pat].len) {
    imap_out(lsub ? "* LSUB (\\Noselect) \".\" \"\"\r\n" : "* LIST (\\Noselect) \".\" \"\"\r\n");
    imap_ok(lsub ? "Lsub completed." : "List completed.");
    return;
  }
  if (!build()) {
    imap_no("[SERVERBUG] Internal error listing folders");
    return;
  }
  for (i = 0; i < nnodes; i++) {
    node const *n = &nodes[i];
    uint32_t p;
    int hit = 0, via_child = 0;
    for (p = pat; p < patend; p = imap_next(c, p)) {
      char full[MAILSTORE_NAME_MAX * 8 + 16];
      size_t fl = 0;
      long x;
      imap_arg const *a = &c->arg[p];
      if (!imap_is_string(a)) continue;
      memcpy(full, refbuf, reflen);
      fl = reflen;
      if (sess.utf8) {
        x = imap_utf8_to_mutf7(a->s, a->len, full + fl, sizeof full - fl);
        if (x < 0) continue;
        fl += (size_t)x;
      } else {
        if (a->len > sizeof full - fl) continue;
        memcpy(full + fl, a->s, a->len);
        fl += a->len;
      }
      if (match_name(full, fl, n->name, n->len)) hit = 1;
    }
    if (!hit) continue;
    if (lsub) {
      if (!n->subscribed) {
        /* a parent of a subscribed folder matched by '%': \Noselect */
        if (!n->subchild) continue;
        {
          int pct = 0;
          for (p = pat; p < patend; p = imap_next(c, p))
            if (memchr(c->arg[p].s, '%', c->arg[p].len)) pct = 1;
          if (!pct) continue;
        }
        via_child = 1;
      }
      imap_out("* LSUB (");
      if (via_child || !n->exists) imap_out("\\Noselect");
      imap_out(") \".\" ");
      imap_outmbox(n->name, n->len);
      imap_out("\r\n");
      continue;
    }
    if (sel_subscribed && !n->subscribed) {
      /* RECURSIVEMATCH: shown for a subscribed descendant that no pattern matches itself */
      size_t d;
      if (!(sel_recursive && n->subchild)) continue;
      for (d = 0; d < nnodes; d++) {
        node const *k = &nodes[d];
        uint32_t q;
        int matched = 0;
        if (!k->subscribed || k->len <= n->len + 1 || memcmp(k->name, n->name, n->len) ||
            k->name[n->len] != SEP)
          continue;
        for (q = pat; q < patend; q = imap_next(c, q))
          if (imap_is_string(&c->arg[q]) && match_name(c->arg[q].s, c->arg[q].len, k->name, k->len))
            matched = 1;
        if (!matched) break;
      }
      if (d == nnodes) continue;
      via_child = 1;
    }
    {
      char const *su = mailstore_special_use(n->name, n->len);
      int first = 1;
      if (sel_special && !su) continue;
      if (!n->exists && !via_child && !(n->children && !sel_subscribed)) {
        /* only subscribed, not on disk: shown by LIST (SUBSCRIBED) as \NonExistent */
        if (!sel_subscribed) continue;
      }
      imap_out("* LIST (");
#define ATTR(s)                   \
  do {                            \
    if (!first) imap_out(" ");    \
    imap_out(s);                  \
    first = 0;                    \
  } while (0)
      if (!n->exists) ATTR(extended ? "\\NonExistent" : "\\Noselect");
      if (ret_subscribed && n->subscribed) ATTR("\\Subscribed");
      if (ret_children) ATTR(n->children ? "\\HasChildren" : "\\HasNoChildren");
      if (ret_special && su) ATTR(su);
      imap_out(") \".\" ");
      imap_outmbox(n->name, n->len);
      if (via_child) imap_out(" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
      imap_out("\r\n");
      if (ret_status && n->exists) status_items(n->name, n->len, c, ret_status);
    }
  }
  imap_ok(lsub ? "Lsub completed." : "List completed.");
}

/* ---- STATUS ---- */

/* Writes "* STATUS name (...)" for the items in list node `list` of c. 0 on a bad item. */
static int status_write(char const *name, size_t len, mailstore_status const *st, imap_cmd *c,
                        uint32_t list, int check)
{
  uint32_t k;
  int first = 1;
  if (!check) {
    imap_out("* STATUS ");
    imap_outmbox(name, len);
    imap_out(" (");
  }
  for (k = list + 1; k < c->arg[list].end; k++) {
    imap_arg const *a = &c->arg[k];
    uint64_t v;
    char const *w;
    if (imap_arg_is(a, "MESSAGES")) w = "MESSAGES", v = st->messages;
    else if (imap_arg_is(a, "RECENT")) w = "RECENT", v = st->recent;
    else if (imap_arg_is(a, "UIDNEXT")) w = "UIDNEXT", v = st->uidnext;
    else if (imap_arg_is(a, "UIDVALIDITY")) w = "UIDVALIDITY", v = st->uidvalidity;
    else if (imap_arg_is(a, "UNSEEN")) w = "UNSEEN", v = st->unseen;
    else if (imap_arg_is(a, "SIZE")) w = "SIZE", v = st->size;
    else if (imap_arg_is(a, "DELETED")) w = "DELETED", v = st->deleted;
    else if (imap_arg_is(a, "HIGHESTMODSEQ")) w = "HIGHESTMODSEQ", v = st->highestmodseq;
    else return 0;
    if (check) continue;
    if (!first) imap_out(" ");
    first = 0;
    imap_out(w);
    imap_out(" ");
    imap_outu(v);
  }
  if (!check) imap_out(")\r\n");
  return 1;
}

static void status_items(char const *name, size_t len, imap_cmd *c, uint32_t list)
{
  char dir[MAILSTORE_NAME_MAX + 8];
  mailstore_status st;
  if (!mailstore_folder_dir(name, len, dir)) return;
  if (mailstore_status_get(dir, &st) < 0) return;
  status_write(name, len, &st, c, list, 0);
}

void imap_cmd_status(imap_cmd *c)
{
  char name[MAILSTORE_NAME_MAX + 1], dir[MAILSTORE_NAME_MAX + 8];
  size_t len;
  mailstore_status st;
  if (c->nargs < 2 || c->arg[1].type != IMAP_LIST || c->arg[1].end != c->nargs ||
      !imap_sess_mboxname(&c->arg[0], name, &len)) {
    imap_bad("Error in IMAP command STATUS: Invalid arguments");
    return;
  }
  if (!status_write(name, len, &st, c, 1, 1)) {
    imap_bad("Error in IMAP command STATUS: Unknown status item");
    return;
  }
  if (!mailstore_folder_dir(name, len, dir)) {
    imap_no("[CANNOT] Invalid mailbox name");
    return;
  }
  if (mailstore_status_get(dir, &st) < 0) {
    if (errno == ENOENT) imap_no("[NONEXISTENT] Mailbox doesn't exist");
    else imap_no("[SERVERBUG] Internal error");
    return;
  }
  if (sess.selected && !strcmp(dir, sess.ms.dir)) {
    size_t i, r = 0;
    for (i = 0; i < sess.ms.n; i++)
      if (sess.ms.msg[i].flags & MS_RECENT) r++;
    st.recent = (uint32_t)r;
  }
  status_write(name, len, &st, c, 1, 0);
  imap_sess_update(1, 1);
  imap_ok("Status completed.");
}

/* ---- SELECT / EXAMINE ---- */

void imap_unselect(void)
{
  mailstore_close(&sess.ms);
  msgcache_close(&sess.cache);
  sess.selected = 0;
  sess.readonly = 0;
  sess.reported = 0;
  sess.recent_told = 0;
}

/* SELECT's (QRESYNC (uidvalidity modseq [known-uids [seq-match]])) (RFC 7162 3.2.5): what
 * changed since modseq, as VANISHED (EARLIER) and FETCH responses. */
static void qresync(imap_cmd *c, uint32_t list)
{
  uint32_t j = list + 1, uv;
  uint64_t modseq;
  static imap_range known[IMAP_SEQSET_MAX];
  int nk = -1;
  if (j + 1 >= c->arg[list].end || !imap_number(c->arg[j].s, c->arg[j].len, &uv) ||
      !imap_number64(c->arg[j + 1].s, c->arg[j + 1].len, &modseq))
    return;
  if (j + 2 < c->arg[list].end && c->arg[j + 2].type == IMAP_ATOM)
    nk = imap_seqset(c->arg[j + 2].s, c->arg[j + 2].len, known, IMAP_SEQSET_MAX);
  if (uv != sess.ms.uidvalidity) return;
  imap_sess_vanished(modseq, nk > 0 ? known : 0, nk > 0 ? (size_t)nk : 0, 1);
  {
    size_t i;
    for (i = 0; i < sess.ms.n; i++) {
      mailstore_msg const *m = &sess.ms.msg[i];
      if (m->modseq <= modseq) continue;
      imap_out("* ");
      imap_outu(i + 1);
      imap_out(" FETCH (UID ");
      imap_outu(m->uid);
      imap_out(" FLAGS ");
      imap_outflags(i);
      imap_out(" MODSEQ (");
      imap_outu(m->modseq);
      imap_out("))\r\n");
    }
  }
}

void imap_cmd_select(imap_cmd *c, int readonly)
{
  char name[MAILSTORE_NAME_MAX + 1], dir[MAILSTORE_NAME_MAX + 8];
  size_t len, i, recent = 0, unseen = 0;
  uint32_t qr = 0;
  if (c->nargs < 1 || !imap_sess_mboxname(&c->arg[0], name, &len)) {
    imap_bad("Error in IMAP command SELECT: Invalid arguments");
    return;
  }
  if (c->nargs > 1) {
    uint32_t k;
    if (c->arg[1].type != IMAP_LIST || c->nargs != c->arg[1].end) {
      imap_bad("Error in IMAP command SELECT: Invalid arguments");
      return;
    }
    for (k = 2; k < c->nargs; k = imap_next(c, k)) {
      if (imap_arg_is(&c->arg[k], "CONDSTORE")) sess.condstore = 1; /* HIGHESTMODSEQ below */
      else if (imap_arg_is(&c->arg[k], "QRESYNC") && sess.qresync && k + 1 < c->nargs &&
               c->arg[k + 1].type == IMAP_LIST) {
        qr = k + 1;
        k++;
      } else {
        imap_bad("Error in IMAP command SELECT: Unknown parameter");
        return;
      }
    }
  }
  if (sess.selected) {
    imap_unselect();
    imap_out("* OK [CLOSED] Previous mailbox closed.\r\n");
  }
  if (!mailstore_folder_dir(name, len, dir)) {
    imap_no("[NONEXISTENT] Mailbox doesn't exist");
    return;
  }
  if (mailstore_open(&sess.ms, dir, !readonly) < 0) {
    int e = errno;
    mailstore_close(&sess.ms);
    if (e == ENOENT || e == ENOTDIR) imap_no("[NONEXISTENT] Mailbox doesn't exist");
    else {
      errno = e;
      strerr_warnwu2sys("open folder ", dir);
      imap_no("[SERVERBUG] Internal error opening the mailbox");
    }
    return;
  }
  sess.selected = 1;
  sess.readonly = readonly;
  msgcache_init(&sess.cache, dir, sess.ms.uidvalidity);
  free(sess.saved); /* SEARCHRES: "$" is empty in a newly selected mailbox */
  sess.saved = 0;
  sess.nsaved = 0;
  memcpy(sess.name, name, len + 1);
  mailstore_compact(&sess.ms);
  for (i = 0; i < sess.ms.n; i++) {
    mailstore_msg *m = &sess.ms.msg[i];
    m->flags |= MS_REPORTED;
    m->flags &= ~MS_CHANGED;
    if (m->flags & MS_RECENT) recent++;
    if (!(m->flags & MS_SEEN) && !unseen) unseen = i + 1;
  }
  sess.reported = sess.ms.n;
  sess.recent_told = recent;
  imap_sess_flags();
  imap_out("* ");
  imap_outu(sess.ms.n);
  imap_out(" EXISTS\r\n");
  if (!sess.rev2) {
    imap_out("* ");
    imap_outu(recent);
    imap_out(" RECENT\r\n");
  } else {
    /* RFC 9051 6.3.2: the mailbox's name as the server knows it */
    imap_out("* LIST () \".\" ");
    imap_outmbox(name, len);
    imap_out("\r\n");
  }
  if (unseen && !sess.rev2) {
    imap_out("* OK [UNSEEN ");
    imap_outu(unseen);
    imap_out("] First unseen.\r\n");
  }
  imap_out("* OK [UIDVALIDITY ");
  imap_outu(sess.ms.uidvalidity);
  imap_out("] UIDs valid\r\n* OK [UIDNEXT ");
  imap_outu(sess.ms.uidnext);
  imap_out("] Predicted next UID\r\n");
  if (sess.condstore) {
    imap_out("* OK [HIGHESTMODSEQ ");
    imap_outu(sess.ms.highestmodseq);
    imap_out("] Highest\r\n");
  }
  if (qr) qresync(c, qr);
  imap_ok(readonly ? "[READ-ONLY] Examine completed." : "[READ-WRITE] Select completed.");
}

/* ---- CREATE / DELETE / RENAME / SUBSCRIBE ---- */

void imap_cmd_create(imap_cmd *c)
{
  char name[MAILSTORE_NAME_MAX + 1], dir[MAILSTORE_NAME_MAX + 8];
  size_t len;
  if (c->nargs != 1 || !imap_sess_mboxname(&c->arg[0], name, &len)) {
    imap_bad("Error in IMAP command CREATE: Invalid arguments");
    return;
  }
  if (len && name[len - 1] == SEP) name[--len] = 0;
  if (imap_ieq(name, len, "INBOX")) {
    imap_no("[ALREADYEXISTS] Mailbox already exists");
    return;
  }
  if (!mailstore_folder_dir(name, len, dir)) {
    imap_no("[CANNOT] Invalid mailbox name");
    return;
  }
  if (mailstore_folder_create(dir) < 0) {
    if (errno == EEXIST) imap_no("[ALREADYEXISTS] Mailbox already exists");
    else imap_no("[SERVERBUG] Internal error creating the mailbox");
    return;
  }
  imap_ok("Create completed.");
}

void imap_cmd_delete(imap_cmd *c)
{
  char name[MAILSTORE_NAME_MAX + 1], dir[MAILSTORE_NAME_MAX + 8];
  size_t len;
  struct stat st;
  if (c->nargs != 1 || !imap_sess_mboxname(&c->arg[0], name, &len)) {
    imap_bad("Error in IMAP command DELETE: Invalid arguments");
    return;
  }
  if (imap_ieq(name, len, "INBOX")) {
    imap_no("[CANNOT] INBOX can't be deleted.");
    return;
  }
  if (!mailstore_folder_dir(name, len, dir) || lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
    imap_no("[NONEXISTENT] Mailbox doesn't exist");
    return;
  }
  if (sess.selected && !strcmp(sess.ms.dir, dir)) {
    imap_unselect();
    imap_out("* OK [CLOSED] Mailbox deleted.\r\n");
  }
  if (mailstore_folder_delete(dir) < 0) {
    strerr_warnwu2sys("delete folder ", dir);
    imap_no("[SERVERBUG] Internal error deleting the mailbox");
    return;
  }
  imap_sess_quota_changed();
  imap_ok("Delete completed.");
}

void imap_cmd_rename(imap_cmd *c)
{
  char from[MAILSTORE_NAME_MAX + 1], to[MAILSTORE_NAME_MAX + 1];
  char fdir[MAILSTORE_NAME_MAX + 8], tdir[MAILSTORE_NAME_MAX + 8];
  size_t fl, tl;
  struct stat st;
  if (c->nargs != 2 || !imap_sess_mboxname(&c->arg[0], from, &fl) ||
      !imap_sess_mboxname(&c->arg[1], to, &tl)) {
    imap_bad("Error in IMAP command RENAME: Invalid arguments");
    return;
  }
  if (!mailstore_folder_dir(from, fl, fdir) || lstat(fdir, &st) < 0) {
    imap_no("[NONEXISTENT] Mailbox doesn't exist");
    return;
  }
  if (!mailstore_folder_dir(to, tl, tdir) || !strcmp(tdir, ".")) {
    imap_no("[CANNOT] Invalid mailbox name");
    return;
  }
  if (lstat(tdir, &st) == 0) {
    imap_no("[ALREADYEXISTS] Target mailbox already exists");
    return;
  }
  if (!strcmp(fdir, ".")) {
    /* RENAME INBOX: its messages move to the new folder, INBOX stays (RFC 3501 6.3.5) */
    mailstore in = MAILSTORE_ZERO;
    size_t *idx, i;
    uint32_t *uids, uv;
    if (mailstore_folder_create(tdir) < 0 || mailstore_open(&in, ".", 0) < 0) {
      mailstore_close(&in);
      imap_no("[SERVERBUG] Internal error");
      return;
    }
    idx = malloc((in.n + 1) * sizeof *idx);
    uids = malloc((in.n + 1) * sizeof *uids);
    if (!idx || !uids) {
      free(idx);
      free(uids);
      mailstore_close(&in);
      imap_no("[SERVERBUG] out of memory");
      return;
    }
    for (i = 0; i < in.n; i++) idx[i] = i;
    if (in.n && mailstore_copy(&in, idx, in.n, tdir, 1, uids, &uv) < 0) {
      free(idx);
      free(uids);
      mailstore_close(&in);
      imap_no("[SERVERBUG] Internal error moving messages");
      return;
    }
    free(idx);
    free(uids);
    mailstore_close(&in);
    imap_sess_update(1, 1);
    imap_ok("Rename completed.");
    return;
  }
  if (sess.selected && !strcmp(sess.ms.dir, fdir)) {
    imap_unselect();
    imap_out("* OK [CLOSED] Mailbox renamed.\r\n");
  }
  if (mailstore_folder_rename(fdir, tdir) < 0) {
    if (errno == EEXIST) imap_no("[ALREADYEXISTS] Target mailbox already exists");
    else imap_no("[SERVERBUG] Internal error renaming the mailbox");
    return;
  }
  imap_ok("Rename completed.");
}

void imap_cmd_subscribe(imap_cmd *c, int on)
{
  char name[MAILSTORE_NAME_MAX + 1], dir[MAILSTORE_NAME_MAX + 8];
  size_t len;
  if (c->nargs != 1 || !imap_sess_mboxname(&c->arg[0], name, &len) ||
      !mailstore_folder_dir(name, len, dir)) {
    imap_bad(on ? "Error in IMAP command SUBSCRIBE: Invalid arguments"
                : "Error in IMAP command UNSUBSCRIBE: Invalid arguments");
    return;
  }
  if (mailstore_subscribe(name, len, on) < 0) {
    imap_no("[SERVERBUG] Internal error");
    return;
  }
  imap_ok(on ? "Subscribe completed." : "Unsubscribe completed.");
}
