/* checkpw: see checkpw.h */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/strerr.h>

#include <skalibs/stralloc.h>
#include <skalibs/types.h>

#include "authclient.h"
#include "checkpw.h"
#include "sasl.h"
#include "spawn.h"
#include "timedio.h"


/* In-process: ask the auth service directly (no exec). */
static int ask(char const *user, size_t userlen, char const *pass, size_t passlen)
{
  stralloc path = STRALLOC_ZERO, address = STRALLOC_ZERO, maildir = STRALLOC_ZERO;
  int r;
  if (!userlen || memchr(user, 0, userlen) || memchr(pass, 0, passlen)) return CHECKPW_BAD;
  if (!authclient_path(&path)) return CHECKPW_TEMP;
  r = authclient_ask(path.s, user, userlen, pass, passlen, &address, &maildir);
  stralloc_free(&path);
  stralloc_free(&address);
  stralloc_free(&maildir);
  switch (r) {
    case AUTHCLIENT_OK: return CHECKPW_OK;
    case AUTHCLIENT_BAD: return CHECKPW_BAD;
    default: return CHECKPW_TEMP;
  }
}

int checkpw(char const *user, size_t userlen, char const *pass, size_t passlen)
{
  char buf[520];
  size_t n = sasl_checkpassword_input(buf, 513, user, userlen, pass, passlen);
  char const *prog = getenv("AUTH_CHECK");
  char const *argv[3];
  int p[2], status;
  pid_t pid;
  time_t deadline;
  if (!n) return CHECKPW_BAD;
  if (!prog || !*prog) {
    memset(buf, 0, sizeof buf);
    return ask(user, userlen, pass, passlen);
  }
  argv[0] = prog;
  argv[1] = "true";
  argv[2] = 0;
  if (pipecoe(p) < 0) return CHECKPW_TEMP;
  { /* the checkpassword program: the credentials on fd 3, /dev/null on 0 and 1 */
    spawn_fd map[3] = {{3, p[0]}, {0, SPAWN_DEVNULL}, {1, SPAWN_DEVNULL}};
    pid = spawn(argv, 0, map, 3);
  }
  fd_close(p[0]);
  if (pid < 0) {
    fd_close(p[1]);
    return CHECKPW_TEMP;
  }
  {
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    size_t w = 0;
    while (w < n) {
      ssize_t k = write(p[1], buf + w, n - w);
      if (k < 0) {
        if (errno == EINTR) continue;
        break;
      }
      w += (size_t)k;
    }
    signal(SIGPIPE, old);
  }
  memset(buf, 0, sizeof buf);
  fd_close(p[1]);
  deadline = time(0) + CHECKPW_TIMEOUT;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return CHECKPW_TEMP;
    if (time(0) > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) ;
      return CHECKPW_TEMP;
    }
    {
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, 0);
    }
  }
  if (!WIFEXITED(status)) return CHECKPW_TEMP;
  switch (WEXITSTATUS(status)) {
    case 0: return CHECKPW_OK;
    case 1:
    case 2: return CHECKPW_BAD;
    default: return CHECKPW_TEMP;
  }
}

size_t checkpw_read3(char *buf)
{
  size_t len = 0;
  for (;;) {
    ssize_t k = read(3, buf + len, CHECKPW_INPUT_MAX + 1 - len);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == EBADF) strerr_dief1x(2, "nothing on fd 3 (checkpassword interface)");
      strerr_diefu1sys(111, "read fd 3");
    }
    if (!k) break;
    len += (size_t)k;
    if (len > CHECKPW_INPUT_MAX) {
      memset(buf, 0, CHECKPW_INPUT_MAX + 1);
      strerr_dief1x(2, "input on fd 3 longer than 512 bytes");
    }
  }
  fd_close(3);
  return len;
}

pid_t checkpw_start(char const *const *argv, char const *const *mods, size_t nmods,
                    int *credfd, int *notifyfd, int slotfd)
{
  char const *envp[SPAWN_ENVMAX];
  spawn_fd map[3];
  int cp[2], np[2];
  pid_t pid;
  if (pipecoe(cp) < 0 || pipecoe(np) < 0) strerr_diefu1sys(111, "create pipes");
  if (spawn_env(envp, SPAWN_ENVMAX, mods, nmods) < 0)
    strerr_diefu1sys(111, "make the environment");
  map[0].child = 3;
  map[0].parent = cp[0];
  map[1].child = 4;
  map[1].parent = np[1];
  map[2].child = CHECKPW_SLOTFD;
  map[2].parent = slotfd;
  pid = spawn(argv, envp, map, slotfd >= 0 ? 3 : 2);
  fd_close(cp[0]);
  fd_close(np[1]);
  if (pid < 0) {
    strerr_warnwu2sys("run ", argv[0]);
    fd_close(cp[1]);
    fd_close(np[0]);
    return -1;
  }
  *credfd = cp[1];
  *notifyfd = np[0];
  return pid;
}

void checkpw_send(int fd, char *creds, size_t len)
{
  void (*old)(int) = signal(SIGPIPE, SIG_IGN);
  (void)fd_write(fd, creds, len);
  signal(SIGPIPE, old);
  memset(creds, 0, len);
  fd_close(fd);
}

char const *checkpw_logname(char const *u, size_t len)
{
  static char buf[65];
  size_t i;
  if (len > 64) len = 64;
  for (i = 0; i < len; i++) buf[i] = (u[i] > 0x20 && u[i] < 0x7f) ? u[i] : '?';
  buf[len] = 0;
  return buf;
}

int checkpw_wait_notify(int fd, unsigned int secs)
{
  tain deadline;
  char c;
  tain_now_g();
  tain_addsec_g(&deadline, secs);
  for (;;) {
    ssize_t r;
    if (timedio_wait(fd, 0, &deadline) < 0) return -1;
    r = read(fd, &c, 1);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -1;
    }
    return r == 1;
  }
}

extern char const *PROG;

/* argv[0] is our own name: login-wait takes it as the process's name */
static void waiter(char const *const *argv, int keepfd)
{
  if (keepfd >= 0 && uncoe(keepfd) < 0) {
    strerr_warnwu1sys("keep a descriptor for login-wait");
    return;
  }
  execvp("login-wait", (char *const *)argv);
  strerr_warnwu1sys("exec login-wait (waiting in place)");
  if (keepfd >= 0 && coe(keepfd) < 0) strerr_diefu1sys(111, "set a descriptor close-on-exec");
}

void checkpw_waiter_child(pid_t pid, int slotfd, char const *slotpath, char const *user,
                         char const *ip)
{
  char fmt[ULONG_FMT];
  char const *argv[7];
  stralloc sa = STRALLOC_ZERO;
  unsigned int n = 0;
  if (!stralloc_cats(&sa, PROG) || !stralloc_cats(&sa, ": info: logout ") ||
      !stralloc_cats(&sa, user) || !stralloc_cats(&sa, " from ") || !stralloc_cats(&sa, ip) ||
      !stralloc_cats(&sa, " status ") || !stralloc_0(&sa)) {
    strerr_warnwu1sys("make login-wait's log line");
    stralloc_free(&sa);
    return;
  }
  fmt[ulong_fmt(fmt, (unsigned long)pid)] = 0;
  argv[n++] = PROG;
  argv[n++] = "-p";
  argv[n++] = fmt;
  if (slotfd >= 0) {
    argv[n++] = "-u";
    argv[n++] = slotpath;
  }
  argv[n++] = sa.s;
  argv[n] = 0;
  waiter(argv, slotfd);
  stralloc_free(&sa);
}

void checkpw_waiter_fd(int fd, char const *slotpath, char const *prefix)
{
  char fmt[UINT_FMT];
  char const *argv[7] = {PROG, "-f", fmt, 0};
  unsigned int n = 3;
  fmt[uint_fmt(fmt, (unsigned int)fd)] = 0;
  if (prefix) {
    if (slotpath) {
      argv[n++] = "-u";
      argv[n++] = slotpath;
    }
    argv[n++] = prefix;
  }
  argv[n] = 0;
  waiter(argv, fd);
}

void checkpw_detach_mods(char const **mods, int detach, char const *user, char const *ip,
                         char const *slotpath)
{
  static char logout[sizeof "LOGIN_LOGOUT=: info: logout  from  status " + 64 + 64 + 64];
  static char slot[sizeof "LOGIN_SLOT=" + 512];
  size_t n = 0;
  mods[0] = "LOGIN_LOGOUT";
  mods[1] = "LOGIN_SLOT";
  if (!detach) return;
  n = 0;
#define CAT(s) do { size_t k_ = strlen(s); if (k_ > 64) k_ = 64; memcpy(logout + n, s, k_); \
    n += k_; } while (0)
  memcpy(logout, "LOGIN_LOGOUT=", 13);
  n = 13;
  CAT(PROG);
  CAT(": info: logout ");
  CAT(user);
  CAT(" from ");
  CAT(ip);
  CAT(" status ");
#undef CAT
  logout[n] = 0;
  mods[0] = logout;
  if (slotpath && *slotpath && strlen(slotpath) < 512) {
    memcpy(slot, "LOGIN_SLOT=", 11);
    memcpy(slot + 11, slotpath, strlen(slotpath) + 1);
    mods[1] = slot;
  }
}

int checkpw_reap(pid_t pid, char const *what)
{
  int wstat;
  while (waitpid(pid, &wstat, 0) < 0)
    if (errno != EINTR) strerr_diefu2sys(111, "wait for ", what);
  return WIFEXITED(wstat) ? WEXITSTATUS(wstat) : 256;
}
