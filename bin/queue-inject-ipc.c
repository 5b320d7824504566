/* queue-inject-ipc: the local injection socket, both ends.
 *
 * Server (no option; run by s6-ipcserver on MAILROOT/queue/inject.sock, as the queue user):
 * reads one message from the client on fd 0 and runs queue-inject with it, after a trace line
 * naming the client's uid and gid as s6-ipcserver found them (IPCREMOTEEUID, IPCREMOTEEGID):
 * "Received: by ME (pillarbox local injection, uid N, gid G); DATE".
 * Client (-c [SOCKET]): the qmail-queue interface (message on fd 0, envelope on fd 1, queue
 * id on $QUEUE_IDFD) for callers that cannot write the queue; forwards over the socket.
 *
 * The framing on the socket (client to server): optionally "S" and one netstring (at most
 * 4096 bytes) of session facts, lines "name=value\n" (service, ip, helo, user, tls, relay);
 * the message as netstrings "LEN:bytes," of at most 65536 bytes each, an empty netstring "0:,"
 * to end it, then the envelope in one netstring (at most 1 MiB). Server to client: one line
 * "CODE ID\n", CODE being queue-inject's exit code and ID its queue id (maybe empty). A
 * connection closed before the envelope commits nothing. The client side lives in lib/inject.
 *
 * The facts are believed only from a trusted peer: IPCREMOTEEUID equal to our own euid, or
 * listed in $INJECT_TRUSTED_UIDS (comma-separated). Then queue-inject gets them as
 * INJECT_SERVICE, INJECT_REMOTEIP, INJECT_HELO, INJECT_AUTHUSER, INJECT_TLS, INJECT_RELAY, and
 * no trace line is added (the network service wrote its own Received:). From anybody else
 * they are ignored (and logged) and the local injection trace line is written.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/tai.h>
#include <skalibs/sgetopt.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "control.h"
#include "inject.h"
#include "spawn.h"

char const *PROG = "queue-inject-ipc";
#define USAGE "queue-inject-ipc [ -c [ socket ] ]"

#define CHUNK 65536
#define ENV_MAX (1024 * 1024)
#define TIMEOUT 600

static char buf[CHUNK];

static int readall(int fd, char *s, size_t n)
{
  return allread(fd, s, n) == n;
}

/* Reads "LEN:" from fd (first: a byte already read, or -1); returns LEN or -1. */
static long read_nslen(int fd, long max, int first)
{
  unsigned long n = 0;
  unsigned int digits = 0;
  for (;;) {
    char c;
    if (first >= 0) { c = (char)first; first = -1; }
    else if (fd_read(fd, &c, 1) != 1) return -1;
    if (c == ':') break;
    if (c < '0' || c > '9' || ++digits > 9) return -1;
    n = n * 10 + (unsigned long)(c - '0');
  }
  if (!digits || n > (unsigned long)max) return -1;
  return (long)n;
}

/* Appends the value of the environment variable name if it is a decimal number, else
 * "unknown" (the server was not started by s6-ipcserver). */
static int cat_id(stralloc *sa, char const *name)
{
  char const *x = getenv(name);
  unsigned int u;
  size_t n;
  if (x && *x && (n = uint_scan(x, &u)) && !x[n]) {
    char fmt[UINT_FMT];
    return stralloc_catb(sa, fmt, uint_fmt(fmt, u));
  }
  return stralloc_cats(sa, "unknown");
}

/* The trace line: who injected (the peer's credentials, from the kernel through s6-ipcserver,
 * not from anything the client says), where and when. */
static int trace_line(stralloc *sa)
{
  stralloc me = STRALLOC_ZERO;
  char date[64];
  time_t t = time(0);
  struct tm tm;
  int r = control_readline(&me, "me"), ok;
  if (r < 0) return 0;
  if (!gmtime_r(&t, &tm) || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm))
    return 0;
  sa->len = 0;
  ok = stralloc_cats(sa, "Received: ") &&
       (!r || (stralloc_cats(sa, "by ") && stralloc_catb(sa, me.s, me.len) &&
               stralloc_cats(sa, " "))) &&
       stralloc_cats(sa, "(pillarbox local injection, uid ") && cat_id(sa, "IPCREMOTEEUID") &&
       stralloc_cats(sa, ", gid ") && cat_id(sa, "IPCREMOTEEGID") &&
       stralloc_cats(sa, ");\n\t") && stralloc_cats(sa, date) && stralloc_cats(sa, "\n");
  stralloc_free(&me);
  if (ok) {
    size_t i;
    for (i = 0; i < sa->len - 1; i++) /* control/me is one line, but keep the header one field */
      if (sa->s[i] == '\n' && sa->s[i + 1] != '\t') sa->s[i] = ' ';
  }
  return ok;
}

static int trusted(void)
{
  char const *x = getenv("IPCREMOTEEUID"), *t = getenv("INJECT_TRUSTED_UIDS");
  unsigned int u, v;
  size_t n;
  if (!x || !(n = uint_scan(x, &u)) || x[n]) return 0;
  if (u == (unsigned int)geteuid()) return 1;
  while (t && *t) {
    n = uint_scan(t, &v);
    if (!n) break;
    if (v == u) return 1;
    t += n;
    if (*t == ',') t++;
  }
  return 0;
}

/* Exports the facts s[0..n) ("name=value\n" lines) for queue-inject. */
static void export_facts(char *s, size_t n)
{
  static char const *const names[][2] = {
    {"service", "INJECT_SERVICE"}, {"ip", "INJECT_REMOTEIP"}, {"helo", "INJECT_HELO"},
    {"user", "INJECT_AUTHUSER"}, {"tls", "INJECT_TLS"}, {"relay", "INJECT_RELAY"}};
  size_t i = 0;
  while (i < n) {
    size_t e = i, k;
    while (e < n && s[e] != '\n') e++;
    s[e] = 0;
    for (k = 0; k < sizeof names / sizeof names[0]; k++) {
      size_t l = strlen(names[k][0]);
      if (!strncmp(s + i, names[k][0], l) && s[i + l] == '=' &&
          setenv(names[k][1], s + i + l + 1, 1) < 0)
        strerr_diefusys(111, "setenv");
    }
    i = e + 1;
  }
}

static int server(void)
{
  int pm[2], pe[2], pi[2], w, first = -1, facts = 0, v2 = 0;
  char early[64];
  size_t el = 0;
  pid_t pid;
  stralloc env = STRALLOC_ZERO;
  char line[64 + UINT_FMT];
  size_t ll = 0;
  alarm(TIMEOUT);
  {
    char c;
    if (fd_read(0, &c, 1) != 1)
      strerr_dief(100, "client went away or broke the protocol; nothing queued");
    if (c == 'S') {
      v2 = 1;
      long n = read_nslen(0, INJECT_FACTS_MAX, -1);
      char f[INJECT_FACTS_MAX + 1], z;
      if (n < 0 || !readall(0, f, (size_t)n) || fd_read(0, &z, 1) != 1 || z != ',')
        strerr_dief(100, "client went away or broke the protocol; nothing queued");
      if (trusted()) {
        export_facts(f, (size_t)n);
        facts = 1;
      } else
        strerr_warnw("ignoring session facts from an untrusted uid ",
                     getenv("IPCREMOTEEUID") ? getenv("IPCREMOTEEUID") : "unknown");
    } else first = (unsigned char)c;
  }
  if (facts) env.len = 0;
  else if (!trace_line(&env)) strerr_diefusys(111, "make the Received: line");
  if (pipecoe(pm) < 0 || pipecoe(pe) < 0 || pipecoe(pi) < 0) strerr_diefusys(111, "pipe");
  { /* queue-inject: the message on 0, the envelope on 1, its queue id on 3 */
    static char const *envp[SPAWN_ENVMAX + 1];
    char const *argv[2] = {"queue-inject", 0};
    char const *mods[1] = {"QUEUE_IDFD=3"};
    spawn_fd map[3] = {{0, pm[0]}, {1, pe[0]}, {3, pi[1]}};
    if (spawn_env(envp, SPAWN_ENVMAX + 1, mods, 1) < 0) strerr_diefusys(111, "set QUEUE_IDFD");
    pid = spawn(argv, envp, map, 3);
    if (pid < 0) strerr_diefusys(111, "run queue-inject");
  }
  fd_close(pm[0]);
  fd_close(pe[0]);
  fd_close(pi[1]);
  if (v2) {
    /* a client that sent facts gets the queue id at once ("I" ID "\n"): queue-inject tells it
     * before it reads the message */
    char line[sizeof early + 2];
    size_t i;
    tain d;
    tain_now_set_stopwatch_g();
    tain_addsec_g(&d, 5); /* a hook in front of queue-inject may tell it only at the end */
    while (el < sizeof early - 1) {
      iopause_fd x = {pi[0], IOPAUSE_READ, 0};
      if (iopause_g(&x, 1, &d) <= 0 || fd_read(pi[0], early + el, 1) != 1 || early[el] == '\n')
        break;
      el++;
    }
    for (i = 0; i < el && early[i] > 32 && early[i] < 127; i++)
      ;
    el = i;
    line[0] = 'I';
    memcpy(line + 1, early, el);
    line[el + 1] = '\n';
    if (allwrite(1, line, el + 2) != el + 2) goto abort;
  }
  if (allwrite(pm[1], env.s, env.len) != env.len && errno != EPIPE) goto abort;
  env.len = 0;
  for (;;) {
    long n = read_nslen(0, CHUNK, first);
    char c;
    first = -1;
    if (n < 0 || !readall(0, buf, (size_t)n) || fd_read(0, &c, 1) != 1 || c != ',') goto abort;
    if (!n) break;
    if (allwrite(pm[1], buf, (size_t)n) != (size_t)n) {
      if (errno != EPIPE) goto abort;
    }
  }
  fd_close(pm[1]);
  {
    long n = read_nslen(0, ENV_MAX, -1);
    char c;
    if (n < 0 || !stralloc_ready(&env, (size_t)n) || !readall(0, env.s, (size_t)n) ||
        fd_read(0, &c, 1) != 1 || c != ',')
      goto abort;
    env.len = (size_t)n;
  }
  allwrite(pe[1], env.s, env.len);
  fd_close(pe[1]);
  {
    char id[64];
    size_t il = allread(pi[0], id, sizeof id - 1), i = 0;
    if (!il && el) memcpy(id, early, il = el); /* told early, not again */
    while (i < il && id[i] > 32 && id[i] < 127) i++;
    il = i;
    fd_close(pi[0]);
    if (wait_pid(pid, &w) != pid) strerr_diefusys(111, "wait for queue-inject");
    ll = uint_fmt(line, WIFEXITED(w) ? (unsigned int)WEXITSTATUS(w) : 81u);
    line[ll++] = ' ';
    memcpy(line + ll, id, il);
    ll += il;
    line[ll++] = '\n';
  }
  if (allwrite(1, line, ll) != ll) strerr_diefusys(111, "write to client");
  return 0;
abort:
  fd_close(pm[1]);
  fd_close(pe[1]);
  kill(pid, SIGTERM);
  wait_pid(pid, &w);
  strerr_dief(100, "client went away or broke the protocol; nothing queued");
}

static int client(char const *path)
{
  injector j;
  stralloc env = STRALLOC_ZERO, id = STRALLOC_ZERO;
  int code;
  if (!inject_start_socket(&j, path, 0, TIMEOUT)) {
    strerr_warnwusys("connect to ", path);
    return 71; /* qmail-queue: temporary, unable to reach the queue */
  }
  for (;;) {
    ssize_t r = fd_read(0, buf, sizeof buf);
    if (r < 0) { strerr_warnwusys("read the message"); inject_abort(&j); return 54; }
    if (!r) break;
    inject_write(&j, buf, (size_t)r);
  }
  for (;;) {
    ssize_t r = fd_read(1, buf, sizeof buf);
    if (r < 0) { strerr_warnwusys("read the envelope"); inject_abort(&j); return 54; }
    if (!r) break;
    if (env.len + (size_t)r > ENV_MAX) { inject_abort(&j); return 91; }
    if (!stralloc_catb(&env, buf, (size_t)r)) { inject_abort(&j); return 51; }
  }
  code = inject_commit(&j, env.s, env.len, &id);
  if (code < 0 || code == 111) {
    strerr_warnw("no answer from ", path);
    return 81;
  }
  if (!code && id.len) {
    char const *idfd = getenv("QUEUE_IDFD");
    unsigned int fd;
    if (idfd && uint0_scan(idfd, &fd) && stralloc_catb(&id, "\n", 1))
      allwrite((int)fd, id.s, id.len);
  }
  return code;
}

int main(int argc, char const *const *argv)
{
  subgetopt l = SUBGETOPT_ZERO;
  int cl = 0;
  for (;;) {
    int opt = subgetopt_r(argc, argv, "c", &l);
    if (opt == -1) break;
    switch (opt) {
      case 'c': cl = 1; break;
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (sig_altignore(SIGPIPE) < 0) strerr_diefusys(111, "ignore SIGPIPE");
  if (cl) {
    stralloc p = STRALLOC_ZERO;
    if (argc) return client(argv[0]);
    if (!mailroot_path(&p, "queue/inject.sock")) strerr_diefusys(111, "allocate");
    return client(p.s);
  }
  if (argc) strerr_dieusage(100, USAGE);
  return server();
}
