/* mail-instance: create an instance, re-apply the service templates to one, rebuild its
 * tcp rules (doc/mail-instance.8).
 * mail-instance create ROOT --hostname H --domain D [--domain D...] [--postmaster ADDR]
 * mail-instance update ROOT
 * mail-instance tcprules [ROOT]
 * Run by root, create (and update) make the system users of the privilege model and give
 * each part of the instance to its user (doc/security.md). */
#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "accounts.h"
#include "addr.h"
#include "instance.h"
#include "queue.h"
#include "spawn.h"

#ifndef PILLARBOX_SHAREDIR
#define PILLARBOX_SHAREDIR "/usr/local/share/pillarbox"
#endif

char const *PROG = "mail-instance";
#define USAGE \
  "mail-instance create ROOT --hostname H --domain D [--domain D...] [--postmaster ADDR]\n" \
  "       mail-instance update ROOT\n" \
  "       mail-instance tcprules [ROOT]"
#define DOMS_MAX 100
#define dieusage() strerr_dieusage(100, USAGE)

static char const *root;  /* absolute */
static stralloc bindir = STRALLOC_ZERO;
static int updating;      /* update: keep existing env/ files */

static char const *path(char const *rel)
{
  static stralloc p = STRALLOC_ZERO;
  p.len = 0;
  if (!stralloc_cats(&p, root) || !stralloc_catb(&p, "/", 1) || !stralloc_cats(&p, rel) ||
      !stralloc_0(&p))
    strerr_diefu1sys(111, "allocate");
  return p.s;
}

static void mkdir_mode(char const *p, mode_t mode)
{
  if (mkdir(p, mode) < 0 && errno != EEXIST) strerr_diefu2sys(111, "mkdir ", p);
  if (chmod(p, mode) < 0) strerr_diefu2sys(111, "chmod ", p);
}

/* mkdir -p for the parents of p (p itself not included). */
static void mkparents(char const *p)
{
  size_t n = strlen(p), i;
  char *b = malloc(n + 1);
  if (!b) strerr_diefu1sys(111, "allocate");
  memcpy(b, p, n + 1);
  for (i = 1; i < n; i++) {
    if (b[i] != '/') continue;
    b[i] = 0;
    if (mkdir(b, 0755) < 0 && errno != EEXIST) strerr_diefu2sys(111, "mkdir ", b);
    b[i] = '/';
  }
  free(b);
}

static void writefile(char const *rel, char const *s, size_t n, mode_t mode)
{
  char const *p = path(rel);
  if (!openwritenclose_suffix_sync(p, s, n, ".tmp")) strerr_diefu2sys(111, "write ", p);
  if (chmod(p, mode) < 0) strerr_diefu2sys(111, "chmod ", p);
}

static int domain_ok(char const *d)
{
  size_t n = strlen(d);
  stralloc sa = STRALLOC_ZERO;
  int ok;
  if (!n || n > ADDR_DOMAIN_MAX || d[0] == '[') return 0;
  if (!stralloc_cats(&sa, "x@") || !stralloc_catb(&sa, d, n)) strerr_diefu1sys(111, "allocate");
  ok = addr_check_mailbox(sa.s, sa.len, 0) == ADDR_OK;
  stralloc_free(&sa);
  return ok;
}

/* Waits for pid; its exit code, 126 when it was killed, -1 when the wait fails. */
static int waitfor(pid_t pid)
{
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 126;
}

/* Runs argv in root (its file arguments are relative to the instance) with stdin from infile
 * (or /dev/null), stdout and stderr to /dev/null. Returns the exit code, 127 if the program
 * could not be run, -1 on other trouble. */
static int run(char const *const *argv, char const *infile)
{
  int in = infile ? open(infile, O_RDONLY | O_CLOEXEC) : SPAWN_DEVNULL;
  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  spawn_fd map[3] = {{0, in}, {1, SPAWN_DEVNULL}, {2, SPAWN_DEVNULL}};
  pid_t pid = -1;
  int e;
  if (in == -1 || here < 0) {
    if (in >= 0) close(in);
    if (here >= 0) close(here);
    return in == -1 ? 127 : -1;
  }
  if (chdir(root) == 0) pid = spawn(argv, 0, map, 3);
  e = errno;
  if (fchdir(here) < 0) strerr_diefu1sys(111, "return to the working directory");
  close(here);
  if (in >= 0) close(in);
  if (pid < 0) return e == ENOENT || e == EACCES ? 127 : -1;
  return waitfor(pid);
}

static void make_tls(char const *host)
{
  stralloc subj = STRALLOC_ZERO, san = STRALLOC_ZERO;
  char const *argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "3650", "-subj", 0,
                        "-addext", 0, "-keyout", "tls/key.pem", "-out", "tls/cert.pem", 0};
  mode_t old;
  int r;
  if (!stralloc_cats(&subj, "/CN=") || !stralloc_cats(&subj, host) || !stralloc_0(&subj) ||
      !stralloc_cats(&san, "subjectAltName=DNS:") || !stralloc_cats(&san, host) ||
      !stralloc_0(&san))
    strerr_diefu1sys(111, "allocate");
  argv[11] = subj.s;
  argv[13] = san.s;
  old = umask(077);
  r = run(argv, 0);
  umask(old);
  if (r == 127) strerr_warnw1x("openssl not found: no certificate made in tls/ (add one yourself)");
  else if (r) strerr_warnw1x("openssl failed: no certificate made in tls/ (add one yourself)");
  else {
    if (chmod(path("tls/key.pem"), 0600) < 0) strerr_diefu2sys(111, "chmod ", path("tls/key.pem"));
    if (chmod(path("tls/cert.pem"), 0644) < 0)
      strerr_diefu2sys(111, "chmod ", path("tls/cert.pem"));
  }
  stralloc_free(&subj);
  stralloc_free(&san);
}

static void make_tcprules(void)
{
  static char const rules[] = "127.:allow,RELAYCLIENT=\"\"\n::1:allow,RELAYCLIENT=\"\"\n:allow\n";
  char const *argv[] = {"tcprules", "control/tcp-rules.cdb", "control/tcp-rules.tmp", 0};
  int r;
  writefile("control/tcp-rules", rules, sizeof rules - 1, 0644);
  r = run(argv, path("control/tcp-rules"));
  if (r == 127) strerr_warnw1x("tcprules not found: control/tcp-rules.cdb not made");
  else if (r) strerr_warnw1x("tcprules failed: control/tcp-rules.cdb not made");
}

/* Replaces @MAILROOT@ and @BINDIR@ in s[0..n) into out. */
static void substitute(char const *s, size_t n, stralloc *out)
{
  size_t i = 0;
  out->len = 0;
  while (i < n) {
    if (s[i] == '@' && n - i >= 10 && !memcmp(s + i, "@MAILROOT@", 10)) {
      if (!stralloc_cats(out, root)) strerr_diefu1sys(111, "allocate");
      i += 10;
    } else if (s[i] == '@' && n - i >= 8 && !memcmp(s + i, "@BINDIR@", 8)) {
      if (!stralloc_catb(out, bindir.s, bindir.len)) strerr_diefu1sys(111, "allocate");
      i += 8;
    } else {
      if (!stralloc_catb(out, s + i, 1)) strerr_diefu1sys(111, "allocate");
      i++;
    }
  }
}

/* The directory part of p (static buffer). */
static char const *dst_dir(char const *p)
{
  static char b[PATH_MAX];
  size_t n = strlen(p);
  if (n >= sizeof b) n = sizeof b - 1;
  memcpy(b, p, n);
  b[n] = 0;
  while (n && b[n - 1] != '/') n--;
  if (n) b[n - 1] = 0;
  return b;
}

/* Is dir a settings directory (its last component "env")? */
static int is_envdir(char const *dir)
{
  size_t n = strlen(dir);
  return n >= 4 && !strcmp(dir + n - 4, "/env");
}

static void copy_tree(char const *src, char const *dst, int top)
{
  DIR *d = opendir(src);
  struct dirent *e;
  if (!d) strerr_diefu2sys(111, "open directory ", src);
  for (;;) {
    stralloc s = STRALLOC_ZERO, t = STRALLOC_ZERO;
    struct stat st;
    errno = 0;
    e = readdir(d);
    if (!e) {
      if (errno) strerr_diefu2sys(111, "read directory ", src);
      break;
    }
    if (e->d_name[0] == '.') continue;
    if (!stralloc_cats(&s, src) || !stralloc_catb(&s, "/", 1) || !stralloc_cats(&s, e->d_name) ||
        !stralloc_0(&s) || !stralloc_cats(&t, dst) || !stralloc_catb(&t, "/", 1) ||
        !stralloc_cats(&t, e->d_name) || !stralloc_0(&t))
      strerr_diefu1sys(111, "allocate");
    if (lstat(s.s, &st) < 0) strerr_diefu2sys(111, "stat ", s.s);
    if (S_ISDIR(st.st_mode)) {
      struct stat dst;
      int existed = lstat(t.s, &dst) == 0;
      if (!existed) mkdir_mode(t.s, 0700);
      else if (!S_ISDIR(dst.st_mode))
        strerr_dief3x(100, "refusing to replace ", t.s, ": not a directory");
      copy_tree(s.s, t.s, 0);
      if (chmod(t.s, st.st_mode & 07777) < 0) strerr_diefu2sys(111, "chmod ", t.s);
    } else if (top) {
      /* only service directories belong in the scan directory */
    } else if (S_ISREG(st.st_mode)) {
      stralloc in = STRALLOC_ZERO, out = STRALLOC_ZERO, tmp = STRALLOC_ZERO;
      struct stat dst;
      int fd;
      /* update: a setting (a file in an env/ directory) the administrator has is kept */
      if (updating && lstat(t.s, &dst) == 0 && is_envdir(dst_dir(t.s))) {
        stralloc_free(&s);
        stralloc_free(&t);
        continue;
      }
      if (!openslurpclose(&in, s.s)) strerr_diefu2sys(111, "read ", s.s);
      substitute(in.s ? in.s : "", in.len, &out);
      if (!stralloc_copyb(&tmp, t.s, t.len - 1) || !stralloc_cats(&tmp, ".new") ||
          !stralloc_0(&tmp))
        strerr_diefu1sys(111, "allocate");
      unlink(tmp.s);
      fd = open(tmp.s, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) strerr_diefu2sys(111, "create ", tmp.s);
      if (allwrite(fd, out.s ? out.s : "", out.len) < out.len || fsync(fd) < 0 ||
          fchmod(fd, st.st_mode & 07777) < 0 || close(fd) < 0)
        strerr_diefu2sys(111, "write ", tmp.s);
      if (rename(tmp.s, t.s) < 0) strerr_diefu4sys(111, "rename ", tmp.s, " to ", t.s);
      stralloc_free(&in);
      stralloc_free(&out);
      stralloc_free(&tmp);
    } else if (S_ISLNK(st.st_mode)) {
      char buf[PATH_MAX];
      ssize_t r = readlink(s.s, buf, sizeof buf - 1);
      if (r < 0) strerr_diefu2sys(111, "readlink ", s.s);
      buf[r] = 0;
      if (updating) unlink(t.s);
      if (symlink(buf, t.s) < 0) strerr_diefu2sys(111, "symlink ", t.s);
    }
    stralloc_free(&s);
    stralloc_free(&t);
  }
  closedir(d);
}

static int is_dir(char const *p)
{
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void make_services(void)
{
  stralloc t = STRALLOC_ZERO;
  char const *env = getenv("PILLARBOX_SERVICES");
  if (env && *env) {
    if (!stralloc_cats(&t, env) || !stralloc_0(&t)) strerr_diefu1sys(111, "allocate");
    if (!is_dir(t.s)) strerr_dief3x(100, "PILLARBOX_SERVICES: ", t.s, " is not a directory");
  } else {
    /* beside the programs: the source tree (bin/.., build/bin/../..), then an install
     * (PREFIX/libexec/pillarbox/../../share/pillarbox, PREFIX/bin/../share/pillarbox), found
     * from where this program is, so that a DESTDIR-staged or moved install finds its own */
    static char const *const rel[4] = {"/../services", "/../../services",
                                       "/../../share/pillarbox/services",
                                       "/../share/pillarbox/services"};
    unsigned int k;
    for (k = 0; k < 4; k++) {
      t.len = 0;
      if (!stralloc_catb(&t, bindir.s, bindir.len) || !stralloc_cats(&t, rel[k]) ||
          !stralloc_0(&t))
        strerr_diefu1sys(111, "allocate");
      if (is_dir(t.s)) break;
    }
    if (k == 4) {
      t.len = 0;
      if (!stralloc_cats(&t, PILLARBOX_SHAREDIR "/services") || !stralloc_0(&t))
        strerr_diefu1sys(111, "allocate");
    }
  }
  if (is_dir(t.s)) copy_tree(t.s, path("service"), 1);
  else strerr_warnw3x("no service templates in ", t.s, ": service/ left empty");
  stralloc_free(&t);
}


/* ---- the privilege model: system users, owners and modes (doc/security.md) ---- */

/* Runs argv with stdout to stderr, so the tool's complaints are seen. Returns its exit code,
 * 127 if it could not be run. */
static int run_loud(char const *const *argv)
{
  spawn_fd map[1] = {{1, 2}};
  pid_t pid = spawn(argv, 0, map, 1);
  int r;
  if (pid < 0) {
    if (errno == ENOENT || errno == EACCES) return 127;
    strerr_diefu2sys(111, "run ", argv[0]);
  }
  r = waitfor(pid);
  if (r < 0) strerr_diefu1sys(111, "wait");
  return r;
}

/* The system users (each with a group of its name) and the extra groups, with members. */
static char const *const sysusers[] = {"pb-tls", "pb-smtpd", "pb-login", "pb-auth", "pb-queue",
                                       "pb-deliv", "pb-remote", "pb-log", 0};
static char const *const sysgroups[][4] = {
  {"pb-authc", "pb-smtpd", "pb-deliv", 0},     /* may connect to the auth service */
  {"pb-loginc", "pb-login", 0, 0},             /* may connect to the login broker */
  {"pb-authfail", "pb-smtpd", "pb-login", 0},  /* write authfail/ (failed logins per IP) */
  {"pb-tlsc", "pb-smtpd", "pb-login", 0},      /* may hand a connection to the TLS engine */
};

static void ensure_group(char const *g)
{
  char const *argv[] = {"groupadd", "--system", g, 0};
  if (getgrnam(g)) return;
  if (run_loud(argv)) strerr_diefu2x(111, "create the group ", g);
  if (!getgrnam(g)) strerr_diefu3x(111, "find the group ", g, " after groupadd");
}

static void ensure_user(char const *u)
{
  char const *argv[] = {"useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        "--comment", "pillarbox", u, 0};
  if (getpwnam(u)) return;
  if (run_loud(argv)) strerr_diefu2x(111, "create the system user ", u);
  if (!getpwnam(u)) strerr_diefu3x(111, "find the user ", u, " after useradd");
}

static void ensure_member(char const *g, char const *u)
{
  struct group *gr = getgrnam(g);
  char const *argv[] = {"usermod", "--append", "--groups", g, u, 0};
  char **m;
  if (!gr) strerr_diefu2x(111, "find the group ", g);
  for (m = gr->gr_mem; *m; m++)
    if (!strcmp(*m, u)) return;
  if (run_loud(argv)) strerr_diefu4x(111, "add ", u, " to the group ", g);
}

static void make_users(void)
{
  unsigned int i, j;
  for (i = 0; sysusers[i]; i++) ensure_user(sysusers[i]);
  for (i = 0; i < sizeof sysgroups / sizeof sysgroups[0]; i++) {
    ensure_group(sysgroups[i][0]);
    for (j = 1; j < 4 && sysgroups[i][j]; j++) ensure_member(sysgroups[i][0], sysgroups[i][j]);
  }
}

static uid_t uid_of(char const *u)
{
  struct passwd *pw = getpwnam(u);
  if (!pw) strerr_dief3x(111, "no user ", u, ": run mail-instance update as root to create it");
  return pw->pw_uid;
}

static gid_t gid_of(char const *g)
{
  struct group *gr = getgrnam(g);
  if (!gr) strerr_dief3x(111, "no group ", g, ": run mail-instance update as root to create it");
  return gr->gr_gid;
}

/* The layout: directory, owner and group (0 = root) and mode under root's model, mode when
 * one unprivileged uid runs everything; tree: the owner is applied to everything below when
 * the directory changes hands (update of an instance from before the model). */
static struct {
  char const *rel, *user, *group;
  mode_t mode, single;
  int tree;
} const layout[] = {
  {"control", 0, 0, 0755, 0755, 0},
  {"tls", 0, 0, 0700, 0700, 0},
  {"queue", "pb-queue", "pb-queue", 0711, 0711, 1},  /* o+x: everybody reaches inject.sock */
  {"mail", "pb-deliv", "pb-deliv", 0750, 0750, 1},
  {"service", 0, 0, 0755, 0755, 0},
  {"log", "pb-log", "pb-log", 0750, 0755, 1},
  {"authfail", 0, "pb-authfail", 02770, 0770, 1},
  {"env", 0, 0, 0755, 0755, 0},
  {"run", 0, 0, 0755, 0755, 0},
  {"run/auth", "pb-auth", "pb-authc", 0750, 0700, 0},
  {"run/login", "pb-deliv", "pb-loginc", 0750, 0700, 0},
  {"run/tls", 0, "pb-tlsc", 0750, 0700, 0},
  {"run/quota", "pb-deliv", "pb-authc", 02750, 0700, 1},
  {"run/slots", 0, 0, 0755, 0755, 0},
  {"run/slots/smtpd", "pb-smtpd", "pb-smtpd", 0700, 0700, 0},
  {"run/slots/login", "pb-login", "pb-login", 0700, 0700, 0},
  {"run/slots/pop3", "pb-login", "pb-login", 0700, 0700, 0},
};

static void chown_tree(char const *p, uid_t u, gid_t g)
{
  if (instance_chown_tree(p, u, g) < 0)
    strerr_diefu2sys(111, "give to its owner everything in ", p);
}

/* Is an entry right below directory p owned by someone else than u? */
static int children_not(char const *p, uid_t u)
{
  DIR *d = opendir(p);
  struct dirent *e;
  int r = 0;
  if (!d) strerr_diefu2sys(111, "open directory ", p);
  while (!r && (e = readdir(d))) {
    struct stat st;
    if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
      continue;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_uid != u) r = 1;
  }
  closedir(d);
  return r;
}

/* Makes the directories of the layout (missing ones) and, when privileged, gives each to its
 * user with its mode. */
static void make_layout(int privileged)
{
  unsigned int i;
  for (i = 0; i < sizeof layout / sizeof layout[0]; i++) {
    char const *p = path(layout[i].rel);
    mode_t mode = privileged ? layout[i].mode : layout[i].single;
    struct stat st;
    if (mkdir(p, 0700) < 0 && errno != EEXIST) strerr_diefu2sys(111, "mkdir ", p);
    if (lstat(p, &st) < 0) strerr_diefu2sys(111, "stat ", p);
    if (!S_ISDIR(st.st_mode)) strerr_dief2x(100, p, " is not a directory");
    if (privileged) {
      uid_t u = layout[i].user ? uid_of(layout[i].user) : 0;
      gid_t g = layout[i].group ? gid_of(layout[i].group) : 0;
      if (layout[i].tree && (st.st_uid != u || children_not(p, u)))
        chown_tree(p, u, g);
      else if ((st.st_uid != u || st.st_gid != g) && lchown(p, u, g) < 0)
        strerr_diefu2sys(111, "chown ", p);
    }
    if (chmod(p, mode) < 0) strerr_diefu2sys(111, "chmod ", p);
  }
  if (privileged) { /* the hashes: read by the auth service only */
    char const *p = path("control/passwd.cdb");
    if (lchown(p, uid_of("pb-auth"), gid_of("pb-auth")) < 0 && errno != ENOENT)
      strerr_diefu2sys(111, "chown ", p);
  }
}

/* MAILROOT/env/PATH: where the run scripts find the programs (kept if it exists). */
static void make_envpath(void)
{
  stralloc s = STRALLOC_ZERO;
  struct stat st;
  if (lstat(path("env/PATH"), &st) == 0) return;
  if (!stralloc_catb(&s, bindir.s, bindir.len) ||
      !stralloc_cats(&s, ":/usr/local/bin:/usr/bin:/bin\n"))
    strerr_diefu1sys(111, "allocate");
  writefile("env/PATH", s.s, s.len, 0644);
  stralloc_free(&s);
}

/* tcprules: control/tcp-rules into control/tcp-rules.cdb, atomically (tcprules writes the
 * temporary file and renames it); tcpserver reads the cdb at each connection. */
static int rebuild_tcprules(int loud)
{
  char const *argv[] = {"tcprules", "control/tcp-rules.cdb", "control/tcp-rules.tmp", 0};
  int r = run(argv, path("control/tcp-rules"));
  if (r == 127) strerr_warnw1x("tcprules not found: control/tcp-rules.cdb not made");
  else if (r) strerr_warnw1x("tcprules failed: control/tcp-rules.cdb not made (syntax?)");
  (void)loud;
  return r;
}

static void find_bindir(void)
{
  if (sarealpath(&bindir, "/proc/self/exe") < 0) { /* skalibs: 0 ok, -1 error */
    bindir.len = 0;
    if (!stralloc_cats(&bindir, PILLARBOX_BINDIR)) strerr_diefu1sys(111, "allocate");
  } else {
    while (bindir.len && !bindir.s[bindir.len - 1]) bindir.len--;
    while (bindir.len && bindir.s[bindir.len - 1] != '/') bindir.len--;
    if (bindir.len > 1) bindir.len--;
  }
  if (!stralloc_0(&bindir)) strerr_diefu1sys(111, "allocate");
  bindir.len--;
}

/* ROOT as an absolute path without trailing slashes, into abs; sets root. */
static void set_root(char const *rootarg, stralloc *abs)
{
  size_t i;
  if (!*rootarg) dieusage();
  if (rootarg[0] != '/') {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) strerr_diefu1sys(111, "get the current directory");
    if (!stralloc_cats(abs, cwd) || !stralloc_catb(abs, "/", 1)) strerr_diefu1sys(111, "allocate");
  }
  if (!stralloc_cats(abs, rootarg)) strerr_diefu1sys(111, "allocate");
  while (abs->len > 1 && abs->s[abs->len - 1] == '/') abs->len--;
  if (!stralloc_0(abs)) strerr_diefu1sys(111, "allocate");
  root = abs->s;
  for (i = 0; root[i]; i++)
    if ((unsigned char)root[i] < ' ' || root[i] == 127)
      strerr_dief1x(100, "ROOT must not contain control characters");
}

/* mail-instance update ROOT / mail-instance tcprules [ROOT] */
static int other_commands(int argc, char const *const *argv)
{
  stralloc abs = STRALLOC_ZERO;
  struct stat st;
  if (!strcmp(argv[1], "tcprules")) {
    char const *r = argc > 2 ? argv[2] : getenv("MAILROOT");
    if (argc > 3 || !r) dieusage();
    set_root(r, &abs);
    if (stat(path("control/tcp-rules"), &st) < 0)
      strerr_diefu2sys(111, "stat ", path("control/tcp-rules"));
    return rebuild_tcprules(1) ? 111 : 0;
  }
  if (argc != 3) dieusage();
  set_root(argv[2], &abs);
  if (stat(path("control"), &st) < 0 || !S_ISDIR(st.st_mode))
    strerr_dief3x(100, "not an instance: ", root, " (no control/ directory)");
  find_bindir();
  if (setenv("MAILROOT", root, 1) < 0) strerr_diefu1sys(111, "setenv MAILROOT");
  /* the model applies when root runs an instance root made */
  if (!geteuid() && !st.st_uid) make_users();
  if (!queue_init(path("queue"))) strerr_diefu2sys(111, "make the queue in ", path("queue"));
  make_layout(!geteuid() && !st.st_uid);
  make_envpath();
  updating = 1;
  make_services();
  return 0;
}

static char const readme[] =
  "# control/: one fact per file (blank lines and # comments ignored). Text sources (domains,\n"
  "# users, aliases) are edited with mail-domain, mail-user and mail-alias, which rebuild the\n"
  "# .cdb files atomically; after editing a text source by hand, run `mail-user rebuild` (or\n"
  "# mail-alias / mail-domain rebuild; newaliases = mail-alias rebuild). Formats:\n"
  "# doc/formats.md; limits: doc/operations.md. A missing file means the default shown.\n"
  "#\n"
  "# Names and databases\n"
  "# me                 this host's name (greeting, Received:, Message-ID, bounces)\n"
  "# defaultdomain      where a bare name lives (sendmail root): the first --domain\n"
  "# domains            local domains, one per line, compiled to domains.cdb\n"
  "# users              address:hash:maildir:quota (mode 0600), compiled into users.cdb\n"
  "#                    (no hashes, 0644) and passwd.cdb (the hashes, 0600: the auth service)\n"
  "# aliases            address: target, target, ...  (@domain = catch-all), aliases.cdb\n"
  "# tcp-rules          tcpserver access rules (tcprules), compiled to tcp-rules.cdb by\n"
  "#                    `mail-instance tcprules` (tcpserver rereads it at each connection)\n"
  "# routes             static routes, \"domain host[:port]\" or \"* host[:port]\" (smarthost)\n"
  "# tls-policy         outbound TLS per domain, \"domain policy\" or \"* policy\"\n"
  "# .lock              taken by the admin commands while they edit (do not remove)\n"
  "#\n"
  "# SMTP (smtp-receive)\n"
  "# databytes          largest message, bytes (36700160; also queue-inject's limit)\n"
  "# hop-limit          most Received: lines a message may carry (100)\n"
  "# smtp-linemax       longest command line (2048)\n"
  "# smtp-rcptmax       recipients per message (100)\n"
  "# smtp-errmax        error replies before the session is closed (20)\n"
  "# smtp-timeout       seconds of client silence (300)\n"
  "# smtp-sessionmax    seconds per session (3600)\n"
  "# smtp-junkmax       NOOP/RSET/VRFY/EXPN/HELP allowed between messages (100)\n"
  "# smtp-peermax       connections one address may hold at once (10; 0: no cap)\n"
  "# smtp-greetdelay    milliseconds to wait for an early talker before the greeting (0)\n"
  "# ipv6-prefix        prefix length IPv6 clients are counted by (64)\n"
  "# authfail-limit     failed logins per address per minute before AUTH is refused (10)\n"
  "# sender-allow       extra sender addresses: \"account address\" or \"account @domain\" a line\n"
  "# smtp-authdelay     seconds of delay per failed AUTH (1)\n"
  "# authfail-block     seconds an address is blocked after too many failed logins (900)\n"
  "#\n"
  "# Queue (queue-inject, queue-run)\n"
  "# queue-addrmax      longest envelope address (256)\n"
  "# queue-rcptmax      recipients per queued message (1000)\n"
  "# queue-timeout      seconds an injection may take (86400)\n"
  "# queue-lifetime     seconds before an undeliverable message bounces (432000 = 5 days)\n"
  "# queue-rescan       seconds between full scans of the queue (60)\n"
  "# queue-termwait     seconds queue-run waits for deliveries when stopped (60)\n"
  "# concurrency-local  parallel local deliveries (10)\n"
  "# concurrency-remote parallel remote deliveries (20)\n"
  "# concurrency-domain parallel deliveries to one remote domain (5)\n"
  "# retry-base         first retry delay, seconds (240)\n"
  "# retry-max          longest retry delay, seconds (14400)\n"
  "# timeout-local      seconds a local delivery may take (600)\n"
  "# timeout-remote     seconds a remote delivery may take (3600)\n"
  "# quota-bounce       not 0: a full mailbox bounces at once instead of a retry (0)\n"
  "#\n"
  "# POP3 and mailboxes\n"
  "# pop3-timeout         idle seconds before autologout (600)\n"
  "# pop3-allow-plaintext 1: USER/PASS without TLS from loopback (0)\n"
  "# pop3-peermax         POP3 connections one address may hold at once (10; 0: no cap)\n"
  "# imap-login-timeout   seconds for the whole IMAP dialogue before login (180)\n"
  "# imap-allow-plaintext 1: IMAP LOGIN/AUTHENTICATE without TLS from loopback (0)\n"
  "# imap-peermax         IMAP connections one address may hold at once (20; 0: no cap)\n"
  "# expunge-days         days before mail-expunge empties Trash and Junk (30)\n";

/* The aliases file an instance starts with: postmaster@D for every domain D when --postmaster
 * is given, and root, abuse and MAILER-DAEMON of every domain to its postmaster. */
static void initial_aliases(stralloc *out, char const *const *doms, unsigned int ndoms,
                            char const *pmaddr)
{
  if (pmaddr) { /* RFC 5321 4.5.1: postmaster@D for every domain, to one mailbox */
    stralloc f = STRALLOC_ZERO;
    unsigned int j;
    size_t pat, k;
    if (!addr_fold(pmaddr, strlen(pmaddr), &f)) strerr_diefu1sys(111, "allocate");
    pat = addr_at(f.s, f.len);
    for (j = 0; j < ndoms; j++) {
      size_t dl = strlen(doms[j]);
      if (pat == 10 && !memcmp(f.s, "postmaster", 10) && f.len - pat - 1 == dl &&
          !strncasecmp(f.s + pat + 1, doms[j], dl))
        strerr_dief2x(100, "--postmaster would be an alias of itself: ", pmaddr);
      if (!stralloc_cats(out, "postmaster@")) strerr_diefu1sys(111, "allocate");
      for (k = 0; k < dl; k++) {
        char c = doms[j][k];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (!stralloc_catb(out, &c, 1)) strerr_diefu1sys(111, "allocate");
      }
      if (!stralloc_cats(out, ": ") ||
          !stralloc_cats(out, pmaddr) || !stralloc_catb(out, "\n", 1))
        strerr_diefu1sys(111, "allocate");
    }
    stralloc_free(&f);
  }

  /* RFC 2142 and cron: root, abuse and MAILER-DAEMON of every domain reach its postmaster
   * (postmaster@D is --postmaster, or the domain's first account: see mail-user) */
  {
    static char const *const roles[3] = {"root", "abuse", "mailer-daemon"};
    stralloc f = STRALLOC_ZERO;
    unsigned int j, k;
    if (pmaddr && !addr_fold(pmaddr, strlen(pmaddr), &f)) strerr_diefu1sys(111, "allocate");
    for (j = 0; j < ndoms; j++) {
      size_t dl = strlen(doms[j]), x;
      for (k = 0; k < 3; k++) {
        size_t start = out->len, rl = strlen(roles[k]);
        if (!stralloc_cats(out, roles[k]) || !stralloc_catb(out, "@", 1))
          strerr_diefu1sys(111, "allocate");
        for (x = 0; x < dl; x++) {
          char c = doms[j][x];
          if (c >= 'A' && c <= 'Z') c += 32;
          if (!stralloc_catb(out, &c, 1)) strerr_diefu1sys(111, "allocate");
        }
        /* --postmaster root@D: that one is the mailbox, not an alias of it */
        if (pmaddr && f.len == out->len - start && !memcmp(f.s, out->s + start, f.len)) {
          out->len = start;
          continue;
        }
        /* room first: the domain is copied from out itself, which must not move under it */
        if (!stralloc_readyplus(out, sizeof ": postmaster@" + dl + 1) ||
            !stralloc_cats(out, ": postmaster@") ||
            !stralloc_catb(out, out->s + start + rl + 1, dl) ||
            !stralloc_catb(out, "\n", 1))
          strerr_diefu1sys(111, "allocate");
      }
    }
    stralloc_free(&f);
  }
}

/* Marks ROOT as the top of a directory hierarchy (ext4's chattr +T, FS_TOPDIR_FL), so the
 * file system places each of its sub-directories (queue/, mail/, log/...) in a block group of
 * its own: the queue's churn (a file made and removed per message) then stays out of the
 * groups where Maildir files are made. On ext4 without a journal every inode allocation scans
 * the inodes freed in its group in the last minutes (recently_deleted()); with queue/ and mail/
 * in one group a delivery paid for the queue's unlinks (doc/performance.md, 2026-12-05 13:00).
 * Advice only: a file system without the flag, or a refusal, changes nothing. */
static void root_topdir(void)
{
  int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), flags;
  if (fd < 0) return;
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_TOPDIR_FL)) {
    flags |= FS_TOPDIR_FL;
    if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0) { /* not supported here: nothing to do */
    }
  }
  close(fd);
}

/* ROOT must be an empty directory, or not exist yet (then it is made). */
static void root_empty_or_new(void)
{
  struct stat st;
  if (lstat(root, &st) == 0) {
    DIR *d;
    struct dirent *e;
    if (!S_ISDIR(st.st_mode))
      strerr_dief3x(100, "refusing to create an instance: ", root,
                    " exists and is not a directory");
    d = opendir(root);
    if (!d) strerr_diefu2sys(111, "open directory ", root);
    for (;;) {
      errno = 0;
      e = readdir(d);
      if (!e) {
        if (errno) strerr_diefu2sys(111, "read directory ", root);
        break;
      }
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
        strerr_dief3x(100, "refusing to overwrite: ", root, " exists and is not empty");
    }
    closedir(d);
  } else if (errno != ENOENT)
    strerr_diefu2sys(111, "stat ", root);
  else {
    mkparents(root);
    if (mkdir(root, 0755) < 0) strerr_diefu2sys(111, "mkdir ", root);
  }
  root_topdir();
}

int main(int argc, char const *const *argv)
{
  char const *host = 0;
  char const *rootarg = 0;
  char const *pmaddr = 0;
  stralloc aliases = STRALLOC_ZERO;
  stralloc domains = STRALLOC_ZERO, abs = STRALLOC_ZERO;
  int i;
  char const *doms[DOMS_MAX];
  unsigned int ndoms = 0;

  if (argc >= 2 && (!strcmp(argv[1], "update") || !strcmp(argv[1], "tcprules")))
    return other_commands(argc, argv);
  if (argc < 2 || strcmp(argv[1], "create")) dieusage();
  for (i = 2; i < argc; i++) {
    char const *a = argv[i];
    char const *v = 0;
    int kind = 0; /* 1 hostname, 2 domain, 3 postmaster */
    if (!strcmp(a, "--hostname") || !strcmp(a, "-h")) kind = 1;
    else if (!strcmp(a, "--domain") || !strcmp(a, "-d")) kind = 2;
    else if (!strcmp(a, "--postmaster") || !strcmp(a, "-p")) kind = 3;
    else if (!strncmp(a, "--hostname=", 11)) kind = 1, v = a + 11;
    else if (!strncmp(a, "--domain=", 9)) kind = 2, v = a + 9;
    else if (!strncmp(a, "--postmaster=", 13)) kind = 3, v = a + 13;
    else if (a[0] == '-') dieusage();
    else if (!rootarg) {
      rootarg = a;
      continue;
    } else
      dieusage();
    if (!v) {
      if (++i >= argc) dieusage();
      v = argv[i];
    }
    if (kind == 1) host = v;
    else if (kind == 3) {
      int r = addr_check_mailbox(v, strlen(v), ADDR_UTF8);
      if (pmaddr) strerr_dief1x(100, "--postmaster given twice");
      if (r != ADDR_OK)
        strerr_dief4x(100, "invalid --postmaster address ", v, ": ", addr_strerror(r));
      pmaddr = v;
    } else {
      unsigned int j;
      if (!domain_ok(v)) strerr_dief2x(100, "not a valid domain: ", v);
      for (j = 0; j < ndoms; j++)
        if (!strcasecmp(doms[j], v)) strerr_dief2x(100, "domain given twice: ", v);
      if (ndoms >= DOMS_MAX) strerr_dief1x(100, "too many --domain options");
      doms[ndoms++] = v;
      if (!stralloc_cats(&domains, v) || !stralloc_catb(&domains, "\n", 1))
        strerr_diefu1sys(111, "allocate");
    }
  }
  if (!rootarg || !host || !domains.len) dieusage();
  if (!*rootarg) dieusage();
  if (!domain_ok(host)) strerr_dief2x(100, "not a valid hostname: ", host);
  {
    size_t k;
    for (k = 0; k < domains.len; k++)
      if (domains.s[k] >= 'A' && domains.s[k] <= 'Z') domains.s[k] += 32;
  }
  initial_aliases(&aliases, doms, ndoms, pmaddr);

  /* ROOT, absolute */
  set_root(rootarg, &abs);

  root_empty_or_new();

  /* the directory of the programs */
  find_bindir();

  if (setenv("MAILROOT", root, 1) < 0) strerr_diefu1sys(111, "setenv MAILROOT");
  if (!geteuid()) make_users();
  make_layout(0); /* owners once the files are in: below */
  make_envpath();

  {
    int lock = accounts_lock();
    {
      stralloc me = STRALLOC_ZERO;
      if (!stralloc_cats(&me, host) || !stralloc_catb(&me, "\n", 1))
        strerr_diefu1sys(111, "allocate");
      writefile("control/me", me.s, me.len, 0644);
      /* where bare names ("root", cron's MAILTO) live: the first domain */
      me.len = 0;
      if (!stralloc_cats(&me, doms[0]) || !stralloc_catb(&me, "\n", 1))
        strerr_diefu1sys(111, "allocate");
      for (i = 0; (size_t)i < me.len; i++)
        if (me.s[i] >= 'A' && me.s[i] <= 'Z') me.s[i] += 32;
      writefile("control/defaultdomain", me.s, me.len, 0644);
      stralloc_free(&me);
    }
    accounts_save(ACCT_DOMAINS, domains.s, domains.len);
    accounts_save(ACCT_USERS, "", 0);
    accounts_save(ACCT_ALIASES, aliases.s ? aliases.s : "", aliases.len);
    writefile("control/README", readme, sizeof readme - 1, 0644);
    close(lock);
  }
  make_tcprules();
  make_tls(host);
  make_services();
  if (!queue_init(path("queue"))) strerr_diefu2sys(111, "make the queue in ", path("queue"));
  make_layout(!geteuid());
  stralloc_free(&aliases);
  stralloc_free(&domains);
  stralloc_free(&abs);
  return 0;
}
