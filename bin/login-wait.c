/* login-wait: what waits for a logged-in session, at the cost of a few pages.
 *
 * Once a login has handed the client to its session program, the pre-login front (imap-serve,
 * pop3-serve) and login-handoff only wait: the front for its child, so that tcpserver's count
 * (-c) and the per-address slot (lib/connlimit) last as long as the session, and
 * login-handoff for the broker's connection to close. A whole static program touched for
 * that costs 650-700 kB of PSS each for the session's length (doc/performance.md); both exec
 * this one instead, which is built without a C library where the Makefile knows how
 * (PB_NOLIBC: x86_64 and aarch64, its own entry point and five system calls): about 16 kB.
 *
 * argv[0] names the program it stands in for, and becomes the process's name (PR_SET_NAME):
 * ps still shows imap-serve under the pre-login uid, with its pid.
 *   login-wait -f FD [[-u SLOTFILE] PREFIX]
 *                           reads one octet from FD and exits with it; 0 at end of file (the
 *                           broker's connection closed: the session ran and ended); 111 on an
 *                           error. With PREFIX (login-handoff under a pool worker, which does
 *                           not wait: LOGIN_LOGOUT), at end of file it also writes PREFIX "0"
 *                           and a newline on fd 2 and removes SLOTFILE, as -p does.
 *   login-wait -p PID [-u SLOTFILE] PREFIX
 *                           waits for the child PID, writes PREFIX, its exit code ("killed"
 *                           when a signal ended it) and a newline on fd 2, removes SLOTFILE
 *                           (the slot's lock is an inherited descriptor and goes with this
 *                           process), and exits with the child's code (111 when killed).
 * Exit 100 on misuse.
 */
#ifdef PB_NOLIBC
typedef long ssize_t;
typedef unsigned long size_t;
#else
#include <errno.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

char const *PROG = "login-wait";

#ifdef PB_NOLIBC
/* System calls return -errno on failure, as the kernel does. */
#if defined(__x86_64__)
#define NR_read 0
#define NR_write 1
#define NR_wait4 61
#define NR_unlinkat 263
#define NR_exit 60
#define NR_prctl 157
static long sys4(long n, long a, long b, long c, long d)
{
  register long r10 __asm__("r10") = d;
  long r;
  __asm__ volatile("syscall"
                   : "=a"(r)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                   : "rcx", "r11", "memory");
  return r;
}
/* The kernel enters with argc at the stack pointer; C wants the stack 16-aligned at a call. */
__asm__(".text\n.global _start\n_start:\n xor %ebp, %ebp\n mov %rsp, %rdi\n"
        " and $-16, %rsp\n call start_c\n hlt\n");
#elif defined(__aarch64__)
#define NR_read 63
#define NR_write 64
#define NR_wait4 260
#define NR_unlinkat 35
#define NR_exit 93
#define NR_prctl 167
static long sys4(long n, long a, long b, long c, long d)
{
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
  return x0;
}
__asm__(".text\n.global _start\n_start:\n mov x0, sp\n bl start_c\n brk #0\n");
#else
#error "PB_NOLIBC: x86_64 and aarch64 only (the Makefile builds other machines with libc)"
#endif
#define E_INTR 4
static ssize_t sys_read(int fd, void *b, size_t n)
{
  return sys4(NR_read, fd, (long)b, (long)n, 0);
}
static ssize_t sys_write(int fd, void const *b, size_t n)
{
  return sys4(NR_write, fd, (long)b, (long)n, 0);
}
static long sys_wait(long pid, int *status) { return sys4(NR_wait4, pid, (long)status, 0, 0); }
static long sys_unlink(char const *p) { return sys4(NR_unlinkat, -100, (long)p, 0, 0); }
static void sys_exit(int code)
{
  for (;;) sys4(NR_exit, code, 0, 0, 0);
}
static void sys_setname(char const *name) { (void)sys4(NR_prctl, 15, (long)name, 0, 0); }
#else
#define E_INTR EINTR
static ssize_t sys_read(int fd, void *b, size_t n)
{
  ssize_t r = read(fd, b, n);
  return r < 0 ? -errno : r;
}
static ssize_t sys_write(int fd, void const *b, size_t n)
{
  ssize_t r = write(fd, b, n);
  return r < 0 ? -errno : r;
}
static long sys_wait(long pid, int *status)
{
  long r = waitpid((pid_t)pid, status, 0);
  return r < 0 ? -errno : r;
}
static long sys_unlink(char const *p) { return unlink(p) < 0 ? -errno : 0; }
static void sys_exit(int code) { _exit(code); }
static void sys_setname(char const *name) { (void)prctl(PR_SET_NAME, name, 0, 0, 0); }
#endif

static size_t len(char const *s)
{
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static void put(char const *s)
{
  size_t n = len(s), w = 0;
  while (w < n) {
    ssize_t k = sys_write(2, s + w, n - w);
    if (k == -E_INTR) continue;
    if (k <= 0) return; /* the log is gone: nothing better to do */
    w += (size_t)k;
  }
}

/* Formats u into buf (room for 24), returns buf. */
static char *fmt(char *buf, unsigned long u)
{
  char *p = buf + 23;
  *p = 0;
  do *--p = (char)('0' + u % 10);
  while (u /= 10);
  return p;
}

static int scan(char const *s, unsigned long *u)
{
  *u = 0;
  if (!*s) return 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || *u > 100000000UL) return 0;
    *u = *u * 10 + (unsigned long)(*s - '0');
  }
  return 1;
}

static void die(int code, char const *what, long err)
{
  char b[24];
  put("login-wait: fatal: ");
  put(what);
  if (err) {
    put(" (errno ");
    put(fmt(b, (unsigned long)-err));
    put(")");
  }
  put("\n");
  sys_exit(code);
}

/* The process keeps the name of the program it stands in for (argv[0]: imap-serve,
 * pop3-serve, login-handoff), so ps shows the chain as it was. */
static void setname(char const *arg0)
{
  char const *b = arg0, *p;
  for (p = arg0; *p; p++)
    if (*p == '/') b = p + 1;
  if (*b && len(b) < 16) sys_setname(b);
}

#define USAGE \
  "usage: login-wait -f fd [[-u slotfile] prefix] | login-wait -p pid [-u slotfile] prefix"

static int wait_octet(unsigned long fd, char const *slot, char const *prefix)
{
  unsigned char c;
  for (;;) {
    ssize_t k = sys_read((int)fd, &c, 1);
    if (k == -E_INTR) continue;
    if (k < 0) die(111, "unable to read the broker's answer", k);
    if (k) return c; /* the broker's answer: no session ran, the front still holds the slot */
    if (prefix) {
      put(prefix);
      put("0\n");
    }
    if (slot) (void)sys_unlink(slot);
    return 0;
  }
}

/* [-u slot] prefix at argv[i..argc): 1 and the two set, 0 on misuse */
static int tail(int argc, char **argv, int i, char const **slot, char const **prefix)
{
  if (argc - i == 3) {
    if (argv[i][0] != '-' || argv[i][1] != 'u' || argv[i][2]) return 0;
    *slot = argv[i + 1];
  } else if (argc - i != 1)
    return 0;
  *prefix = argv[argc - 1];
  return 1;
}

static int wait_child(unsigned long pid, char const *slot, char const *prefix)
{
  char b[24];
  int status = 0, code;
  long r;
  while ((r = sys_wait((long)pid, &status)) == -E_INTR) ;
  if (r < 0) die(111, "unable to wait for the login program", r);
  /* WIFEXITED / WEXITSTATUS, spelled out: no <sys/wait.h> without a C library */
  code = (status & 0x7f) ? 256 : (status >> 8) & 0xff;
  put(prefix);
  put(code == 256 ? "killed" : fmt(b, (unsigned long)code));
  put("\n");
  if (slot) (void)sys_unlink(slot); /* as connlimit_release: the file, then the lock */
  return code == 256 ? 111 : code;
}

int main(int argc, char **argv)
{
  unsigned long u;
  if (argc < 1) die(100, USAGE, 0);
  setname(argv[0]);
  if (argc >= 3 && argv[1][0] == '-' && argv[1][1] == 'f' && !argv[1][2]) {
    char const *slot = 0, *prefix = 0;
    if (!scan(argv[2], &u) || (argc > 3 && !tail(argc, argv, 3, &slot, &prefix)))
      die(100, USAGE, 0);
    return wait_octet(u, slot, prefix);
  }
  if (argc >= 4 && argv[1][0] == '-' && argv[1][1] == 'p' && !argv[1][2]) {
    char const *slot = 0, *prefix = 0;
    if (!scan(argv[2], &u) || !u || !tail(argc, argv, 3, &slot, &prefix)) die(100, USAGE, 0);
    return wait_child(u, slot, prefix);
  }
  die(100, USAGE, 0);
  return 100;
}

#ifdef PB_NOLIBC
void start_c(long *sp) __attribute__((used, noreturn));
void start_c(long *sp)
{
  sys_exit(main((int)sp[0], (char **)(sp + 1)));
  for (;;) ;
}
#endif
