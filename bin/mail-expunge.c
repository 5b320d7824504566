/* mail-expunge: removes old messages from Trash and Junk folders (auto-expunge).
 *
 * For every mailbox of the instance (MAILROOT/mail/DOMAIN/USER), or the Maildirs named on the
 * command line, removes the messages of the named Maildir++ folders (default Trash and Junk)
 * that entered the folder more than DAYS days ago. "Entered" is the file's ctime: a message
 * moved or copied into a folder is renamed or linked there, which sets it, while its mtime is
 * still the day it was delivered. IMAP sessions see the removals as EXPUNGEs; the Maildir++
 * maildirsize file gets one "-SIZE -1" line per removed message. Runs as the delivery uid, from
 * the periodic service or by hand.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <skalibs/buffer.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include "control.h"
#include "maildir.h"

char const *PROG = "mail-expunge";
#define USAGE "mail-expunge [-n] [-v] [-d days] [-f folder[,folder...]] [-T now] [maildir...]"

#define FOLDERS_MAX 16

static int dryrun, verbose;
static time_t cutoff;
static char const *folder[FOLDERS_MAX];
static unsigned int nfolders;
static uint64_t total_msgs, total_bytes;
static int trouble;

static void out(char const *a, char const *b, char const *c)
{
  if (buffer_puts(buffer_1, a) < 0 || buffer_puts(buffer_1, b) < 0 ||
      buffer_puts(buffer_1, c) < 0)
    strerr_diefu1sys(111, "write to stdout");
}

/* Removes the old messages of DIR/SUB (SUB: ".Trash/cur" ...). Returns the bytes removed and
 * counts them into *n. */
static uint64_t expunge_sub(int mdfd, char const *sub, uint64_t *n)
{
  uint64_t bytes = 0;
  DIR *d;
  int fd = openat(mdfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) {
      strerr_warnwu2sys("open ", sub);
      trouble = 1;
    }
    return 0;
  }
  d = fdopendir(fd);
  if (!d) {
    strerr_warnwu2sys("read ", sub);
    trouble = 1;
    close(fd);
    return 0;
  }
  for (;;) {
    struct dirent *e;
    struct stat st;
    errno = 0;
    e = readdir(d);
    if (!e) {
      if (errno) {
        strerr_warnwu2sys("read ", sub);
        trouble = 1;
      }
      break;
    }
    if (e->d_name[0] == '.') continue;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno != ENOENT) trouble = 1; /* ENOENT: expunged by a session meanwhile */
      continue;
    }
    if (!S_ISREG(st.st_mode) || st.st_ctime >= cutoff) continue;
    if (!dryrun && unlinkat(dirfd(d), e->d_name, 0) < 0) {
      if (errno != ENOENT) {
        strerr_warnwu4sys("remove ", sub, "/", e->d_name);
        trouble = 1;
      }
      continue;
    }
    if (verbose) out(dryrun ? "would remove " : "removed ", sub, "/");
    if (verbose) out(e->d_name, "\n", "");
    bytes += (uint64_t)st.st_size;
    (*n)++;
  }
  closedir(d);
  return bytes;
}

static void expunge_maildir(char const *dir)
{
  static stralloc sub = STRALLOC_ZERO;
  uint64_t n = 0, bytes = 0;
  unsigned int i;
  int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    strerr_warnwu2sys("open ", dir);
    trouble = 1;
    return;
  }
  for (i = 0; i < nfolders; i++) {
    static char const *const subs[2] = {"/cur", "/new"};
    unsigned int k;
    for (k = 0; k < 2; k++) {
      sub.len = 0;
      if (!stralloc_cats(&sub, ".") || !stralloc_cats(&sub, folder[i]) ||
          !stralloc_cats(&sub, subs[k]) || !stralloc_0(&sub))
        strerr_diefu1sys(111, "allocate");
      bytes += expunge_sub(dirfd, sub.s, &n);
    }
  }
  close(dirfd);
  if (n && !dryrun && maildir_quota_add(dir, -(int64_t)bytes, -(int64_t)n) < 0) {
    strerr_warnwu2sys("update the maildirsize of ", dir);
    trouble = 1;
  }
  total_msgs += n;
  total_bytes += bytes;
}

/* Every MAILROOT/mail/DOMAIN/USER; names starting with '.' (kept deleted accounts) skipped. */
static void expunge_all(void)
{
  static stralloc root = STRALLOC_ZERO, path = STRALLOC_ZERO;
  DIR *domains;
  if (!mailroot_path(&root, "mail")) strerr_diefu1sys(111, "allocate");
  domains = opendir(root.s);
  if (!domains) strerr_diefu2sys(111, "open ", root.s);
  for (;;) {
    struct dirent *dom;
    DIR *users;
    errno = 0;
    dom = readdir(domains);
    if (!dom) {
      if (errno) strerr_diefu2sys(111, "read ", root.s);
      break;
    }
    if (dom->d_name[0] == '.') continue;
    path.len = 0;
    if (!stralloc_cats(&path, root.s) || !stralloc_cats(&path, "/") ||
        !stralloc_cats(&path, dom->d_name) || !stralloc_0(&path))
      strerr_diefu1sys(111, "allocate");
    users = opendir(path.s);
    if (!users) {
      if (errno != ENOTDIR) {
        strerr_warnwu2sys("open ", path.s);
        trouble = 1;
      }
      continue;
    }
    for (;;) {
      static stralloc md = STRALLOC_ZERO;
      struct dirent *u;
      errno = 0;
      u = readdir(users);
      if (!u) {
        if (errno) {
          strerr_warnwu2sys("read ", path.s);
          trouble = 1;
        }
        break;
      }
      if (u->d_name[0] == '.') continue;
      md.len = 0;
      if (!stralloc_copyb(&md, path.s, path.len - 1) || !stralloc_cats(&md, "/") ||
          !stralloc_cats(&md, u->d_name) || !stralloc_0(&md))
        strerr_diefu1sys(111, "allocate");
      expunge_maildir(md.s);
    }
    closedir(users);
  }
  closedir(domains);
}

static void parse_folders(char *s)
{
  nfolders = 0;
  for (;;) {
    char *comma = strchr(s, ',');
    if (comma) *comma = 0;
    if (!*s || strchr(s, '/') || s[0] == '.' || nfolders >= FOLDERS_MAX)
      strerr_dief1x(100, "-f takes folder names (no '/', no leading '.'), at most 16");
    folder[nfolders++] = s;
    if (!comma) break;
    s = comma + 1;
  }
}

int main(int argc, char const *const *argv)
{
  static char folders_default[] = "Trash,Junk";
  subgetopt l = SUBGETOPT_ZERO;
  unsigned long days = control_uint("expunge-days", 30);
  char fmt[UINT64_FMT];
  time_t now = time(0);
  int opt;
  parse_folders(folders_default);
  while ((opt = subgetopt_r(argc, argv, "nvd:f:T:", &l)) != -1) {
    switch (opt) {
      case 'n': dryrun = 1; break;
      case 'v': verbose = 1; break;
      case 'd':
        if (!ulong_scan(l.arg, &days)) strerr_dieusage(100, USAGE);
        break;
      case 'f': {
        static char buf[1024];
        size_t len = strlen(l.arg);
        if (len >= sizeof buf) strerr_dieusage(100, USAGE);
        memcpy(buf, l.arg, len + 1);
        parse_folders(buf);
        break;
      }
      case 'T': { /* "as if it were then": for what-if runs and tests */
        unsigned long t;
        if (!ulong_scan(l.arg, &t)) strerr_dieusage(100, USAGE);
        now = (time_t)t;
        break;
      }
      default: strerr_dieusage(100, USAGE);
    }
  }
  argc -= l.ind;
  argv += l.ind;
  if (!days || days > 36500) strerr_dief1x(100, "the age must be 1..36500 days");
  cutoff = now - (time_t)days * 86400;
  if (argc)
    for (; *argv; argv++) expunge_maildir(*argv);
  else
    expunge_all();
  fmt[uint64_fmt(fmt, total_msgs)] = 0;
  out(dryrun ? "would remove " : "removed ", fmt, " messages, ");
  fmt[uint64_fmt(fmt, total_bytes)] = 0;
  out(fmt, " bytes\n", "");
  if (!buffer_flush(buffer_1)) strerr_diefu1sys(111, "write to stdout");
  return trouble ? 111 : 0;
}
