/* auth-serve: the auth service. The only reader of control/passwd.cdb.
 *
 * One long-running process (uid pb-auth) serving the UNIX socket MAILROOT/run/auth/socket with
 * the protocol of lib/authclient.h. Each request is looked up at once (cdb, no blocking); a
 * password that needs checking is either in the verified-credential cache (lib/authcache: no
 * hash) or waits in a FIFO queue for one of at most N hashing slots. A hash runs in a child
 * process (fork, crypt_r, exit status = verdict), so the event loop (iopause + tain, self-pipe
 * for SIGCHLD / SIGTERM) never blocks, and a login storm costs at most N hashes' memory at
 * once. A request still queued after the queue deadline is answered "busy" (temporary).
 * `-i` serves one request on fd 0/1 in-process (auth-check's direct mode).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/buffer.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/selfpipe.h>
#include <skalibs/sgetopt.h>
#include <skalibs/socket.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "authcache.h"
#include "authclient.h"
#include "authdb.h"
#include "control.h"
#include "lookup.h"
#include "passwd.h"
#include "spawn.h"

#define USAGE \
  "auth-serve [-i] [-n hashes] [-t ttl] [-C cachesize] [-c maxconn] [-q queuetimeout]" \
  " [-d notif] [socket]"
char const *PROG = "auth-serve";

#define READ_TIMEOUT 10  /* seconds a client has to send its request */
#define WRITE_TIMEOUT 10 /* ... and to take the reply */
#define HASH_TIMEOUT 60  /* a hash child still running then is killed */

enum { S_FREE, S_READ, S_QUEUED, S_HASHING, S_WRITE };

typedef struct conn_s conn;
struct conn_s {
  int fd;
  int state;
  tain deadline;
  size_t len;             /* request octets in buf */
  size_t passoff;         /* where the password starts in buf */
  char buf[AUTHPROTO_REQ_MAX];
  stralloc hash;          /* what the password is checked against (NUL-terminated) */
  stralloc ok;            /* the reply if the password is good */
  stralloc out;           /* the reply being sent */
  size_t outpos;
  int real;               /* an account with a hash: a good check goes into the cache */
  unsigned char key[32];  /* authcache key and hd */
  unsigned char hd[32];
  pid_t pid;
  tain started;
};

static unsigned int maxhash, ttl = 300, cachesize = 4096, maxconn = 64, qtimeout = 10;
static conn *conns;
static unsigned int *queue, qhead, qlen; /* FIFO of conn indices */
static unsigned int running;

static struct {
  unsigned long requests, hashes, cache_hits, good, bad, temp, busy;
  unsigned int max_running, max_queued;
} st;

static void wipe(void *p, size_t n)
{
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
}

static uint64_t now_sec(void)
{
  return (uint64_t)tai_sec(tain_secp(&STAMP));
}

static unsigned int ms_since(tain const *t)
{
  tain d;
  tain_sub(&d, &STAMP, t);
  return (unsigned int)tain_to_millisecs(&d);
}

/* One log line to stderr: "auth-serve: info: " then the pieces. */
static void logline(char const *const *v, unsigned int n)
{
  unsigned int i;
  buffer_puts(buffer_2, PROG);
  buffer_puts(buffer_2, ": info:");
  for (i = 0; i < n; i++) {
    buffer_puts(buffer_2, " ");
    buffer_puts(buffer_2, v[i]);
  }
  buffer_putflush(buffer_2, "\n", 1);
}

/* A name from the client, safe for the log: printable ASCII, at most 64 octets. */
static char const *logname(char const *u)
{
  static char b[65];
  size_t i;
  for (i = 0; i < 64 && u[i]; i++) b[i] = (u[i] > 0x20 && u[i] < 0x7f) ? u[i] : '?';
  b[i] = 0;
  return b;
}

static int reply_code(conn *c, char code, char const *text)
{
  c->out.len = 0;
  c->outpos = 0;
  if (!stralloc_catb(&c->out, &code, 1)) return 0;
  if (text && (!stralloc_cats(&c->out, text) || !stralloc_0(&c->out))) return 0;
  return 1;
}

static void temp(conn *c, char const *why)
{
  st.temp++;
  if (!reply_code(c, 'T', why)) c->out.len = 0;
}

static void stats(conn *c)
{
  static char const *const names[] = {"requests", "hashes", "cache_hits", "good", "bad",
                                      "temp", "busy", "running", "max_running", "max_hashes",
                                      "queued", "max_queued", "cache_entries", "cache_ttl"};
  unsigned long v[14];
  unsigned int i;
  v[0] = st.requests;
  v[1] = st.hashes;
  v[2] = st.cache_hits;
  v[3] = st.good;
  v[4] = st.bad;
  v[5] = st.temp;
  v[6] = st.busy;
  v[7] = running;
  v[8] = st.max_running;
  v[9] = maxhash;
  v[10] = qlen;
  v[11] = st.max_queued;
  v[12] = authcache_count();
  v[13] = ttl;
  c->out.len = 0;
  c->outpos = 0;
  if (!stralloc_catb(&c->out, "S", 1)) goto err;
  for (i = 0; i < 14; i++) {
    char fmt[ULONG_FMT];
    if (!stralloc_cats(&c->out, names[i]) || !stralloc_catb(&c->out, "=", 1) ||
        !stralloc_catb(&c->out, fmt, ulong_fmt(fmt, v[i])) || !stralloc_catb(&c->out, "\n", 1))
      goto err;
  }
  return;
err:
  c->out.len = 0;
}

/* Is buf a complete request? 1 yes (passoff set for 'C'), 0 not yet, -1 malformed. */
static int complete(conn *c)
{
  char const *z1, *z2;
  if (!c->len) return 0;
  if (c->buf[0] == 'S') return c->len == 1 ? 1 : -1;
  if (c->buf[0] != 'C') return -1;
  z1 = memchr(c->buf + 1, 0, c->len - 1);
  if (!z1) return c->len - 1 > AUTHPROTO_USER_MAX ? -1 : 0;
  if (z1 == c->buf + 1 || z1 - c->buf - 1 > AUTHPROTO_USER_MAX) return -1;
  z2 = memchr(z1 + 1, 0, c->len - (size_t)(z1 + 1 - c->buf));
  if (!z2) return 0;
  if (z2 + 1 != c->buf + c->len) return -1;
  c->passoff = (size_t)(z1 + 1 - c->buf);
  return 1;
}

/* Looks the request up. Returns 1 when c->out holds the reply, 0 when a hash must run. */
static int prepare(conn *c)
{
  account a = ACCOUNT_ZERO;
  char const *user = c->buf + 1, *pass = c->buf + c->passoff;
  int r;
  st.requests++;
  if (c->buf[0] == 'S') {
    stats(c);
    return 1;
  }
  r = authdb_ready();
  if (r <= 0) {
    if (r < 0) strerr_warnwu1sys("read control/passwd.cdb");
    else strerr_warnwu1x("read control/passwd.cdb: permission denied (run as its owner)");
    temp(c, "unable to read the password database");
    return 1;
  }
  r = lookup_account(user, c->passoff - 2, &a);
  if (r < 0) {
    strerr_warnwu1sys("read the account databases");
    account_free(&a);
    temp(c, "unable to read the account database");
    return 1;
  }
  c->real = r > 0 && a.hash.len > 1 && a.hash.s[0] != '!' && a.hash.s[0] != '*';
  c->hash.len = c->ok.len = 0;
  if (c->real) {
    if (!stralloc_copy(&c->hash, &a.hash) || !stralloc_catb(&c->ok, "K", 1) ||
        !stralloc_cat(&c->ok, &a.address) || !stralloc_cat(&c->ok, &a.maildir))
      goto nomem;
    authcache_key(c->key, a.address.s, a.address.len - 1, pass, strlen(pass));
    authcache_hd(c->hd, a.hash.s);
    if (authcache_hit(c->key, c->hd, now_sec())) {
      char const *v[3] = {"good", a.address.s, "cached"};
      st.cache_hits++;
      st.good++;
      logline(v, 3);
      c->out.len = 0;
      c->outpos = 0;
      if (!stralloc_copy(&c->out, &c->ok)) goto nomem;
      account_free(&a);
      return 1;
    }
  } else if (!stralloc_copys(&c->hash, passwd_dummy()) || !stralloc_0(&c->hash))
    goto nomem;
  account_free(&a);
  return 0;
nomem:
  account_free(&a);
  temp(c, "out of memory");
  return 1;
}

/* The verdict of a hash: ok 1 good, 0 bad, -1 failed. Sets the reply and logs. */
static void verdict(conn *c, int ok, unsigned int ms)
{
  char fmt[UINT_FMT + 3], fr[UINT_FMT + 8];
  char const *v[5];
  fmt[uint_fmt(fmt, ms)] = 0;
  strcat(fmt, "ms");
  memcpy(fr, "running=", 8);
  fr[8 + uint_fmt(fr + 8, running)] = 0;
  v[1] = logname(c->buf + 1);
  v[2] = "hash";
  v[3] = fmt;
  v[4] = fr;
  if (ok > 0 && c->real) {
    st.good++;
    v[0] = "good";
    authcache_add(c->key, c->hd, now_sec(), ttl);
    c->out.len = 0;
    c->outpos = 0;
    if (!stralloc_copy(&c->out, &c->ok)) temp(c, "out of memory");
  } else if (ok >= 0) {
    st.bad++;
    v[0] = "bad";
    reply_code(c, 'N', 0);
  } else {
    v[0] = "failed";
    temp(c, "the password check failed");
  }
  logline(v, 5);
  wipe(c->buf, sizeof c->buf);
  c->len = 0;
}

/* ---- -i: one request on fd 0, its reply on fd 1, hashing in-process ---- */

static int inetd(void)
{
  conn c;
  tain deadline;
  int r = 0;
  memset(&c, 0, sizeof c);
  c.fd = 0;
  tain_now_set_stopwatch_g();
  tain_addsec_g(&deadline, READ_TIMEOUT);
  while (!r) {
    iopause_fd x = {.fd = 0, .events = IOPAUSE_READ, .revents = 0};
    ssize_t k;
    int p = iopause_g(&x, 1, &deadline);
    if (p < 0 && errno != EINTR) strerr_diefu1sys(111, "iopause");
    if (!p) strerr_dief1x(111, "timed out reading the request");
    k = read(0, c.buf + c.len, sizeof c.buf - c.len);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      strerr_diefu1sys(111, "read the request");
    }
    if (!k) break;
    c.len += (size_t)k;
    r = complete(&c);
    if (!r && c.len == sizeof c.buf) r = -1;
  }
  if (r != 1) strerr_dief1x(111, "malformed request");
  if (!prepare(&c)) {
    tain t = STAMP;
    int ok = passwd_verify(c.buf + c.passoff, c.hash.s);
    tain_now_g();
    st.hashes++;
    verdict(&c, ok, ms_since(&t));
  }
  if (!c.out.len) strerr_dief1x(111, "out of memory");
  if (fd_write(1, c.out.s, c.out.len) != (ssize_t)c.out.len)
    strerr_diefu1sys(111, "write the reply");
  return 0;
}

/* ---- the service ---- */

static void conn_close(conn *c)
{
  wipe(c->buf, sizeof c->buf);
  c->len = 0;
  if (c->fd >= 0) fd_close(c->fd);
  c->fd = -1;
  c->state = S_FREE;
  stralloc_free(&c->hash);
  stralloc_free(&c->ok);
  stralloc_free(&c->out);
}

static void to_write(conn *c)
{
  if (!c->out.len) {
    conn_close(c);
    return;
  }
  c->state = S_WRITE;
  c->outpos = 0;
  tain_addsec_g(&c->deadline, WRITE_TIMEOUT);
}

/* A hashing child (lib/spawn spawn_call): crypt_r's cost is CPU, so up to maxhash requests
 * are hashed in parallel, each in a copy of this process that exits 0 (match) or 1. */
static int hash_child(void *p)
{
  conn const *c = p;
  return passwd_verify(c->buf + c->passoff, c->hash.s) ? 0 : 1;
}

static void start_hashes(void)
{
  while (running < maxhash && qlen) {
    conn *c = &conns[queue[qhead]];
    pid_t pid;
    qhead = (qhead + 1) % maxconn;
    qlen--;
    pid = spawn_call(&hash_child, c);
    if (pid < 0) {
      strerr_warnwu1sys("fork");
      temp(c, "unable to fork");
      to_write(c);
      continue;
    }
    c->pid = pid;
    c->state = S_HASHING;
    c->started = STAMP;
    tain_addsec_g(&c->deadline, HASH_TIMEOUT);
    running++;
    st.hashes++;
    if (running > st.max_running) st.max_running = running;
  }
}

static void reap(void)
{
  for (;;) {
    int wstat;
    unsigned int i;
    pid_t pid = wait_nohang(&wstat);
    if (pid <= 0) break;
    for (i = 0; i < maxconn; i++) {
      conn *c = &conns[i];
      if (c->state != S_HASHING || c->pid != pid) continue;
      int ok = !WIFEXITED(wstat) ? -1 : WEXITSTATUS(wstat) == 0 ? 1
             : WEXITSTATUS(wstat) == 1 ? 0 : -1;
      verdict(c, ok, ms_since(&c->started));
      running--;
      c->pid = 0;
      to_write(c);
      break;
    }
  }
}

static void got_request(conn *c)
{
  if (prepare(c)) {
    to_write(c);
    return;
  }
  if (qlen == maxconn) { /* cannot happen: at most maxconn connections */
    temp(c, "service busy");
    to_write(c);
    return;
  }
  queue[(qhead + qlen) % maxconn] = (unsigned int)(c - conns);
  qlen++;
  if (qlen > st.max_queued) st.max_queued = qlen;
  c->state = S_QUEUED;
  tain_addsec_g(&c->deadline, qtimeout);
}

static void on_read(conn *c)
{
  ssize_t k = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
  int r;
  if (k < 0) {
    if (errno == EINTR || errno == EAGAIN) return;
    conn_close(c);
    return;
  }
  if (!k) {
    conn_close(c); /* EOF before a complete request */
    return;
  }
  c->len += (size_t)k;
  r = complete(c);
  if (!r && c->len == sizeof c->buf) r = -1;
  if (!r) return;
  if (r < 0) {
    temp(c, "malformed request");
    to_write(c);
    return;
  }
  got_request(c);
}

static void on_write(conn *c)
{
  ssize_t k = write(c->fd, c->out.s + c->outpos, c->out.len - c->outpos);
  if (k < 0) {
    if (errno == EINTR || errno == EAGAIN) return;
    conn_close(c);
    return;
  }
  c->outpos += (size_t)k;
  if (c->outpos == c->out.len) {
    /* EOF for the client now, even while a hash child forked earlier still holds a copy */
    shutdown(c->fd, SHUT_WR);
    conn_close(c);
  }
}

static void expire(void)
{
  unsigned int i;
  /* the queue is in deadline order: only its head can be late */
  while (qlen && !tain_future(&conns[queue[qhead]].deadline)) {
    conn *c = &conns[queue[qhead]];
    char const *v[2] = {"busy", logname(c->buf + 1)};
    qhead = (qhead + 1) % maxconn;
    qlen--;
    st.busy++;
    logline(v, 2);
    wipe(c->buf, sizeof c->buf);
    temp(c, "service busy, try later");
    to_write(c);
  }
  for (i = 0; i < maxconn; i++) {
    conn *c = &conns[i];
    if (c->state == S_FREE || c->state == S_QUEUED || tain_future(&c->deadline)) continue;
    if (c->state == S_HASHING) {
      kill(c->pid, SIGKILL); /* answered when reaped */
      tain_addsec_g(&c->deadline, HASH_TIMEOUT);
    } else
      conn_close(c);
  }
}

/* The socket's directory must not let others in: a local user could guess passwords. */
static void check_dir(char const *path)
{
  stralloc d = STRALLOC_ZERO;
  struct stat s;
  char const *slash = strrchr(path, '/');
  if (!slash) return;
  if (!stralloc_catb(&d, path, (size_t)(slash - path)) || !stralloc_0(&d))
    strerr_diefu1sys(111, "make a path");
  if (!d.s[0]) strerr_dief1x(100, "refusing a socket in /");
  if (mkdir(d.s, 0750) < 0 && errno != EEXIST) {
    /* MAILROOT/run itself may be missing in an instance made before it existed */
    char *up = strrchr(d.s, '/');
    if (errno != ENOENT || !up || up == d.s) strerr_diefu2sys(111, "create ", d.s);
    *up = 0;
    if (mkdir(d.s, 0755) < 0 && errno != EEXIST) strerr_diefu2sys(111, "create ", d.s);
    *up = '/';
    if (mkdir(d.s, 0750) < 0 && errno != EEXIST) strerr_diefu2sys(111, "create ", d.s);
  }
  if (stat(d.s, &s) < 0) strerr_diefu2sys(111, "stat ", d.s);
  if (s.st_mode & 0007) {
    if (s.st_uid != getuid())
      strerr_dief3x(100, "the socket directory ", d.s,
                    " lets every local user in: make it mode 0750, group of the clients");
    if (chmod(d.s, s.st_mode & 0770) < 0) strerr_diefu2sys(111, "chmod ", d.s);
    strerr_warnw3x("the socket directory ", d.s, " let every local user in: now mode 0750");
  }
  stralloc_free(&d);
}

/* The default bound on hashes at once: half the CPUs (at least 1, at most 8), so that a login
 * storm leaves CPUs to the rest of the server and costs one yescrypt's memory per two CPUs. */
static unsigned int default_hashes(void)
{
  long n = -1;
#ifdef _SC_NPROCESSORS_ONLN
  n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
  if (n < 2) return 1;
  return n / 2 > 8 ? 8 : (unsigned int)(n / 2);
}

static void env_uint(char const *name, unsigned int *u, int zero_ok)
{
  char const *x = getenv(name);
  if (!x || !*x) return;
  if (!uint0_scan(x, u) || (!zero_ok && !*u)) strerr_dief2x(100, "bad value for ", name);
}

/* The self-pipe for SIGCHLD (a hashing child ended) and the signals that stop the service. */
static int trap_signals(void)
{
  int sfd = selfpipe_init();
  if (sfd < 0) strerr_diefu1sys(111, "init the self-pipe");
  {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (selfpipe_trapset(&set) < 0) strerr_diefu1sys(111, "trap signals");
  }
  signal(SIGPIPE, SIG_IGN);
  return sfd;
}

/* The listening socket at path (a stale one removed). */
static int listen_on(char const *path)
{
  int lfd = ipc_stream_nbcoe();
  if (lfd < 0) strerr_diefu1sys(111, "create a socket");
  if (unlink(path) < 0 && errno != ENOENT) strerr_diefu2sys(111, "remove ", path);
  if (ipc_bind(lfd, path) < 0) strerr_diefu2sys(111, "bind to ", path);
  /* who may connect is decided by the directory (check_dir); the socket itself is open */
  if (chmod(path, 0666) < 0) strerr_diefu2sys(111, "chmod ", path);
  if (ipc_listen(lfd, 128) < 0) strerr_diefu2sys(111, "listen on ", path);
  return lfd;
}

/* The event loop: the self-pipe, the listening socket, every connection; until a signal
 * other than SIGCHLD. */
static int serve(int sfd, int lfd, iopause_fd *x, char const *path)
{
  unsigned int i;
  tain_now_set_stopwatch_g();
  for (;;) {
    unsigned int n = 0, nconn = 0, idx[1002];
    tain deadline = TAIN_INFINITE;
    int r;
    x[n].fd = sfd;
    x[n].events = IOPAUSE_READ;
    idx[n++] = (unsigned int)-1;
    for (i = 0; i < maxconn; i++) {
      conn *c = &conns[i];
      if (c->state == S_FREE) continue;
      nconn++;
      if (tain_less(&c->deadline, &deadline)) deadline = c->deadline;
      if (c->state == S_READ || c->state == S_WRITE) {
        x[n].fd = c->fd;
        x[n].events = c->state == S_READ ? IOPAUSE_READ : IOPAUSE_WRITE;
        idx[n++] = i;
      }
    }
    if (nconn < maxconn) {
      x[n].fd = lfd;
      x[n].events = IOPAUSE_READ;
      idx[n++] = (unsigned int)-2;
    }
    r = iopause_g(x, n, &deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      strerr_diefu1sys(111, "iopause");
    }
    for (i = 0; i < n; i++) {
      if (!x[i].revents) continue;
      if (idx[i] == (unsigned int)-1) {
        int sig;
        while ((sig = selfpipe_read()) > 0) {
          if (sig == SIGCHLD) reap();
          else {
            char const *v[1] = {"exiting"};
            logline(v, 1);
            unlink(path);
            return 0;
          }
        }
      } else if (idx[i] == (unsigned int)-2) {
        unsigned int j;
        for (j = 0; j < maxconn; j++)
          if (conns[j].state == S_FREE) break;
        if (j < maxconn) {
          int fd = ipc_accept_nbcoe(lfd, 0, 0, 0);
          if (fd >= 0) {
            conn *c = &conns[j];
            memset(c, 0, sizeof *c);
            c->fd = fd;
            c->state = S_READ;
            tain_addsec_g(&c->deadline, READ_TIMEOUT);
          } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            strerr_warnwu1sys("accept");
        }
      } else {
        conn *c = &conns[idx[i]];
        if (c->state == S_READ) on_read(c);
        else if (c->state == S_WRITE) on_write(c);
      }
    }
    expire();
    start_hashes();
  }
}

int main(int argc, char const *const *argv)
{
  int one = 0, sfd, lfd;
  unsigned int notif = 0, i;
  stralloc path = STRALLOC_ZERO;
  iopause_fd *x;
  subgetopt l = SUBGETOPT_ZERO;
  maxhash = default_hashes();
  env_uint("AUTH_HASHES", &maxhash, 0);
  env_uint("AUTH_CACHE_TTL", &ttl, 1);
  env_uint("AUTH_CACHE_SIZE", &cachesize, 1);
  env_uint("AUTH_MAXCONN", &maxconn, 0);
  env_uint("AUTH_QUEUE_TIMEOUT", &qtimeout, 0);
  for (;;) {
    int opt = subgetopt_r(argc, argv, "in:t:C:c:q:d:", &l);
    if (opt == -1) break;
    switch (opt) {
      case 'i': one = 1; break;
      case 'n': if (!uint0_scan(l.arg, &maxhash) || !maxhash) strerr_dieusage(100, USAGE); break;
      case 't': if (!uint0_scan(l.arg, &ttl)) strerr_dieusage(100, USAGE); break;
      case 'C': if (!uint0_scan(l.arg, &cachesize)) strerr_dieusage(100, USAGE); break;
      case 'c': if (!uint0_scan(l.arg, &maxconn) || !maxconn) strerr_dieusage(100, USAGE); break;
      case 'q': if (!uint0_scan(l.arg, &qtimeout) || !qtimeout) strerr_dieusage(100, USAGE); break;
      case 'd': if (!uint0_scan(l.arg, &notif) || notif < 3) strerr_dieusage(100, USAGE); break;
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (maxconn > 1000) maxconn = 1000;
  if (!authcache_init(ttl && !one ? cachesize : 0)) strerr_diefu1sys(111, "allocate the cache");
  if (one) return inetd();
  if (argc) {
    if (!stralloc_copys(&path, argv[0]) || !stralloc_0(&path)) strerr_diefu1sys(111, "stralloc");
  } else if (!authclient_path(&path))
    strerr_diefu1sys(111, "make the socket path");
  check_dir(path.s);
  conns = calloc(maxconn, sizeof *conns);
  queue = calloc(maxconn, sizeof *queue);
  x = calloc(maxconn + 2, sizeof *x);
  if (!conns || !queue || !x) strerr_diefu1sys(111, "allocate");
  for (i = 0; i < maxconn; i++) conns[i].fd = -1;

  sfd = trap_signals();

  lfd = listen_on(path.s);
  passwd_dummy();
  {
    char f1[UINT_FMT], f2[UINT_FMT], f3[UINT_FMT];
    char const *v[8] = {"listening on", path.s, "hashes", f1, "cache_ttl", f2, "maxconn", f3};
    f1[uint_fmt(f1, maxhash)] = 0;
    f2[uint_fmt(f2, ttl)] = 0;
    f3[uint_fmt(f3, maxconn)] = 0;
    logline(v, 8);
  }
  if (notif) {
    fd_write((int)notif, "\n", 1);
    fd_close((int)notif);
  }

  return serve(sfd, lfd, x, path.s);
}
