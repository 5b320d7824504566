/* queue-list: one line per queued message (doc/queue-list.8).
 *
 * Reads queue/mess/ (header and envelope of each file, never the message), queue/state/ and
 * queue/hold/ once, and prints the messages sorted by id, each followed by the last
 * diagnostic of its deferred or failed recipients. -j: one JSON object per line.
 * -s: a summary like Postfix's qshape: recipients not yet delivered, by domain and age.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/buffer.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"
#include "qlog.h"
#include "queue.h"

char const *PROG = "queue-list";
#define USAGE "queue-list [ -j | -s ] [ id ... ]"

static int json = 0, summary = 0;
static stralloc qdir = STRALLOC_ZERO;
static stralloc names = STRALLOC_ZERO;

/* sorted NUL-separated names of a directory, as offsets into names */
typedef struct nameset_s nameset;
struct nameset_s {
  size_t *off;
  size_t n;
};

static int cmpname(void const *a, void const *b)
{
  char const *x = names.s + *(size_t const *)a, *y = names.s + *(size_t const *)b;
  size_t lx = strlen(x), ly = strlen(y);
  if (lx != ly) { /* ids: compare the seconds numerically first */
    char const *dx = strchr(x, '.'), *dy = strchr(y, '.');
    size_t sx = dx ? (size_t)(dx - x) : lx, sy = dy ? (size_t)(dy - y) : ly;
    if (sx != sy) return sx < sy ? -1 : 1;
  }
  return strcmp(x, y);
}

static void readnames(char const *sub, nameset *ns)
{
  stralloc p = STRALLOC_ZERO;
  DIR *d;
  struct dirent *de;
  size_t cap = 0;
  ns->off = 0;
  ns->n = 0;
  if (!queue_path(&p, qdir.s, sub)) strerr_diefu1sys(111, "allocate");
  d = opendir(p.s);
  if (!d) {
    if (errno == ENOENT) {
      stralloc_free(&p);
      return;
    }
    strerr_diefu2sys(111, "open ", p.s);
  }
  for (;;) {
    errno = 0;
    de = readdir(d);
    if (!de) break;
    if (!queue_id_ok(de->d_name, strlen(de->d_name))) continue;
    if (ns->n == cap) {
      size_t *o;
      cap = cap ? cap * 2 : 1024;
      o = realloc(ns->off, cap * sizeof *o);
      if (!o) strerr_diefu1sys(111, "allocate");
      ns->off = o;
    }
    ns->off[ns->n++] = names.len;
    if (!stralloc_cats(&names, de->d_name) || !stralloc_0(&names))
      strerr_diefu1sys(111, "allocate");
  }
  if (errno) strerr_diefu2sys(111, "read ", p.s);
  closedir(d);
  stralloc_free(&p);
  if (ns->n > 1) qsort(ns->off, ns->n, sizeof *ns->off, &cmpname);
}

static int inset(nameset const *ns, char const *id)
{
  size_t lo = 0, hi = ns->n;
  while (lo < hi) {
    size_t m = (lo + hi) / 2;
    int c;
    size_t key = names.len;
    /* compare through cmpname: put id temporarily at the end of names */
    if (!stralloc_cats(&names, id) || !stralloc_0(&names)) strerr_diefu1sys(111, "allocate");
    c = cmpname(&key, &ns->off[m]);
    names.len = key;
    if (!c) return 1;
    if (c < 0) hi = m;
    else lo = m + 1;
  }
  return 0;
}

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

static void outjs(char const *s, size_t n)
{
  size_t i;
  outb("\"", 1);
  for (i = 0; i < n; i++) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      outb(e, 2);
    } else if (c < 32 || c == 127) {
      static char const hex[] = "0123456789abcdef";
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      outb(e, 6);
    } else
      outb((char *)&c, 1);
  }
  outb("\"", 1);
}

static void outage(uint64_t secs)
{
  char b[UINT64_FMT + 1];
  size_t n;
  char unit = 's';
  if (secs >= 172800) secs /= 86400, unit = 'd';
  else if (secs >= 7200) secs /= 3600, unit = 'h';
  else if (secs >= 120) secs /= 60, unit = 'm';
  n = uint64_fmt(b, secs);
  b[n++] = unit;
  outb(b, n);
}

/* "  ADDR: DIAG (REMOTE-MTA)" */
static void outdiag(char const *addr, char const *diag)
{
  out("  ");
  out(addr);
  out(": ");
  out(qlog_shown(diag));
  if (!strncmp(diag, "R=", 2) && strncmp(diag, "R=- ", 4)) {
    char const *sp = strchr(diag, ' ');
    out(" (");
    outb(diag + 2, sp ? (size_t)(sp - diag - 2) : strlen(diag + 2));
    out(")");
  }
  out("\n");
}

/* ---- the summary (qshape) ---- */

#define NBUCKETS 10 /* ages under 5, 10, 20, ... 1280 minutes, and older */
static unsigned long const bucket_max[NBUCKETS - 1] = {5, 10, 20, 40, 80, 160, 320, 640, 1280};

typedef struct shape_s shape;
struct shape_s {
  char *domain;
  unsigned long n[NBUCKETS + 1]; /* [0]: total */
};
static shape *shapes;
static size_t nshapes;

static void shape_add(char const *addr, uint64_t age)
{
  char const *at = strrchr(addr, '@');
  char const *dom = at ? at + 1 : addr;
  size_t i, b = 0;
  uint64_t m = age / 60;
  while (b < NBUCKETS - 1 && m >= bucket_max[b]) b++;
  for (i = 0; i < nshapes; i++)
    if (!strcasecmp(shapes[i].domain, dom)) break;
  if (i == nshapes) {
    shape *n = realloc(shapes, (nshapes + 1) * sizeof *n);
    if (!n) strerr_diefu1sys(111, "allocate");
    shapes = n;
    memset(&shapes[i], 0, sizeof shapes[i]);
    shapes[i].domain = strdup(dom);
    if (!shapes[i].domain) strerr_diefu1sys(111, "allocate");
    nshapes++;
  }
  shapes[i].n[0]++;
  shapes[i].n[1 + b]++;
}

static int shapecmp(void const *a, void const *b)
{
  shape const *x = a, *y = b;
  if (x->n[0] != y->n[0]) return x->n[0] > y->n[0] ? -1 : 1;
  return strcasecmp(x->domain, y->domain);
}

static void outpad(char const *s, size_t width)
{
  size_t l = strlen(s);
  while (l++ < width) out(" ");
  out(s);
}

static void outcount(unsigned long u, size_t width)
{
  char b[ULONG_FMT];
  b[ulong_fmt(b, u)] = 0;
  outpad(b, width);
}

/* qshape's table: the TOTAL row, then one row per domain, most recipients first */
static void shape_print(void)
{
  static char const *const heads[NBUCKETS + 1] = {"T", "5", "10", "20", "40", "80", "160",
                                                 "320", "640", "1280", "1280+"};
  size_t w = 5, i, j;
  shape total;
  memset(&total, 0, sizeof total);
  for (i = 0; i < nshapes; i++) {
    if (strlen(shapes[i].domain) > w) w = strlen(shapes[i].domain);
    for (j = 0; j <= NBUCKETS; j++) total.n[j] += shapes[i].n[j];
  }
  if (nshapes > 1) qsort(shapes, nshapes, sizeof *shapes, &shapecmp);
  outpad("", w);
  for (j = 0; j <= NBUCKETS; j++) outpad(heads[j], 6);
  out("\n");
  outpad("TOTAL", w);
  for (j = 0; j <= NBUCKETS; j++) outcount(total.n[j], 6);
  out("\n");
  for (i = 0; i < nshapes; i++) {
    outpad(shapes[i].domain, w);
    for (j = 0; j <= NBUCKETS; j++) outcount(shapes[i].n[j], 6);
    out("\n");
  }
}

static void show(char const *id, int hasstate, int held, uint64_t now)
{
  queue_hdr h;
  stralloc env = STRALLOC_ZERO;
  uint64_t size = 0;
  queue_target *t = 0;
  size_t nt = 0, i;
  int fd = queue_open(qdir.s, id, &h, &env, &size), badstate = 0;
  char const *sender;
  if (fd < 0) {
    if (errno == ENOENT) goto end; /* delivered meanwhile */
    if (errno == EPROTO) {
      if (summary) goto end;
      if (json) {
        out("{\"id\":");
        outjs(id, strlen(id));
        out(",\"corrupt\":true}\n");
      } else {
        out(id);
        out(" corrupt\n");
      }
      goto end;
    }
    strerr_diefu2sys(111, "open queue file ", id);
  }
  close(fd);
  sender = env.s + 1;
  if (hasstate) {
    int r = queue_state_read(qdir.s, id, &t, &nt);
    if (r < 0 && errno != EPROTO && errno != ENOENT) strerr_diefu2sys(111, "read state of ", id);
    if (r < 0) badstate = 1;
    if (r <= 0) t = 0, nt = 0;
  }
  if (!t) {
    /* not tried yet: the envelope's recipients */
    size_t pos = (size_t)(sender + strlen(sender) + 1 - env.s), rl;
    char const *rc;
    unsigned int k = 0;
    while (queue_env_next(env.s, env.len, &pos, &rc, &rl)) {
      queue_target *n = realloc(t, (nt + 1) * sizeof *n);
      if (!n) strerr_diefu1sys(111, "allocate");
      t = n;
      memset(&t[nt], 0, sizeof t[nt]);
      t[nt].state = QUEUE_T_NEW;
      t[nt].rcpt = k++;
      t[nt].addr = (char *)rc; /* not owned */
      t[nt].diag = (char *)"";
      nt++;
    }
    hasstate = 0;
  }
  if (summary) {
    for (i = 0; i < nt; i++)
      if (t[i].state != QUEUE_T_DONE && t[i].state != QUEUE_T_BOUNCED)
        shape_add(t[i].addr, now > h.arrival ? now - h.arrival : 0);
  } else if (json) {
    out("{\"id\":");
    outjs(id, strlen(id));
    out(",\"arrival\":");
    outu(h.arrival);
    out(",\"age\":");
    outu(now > h.arrival ? now - h.arrival : 0);
    out(",\"size\":");
    outu(h.msglen);
    out(",\"sender\":");
    outjs(sender, strlen(sender));
    out(held ? ",\"held\":true" : ",\"held\":false");
    if (badstate) out(",\"badstate\":true");
    out(",\"recipients\":[");
    for (i = 0; i < nt; i++) {
      if (i) out(",");
      out("{\"address\":");
      outjs(t[i].addr, strlen(t[i].addr));
      out(",\"state\":\"");
      out(queue_t_name(t[i].state));
      out("\",\"attempts\":");
      outu(t[i].attempts);
      out(",\"next\":");
      outu(t[i].next);
      out(",\"diagnostic\":");
      outjs(t[i].diag, strlen(t[i].diag));
      out("}");
    }
    out("]}\n");
  } else {
    out(id);
    out(" ");
    outage(now > h.arrival ? now - h.arrival : 0);
    out(" ");
    outu(h.msglen);
    out(" <");
    out(sender);
    out(">");
    if (held) out(" held");
    for (i = 0; i < nt; i++) {
      out(" ");
      out(t[i].addr);
      out(":");
      out(queue_t_name(t[i].state));
      if (t[i].attempts) {
        out("/");
        outu(t[i].attempts);
      }
      if ((t[i].state == QUEUE_T_LOCAL || t[i].state == QUEUE_T_REMOTE) && t[i].next > now) {
        out("/next=+");
        outage(t[i].next - now);
      }
    }
    out("\n");
    for (i = 0; i < nt; i++) /* the last diagnostic of what is deferred or failed */
      if (t[i].diag[0] && t[i].state != QUEUE_T_DONE && t[i].state != QUEUE_T_BOUNCED)
        outdiag(t[i].addr, t[i].diag);
  }
  if (hasstate) queue_targets_free(t, nt);
  free(t);
end:
  stralloc_free(&env);
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  nameset mess, state, hold;
  uint64_t now = (uint64_t)time(0);
  size_t i;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "js", &l);
    if (opt == -1) break;
    switch (opt) {
    case 'j': json = 1; break;
    case 's': summary = 1; break;
    default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (!stralloc_cats(&qdir, mailroot()) || !stralloc_cats(&qdir, "/queue") || !stralloc_0(&qdir))
    strerr_diefu1sys(111, "allocate");
  readnames("mess", &mess);
  readnames("state", &state);
  readnames("hold", &hold);
  if (argc) {
    int i2;
    for (i2 = 0; i2 < argc; i2++) {
      if (!queue_id_ok(argv[i2], strlen(argv[i2])))
        strerr_dief2x(100, "not a queue id: ", argv[i2]);
      if (!inset(&mess, argv[i2])) strerr_dief2x(100, "no such message: ", argv[i2]);
      show(argv[i2], inset(&state, argv[i2]), inset(&hold, argv[i2]), now);
    }
  } else {
    for (i = 0; i < mess.n; i++) {
      char id[QUEUE_ID_MAX];
      strcpy(id, names.s + mess.off[i]); /* inset() may move names.s */
      show(id, inset(&state, id), inset(&hold, id), now);
    }
  }
  if (summary) shape_print();
  if (!buffer_flush(buffer_1)) strerr_diefu1sys(111, "write to stdout");
  return 0;
}
