/* imap-maildir: the IMAP session after login (authenticated and selected states), over the
 * user's Maildir++.
 *
 * Run by the login path (auth-check or the login broker, which imap-serve runs) with HOME =
 * the Maildir and USER = the account, the client on fd 0/1. Answers the LOGIN/AUTHENTICATE
 * whose tag is $IMAP_TAG itself; without $IMAP_TAG it greets with PREAUTH (a tunnel, as
 * mbsync's Tunnel option runs it). The rest of a pipelined client's input arrives hex-encoded
 * in $IMAP_INPUT. The commands live in lib/imap_{mbox,fetch,search,store}.c; this file reads
 * commands, checks the state and dispatches, and runs IDLE.
 */
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <skalibs/allreadwrite.h>
#include <skalibs/djbunix.h>
#include <skalibs/gccattributes.h>
#include <skalibs/sgetopt.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>
#include "imap_parse.h"
#include "imap_sess.h"
#include "imap_store.h"
#include "deflateio.h"
#include "imapio.h"
#include "maildir.h"
#include "mailstore.h"
#include "pagedrop.h"

char const *PROG = "imap-maildir";
#define USAGE "imap-maildir [-t timeout] [-p idlepoll] [-P]"

static unsigned int timeout = 1800;   /* autologout, seconds (RFC 3501: at least 30 min) */
static unsigned int idlepoll = 5;     /* IDLE: look at the folder this often (seconds) */
static int pollonly;                  /* -P: IDLE without inotify (as on NFS) */
static stralloc cmdbuf = STRALLOC_ZERO;
static imap_cmd cmd;
static imapio_spool spool;
static char tagbuf[IMAP_TAG_MAX + 1];

static void out(char const *s)
{
  imap_out(s);
}

static void flush(void)
{
  if (!imapio_flush()) _exit(errno == ETIMEDOUT ? 99 : 0);
}

/* The client has been quiet for a while (lib/timedio's rest, under IDLE too): what the session
 * holds only for the next command goes out of its memory until that command comes (the
 * record's pages, freed heap, the stack of the last deep call; lib/timedio then waits without
 * the program's text: lib/pagedrop). */
static void rest(void)
{
  if (sess.selected) mailstore_idle(&sess.ms); /* see mailstore.h */
  msgcache_rest(&sess.cache);
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  pagedrop_stack();
}

static void bye(char const *, int) gccattr_noreturn;

static void bye(char const *text, int code)
{
  out("* BYE ");
  out(text);
  out("\r\n");
  imapio_flush();
  _exit(code);
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* $IMAP_INPUT: the pipelined rest of the input, hex-encoded (it may hold NULs). */
static void preload(char const *x)
{
  size_t len = strlen(x), i;
  char buf[IMAPIO_IBUF];
  if (len % 2 || len / 2 > sizeof buf) strerr_dief1x(100, "IMAP_INPUT: bad hex or too long");
  for (i = 0; i < len / 2; i++) {
    int a = hexval(x[2 * i]), b = hexval(x[2 * i + 1]);
    if (a < 0 || b < 0) strerr_dief1x(100, "IMAP_INPUT: bad hex");
    buf[i] = (char)(a * 16 + b);
  }
  if (!imapio_preload(buf, len / 2)) strerr_dief1x(100, "IMAP_INPUT too long");
}

/* ---- commands handled here ---- */

/* The capabilities after login: lib/imap_sess's, and COMPRESS (lib/deflateio). */
static void caps(void)
{
  out(imap_capabilities());
  out(" COMPRESS=DEFLATE");
}

static void capability(void)
{
  out("* CAPABILITY ");
  caps();
  out("\r\n");
  imap_ok("Capability completed.");
}

/* COMPRESS DEFLATE (RFC 4978): the OK goes out plain, everything after it compressed. */
static void compress(void)
{
  if (deflateio_active()) {
    imap_no("[COMPRESSIONACTIVE] DEFLATE active via COMPRESS");
    return;
  }
  if (cmd.nargs != 1 || !imap_arg_is(&cmd.arg[0], "DEFLATE") || cmd.arg[0].type != IMAP_ATOM) {
    imap_bad("Error in IMAP command COMPRESS: Unknown compression mechanism");
    return;
  }
  imap_ok("DEFLATE active");
  flush();
  if (!deflateio_start()) strerr_diefu1sys(111, "start compression");
}

static void enable(void)
{
  uint32_t i;
  int any = 0;
  if (!cmd.nargs) {
    imap_bad("Error in IMAP command ENABLE: Missing capability");
    return;
  }
  for (i = 0; i < cmd.nargs; i++) {
    imap_arg const *a = &cmd.arg[i];
    char const *name = 0;
    if (a->type != IMAP_ATOM) {
      imap_bad("Error in IMAP command ENABLE: Invalid arguments");
      return;
    }
    if (imap_arg_is(a, "CONDSTORE")) {
      if (!sess.condstore) name = "CONDSTORE";
      imap_sess_condstore();
    } else if (imap_arg_is(a, "QRESYNC")) {
      if (!sess.condstore) {
        out(any ? " CONDSTORE" : "* ENABLED CONDSTORE");
        any = 1;
      }
      imap_sess_condstore();
      if (!sess.qresync) name = "QRESYNC";
      sess.qresync = 1;
    } else if (imap_arg_is(a, "IMAP4rev2")) {
      if (!sess.rev2) name = "IMAP4rev2";
      sess.rev2 = 1;
      sess.utf8 = 1; /* mailbox names are UTF-8 in IMAP4rev2 */
    } else if (imap_arg_is(a, "UTF8=ACCEPT")) {
      if (!sess.utf8) name = "UTF8=ACCEPT";
      sess.utf8 = 1;
    }
    if (name) {
      out(any ? " " : "* ENABLED ");
      out(name);
      any = 1;
    }
  }
  if (any) out("\r\n");
  else out("* ENABLED\r\n");
  imap_ok("Enabled.");
}

static void id(void)
{
  out("* ID (\"name\" \"pillarbox\" \"vendor\" \"pillarbox\")\r\n");
  imap_ok("ID completed.");
}

static void quota(int root)
{
  maildir_quota q;
  int r = maildir_quota_read(".", &q);
  if (root) {
    char name[MAILSTORE_NAME_MAX + 1];
    size_t len;
    if (cmd.nargs != 1 || !imap_sess_mboxname(&cmd.arg[0], name, &len)) {
      imap_bad("Error in IMAP command GETQUOTAROOT: Invalid arguments");
      return;
    }
    out("* QUOTAROOT ");
    imap_outmbox(name, len);
    out(r == 1 && (q.maxsize || q.maxcount) ? " \"\"\r\n" : "\r\n");
  } else if (cmd.nargs != 1 || !imap_is_string(&cmd.arg[0]) || cmd.arg[0].len) {
    imap_no("[NONEXISTENT] No such quota root");
    return;
  }
  if (r == 1 && (q.maxsize || q.maxcount)) {
    int first = 1;
    out("* QUOTA \"\" (");
    if (q.maxsize) {
      out("STORAGE ");
      imap_outu(q.cursize > 0 ? (uint64_t)q.cursize / 1024 : 0);
      out(" ");
      imap_outu(q.maxsize / 1024);
      first = 0;
    }
    if (q.maxcount) {
      out(first ? "MESSAGE " : " MESSAGE ");
      imap_outu(q.curcount > 0 ? (uint64_t)q.curcount : 0);
      out(" ");
      imap_outu(q.maxcount);
    }
    out(")\r\n");
  } else if (!root) {
    imap_no("[NONEXISTENT] No such quota root");
    return;
  }
  imap_ok(root ? "Getquotaroot completed." : "Getquota completed.");
}

/* IDLE (RFC 2177): pushes changes as they happen, inotify where the kernel tells, a look
 * every idlepoll seconds where it does not (NFS). */
static void idle(void)
{
  int ifd = -1;
  time_t start = time(0);
  stralloc line = STRALLOC_ZERO;
  if (sess.selected && !pollonly) {
    ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ifd >= 0) {
      stralloc p = STRALLOC_ZERO;
      uint32_t mask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB;
      if (stralloc_cats(&p, sess.ms.dir) && stralloc_cats(&p, "/new") && stralloc_0(&p))
        inotify_add_watch(ifd, p.s, mask);
      p.len = 0;
      if (stralloc_cats(&p, sess.ms.dir) && stralloc_cats(&p, "/cur") && stralloc_0(&p))
        inotify_add_watch(ifd, p.s, mask);
      inotify_add_watch(ifd, sess.ms.dir, IN_MOVED_TO);
      stralloc_free(&p);
    }
  }
  out("+ idling\r\n");
  imap_sess_update(1, 1);
  flush();
  for (;;) {
    int r;
    unsigned long ms = (unsigned long)idlepoll * 1000;
    time_t now = time(0);
    if ((unsigned long)(now - start) >= timeout) {
      if (ifd >= 0) fd_close(ifd);
      bye("Disconnected for inactivity.", 0);
    }
    r = imapio_wait(ifd, ms);
    if (r < 0) _exit(111);
    if (r == 1) break;
    if (r == 2) {
      char buf[4096];
      while (read(ifd, buf, sizeof buf) > 0) {}
    }
    imap_sess_update(1, 1);
    flush();
  }
  if (ifd >= 0) fd_close(ifd);
  {
    int r = imapio_readline(&line, 64);
    if (r == IMAPIO_TIMEOUT) bye("Disconnected for inactivity.", 0);
    if (r != 1) _exit(0);
    if (imap_ieq(line.s, line.len, "DONE")) {
      imap_sess_update(1, 1);
      imap_ok("Idle completed.");
    } else
      imap_bad("Expected DONE.");
  }
  stralloc_free(&line);
}

/* ---- dispatch ---- */

#define S_AUTH 1 /* authenticated (or selected) */
#define S_SEL 2  /* selected only */

static int is(char const *word)
{
  return imap_ieq(cmd.name, cmd.namelen, word);
}

static void dispatch(void)
{
  uint32_t i;
  sess.is_uid = 0;
  if (is("UID")) {
    char const *sub;
    size_t sublen;
    if (!sess.selected) {
      imap_bad("No mailbox selected.");
      return;
    }
    if (!cmd.nargs || cmd.arg[0].type != IMAP_ATOM) {
      imap_bad("Error in IMAP command UID: Missing command");
      return;
    }
    sub = cmd.arg[0].s;
    sublen = cmd.arg[0].len;
    sess.is_uid = 1;
    if (imap_ieq(sub, sublen, "FETCH")) imap_cmd_fetch(&cmd, 1);
    else if (imap_ieq(sub, sublen, "SEARCH")) imap_cmd_search(&cmd, 1);
    else if (imap_ieq(sub, sublen, "STORE")) imap_cmd_store(&cmd, 1);
    else if (imap_ieq(sub, sublen, "COPY")) imap_cmd_copy(&cmd, 1, 0);
    else if (imap_ieq(sub, sublen, "MOVE")) imap_cmd_copy(&cmd, 1, 1);
    else if (imap_ieq(sub, sublen, "EXPUNGE")) imap_cmd_expunge(&cmd, 1);
    else imap_bad("Error in IMAP command UID: Unknown command");
    sess.is_uid = 0;
    return;
  }
  /* commands valid in every state */
  if (is("CAPABILITY")) {
    capability();
    return;
  }
  if (is("NOOP") || is("CHECK")) {
    if (is("CHECK") && !sess.selected) {
      imap_bad("No mailbox selected.");
      return;
    }
    imap_sess_update(1, 1);
    imap_ok(is("NOOP") ? "NOOP completed." : "Check completed.");
    return;
  }
  if (is("LOGOUT")) {
    out("* BYE Logging out\r\n");
    imap_ok("Logout completed.");
    imapio_flush();
    _exit(0);
  }
  if (is("LOGIN") || is("AUTHENTICATE")) {
    imap_bad("Already logged in.");
    return;
  }
  if (is("STARTTLS")) {
    imap_bad("TLS is negotiated before login.");
    return;
  }
  if (is("ID")) {
    id();
    return;
  }
  if (is("ENABLE")) {
    enable();
    return;
  }
  if (is("COMPRESS")) {
    compress();
    return;
  }
  if (is("NAMESPACE")) {
    out("* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
    imap_ok("Namespace completed.");
    return;
  }
  if (is("IDLE")) {
    idle();
    return;
  }
  if (is("SELECT") || is("EXAMINE")) {
    imap_cmd_select(&cmd, is("EXAMINE"));
    return;
  }
  /* the commands after which EXPUNGE may be said go through one update first */
  if (is("CREATE") || is("DELETE") || is("RENAME") || is("SUBSCRIBE") || is("UNSUBSCRIBE") ||
      is("LIST") || is("LSUB") || is("STATUS") || is("APPEND") || is("GETQUOTA") ||
      is("GETQUOTAROOT")) {
    imap_sess_update(1, 1);
    if (is("CREATE")) imap_cmd_create(&cmd);
    else if (is("DELETE")) imap_cmd_delete(&cmd);
    else if (is("RENAME")) imap_cmd_rename(&cmd);
    else if (is("SUBSCRIBE")) imap_cmd_subscribe(&cmd, 1);
    else if (is("UNSUBSCRIBE")) imap_cmd_subscribe(&cmd, 0);
    else if (is("LIST")) imap_cmd_list(&cmd, 0);
    else if (is("LSUB")) imap_cmd_list(&cmd, 1);
    else if (is("STATUS")) imap_cmd_status(&cmd);
    else if (is("APPEND")) imap_cmd_append(&cmd, &spool);
    else if (is("GETQUOTA")) quota(0);
    else quota(1);
    return;
  }
  if (is("FETCH") || is("SEARCH") || is("STORE") || is("COPY") || is("MOVE") ||
      is("EXPUNGE") || is("CLOSE") || is("UNSELECT")) {
    if (!sess.selected) {
      imap_bad("No mailbox selected.");
      return;
    }
    if (is("FETCH")) imap_cmd_fetch(&cmd, 0);
    else if (is("SEARCH")) imap_cmd_search(&cmd, 0);
    else if (is("STORE")) imap_cmd_store(&cmd, 0);
    else if (is("COPY")) imap_cmd_copy(&cmd, 0, 0);
    else if (is("MOVE")) imap_cmd_copy(&cmd, 0, 1);
    else if (is("EXPUNGE")) imap_cmd_expunge(&cmd, 0);
    else if (cmd.nargs) imap_bad("Error in IMAP command: Unexpected arguments");
    else imap_cmd_close(is("CLOSE"));
    return;
  }
  (void)i;
  imap_bad("Error in IMAP command received by server: Unknown command.");
}

/* The tag of a command line that could not be read whole, for its reply. */
static char const *tag_of(char const *s, size_t len)
{
  size_t i = 0;
  while (i < len && i < IMAP_TAG_MAX && s[i] != ' ' && s[i] != '\r' && s[i] != '\n' &&
         (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f && s[i] != '*' && s[i] != '+')
    i++;
  if (!i || i >= len || s[i] != ' ') return "*";
  memcpy(tagbuf, s, i);
  tagbuf[i] = 0;
  return tagbuf;
}

/* Tells imap-serve (IMAP_NOTIFYFD) that the login worked: from now on, we answer the client. */
static void notify_login(void)
{
  char const *x = getenv("IMAP_NOTIFYFD");
  int fd;
  if (x && int0_scan(x, &fd) && fd > 2) {
    if (fd_write(fd, "y", 1) < 0) strerr_warnwu1sys("notify imap-serve");
    fd_close(fd);
  }
}

int main(int argc, char const *const *argv)
{
  char const *x;
  uint64_t appendmax = 64UL << 20;
  {
    subgetopt l = SUBGETOPT_ZERO;
    int opt;
    x = getenv("IMAP_TIMEOUT");
    if (x) {
      unsigned int t;
      if (!uint0_scan(x, &t)) strerr_dief1x(100, "IMAP_TIMEOUT must be a number of seconds");
      if (t > timeout) timeout = t;
    }
    x = getenv("IMAP_APPEND_MAX");
    if (x && (!uint640_scan(x, &appendmax) || !appendmax))
      strerr_dief1x(100, "IMAP_APPEND_MAX must be a positive number of bytes");
    while ((opt = subgetopt_r(argc, argv, "t:p:P", &l)) != -1) {
      switch (opt) {
        case 't':
          if (!uint0_scan(l.arg, &timeout) || !timeout) strerr_dieusage(100, USAGE);
          break;
        case 'p':
          if (!uint0_scan(l.arg, &idlepoll) || !idlepoll) strerr_dieusage(100, USAGE);
          break;
        case 'P': pollonly = 1; break;
        default: strerr_dieusage(100, USAGE);
      }
    }
  }
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) strerr_diefu1sys(111, "ignore SIGPIPE");
  notify_login();
  if (!imapio_init(0, 1, timeout)) strerr_diefu1sys(111, "set up the session fds");
  imapio_onrest(&rest);
  x = getenv("IMAP_INPUT");
  if (x && *x) preload(x);
  sess.tag = getenv("IMAP_TAG");
  x = getenv("HOME");
  if (!x || x[0] != '/') {
    if (sess.tag) imap_no("[SERVERBUG] No mailbox");
    else out("* BYE [SERVERBUG] No mailbox\r\n");
    imapio_flush();
    strerr_dief1x(100, "HOME must be the absolute path of the Maildir");
  }
  if (chdir(x) < 0) {
    if (sess.tag) imap_no("[SERVERBUG] Mailbox unavailable");
    else out("* BYE [SERVERBUG] Mailbox unavailable\r\n");
    imapio_flush();
    strerr_diefu2sys(111, "chdir to ", x);
  }
  if (maildir_make(".", 0700) < 0) strerr_diefu2sys(111, "make the Maildir ", x);
  if (maildir_tmp_clean(".", MAILDIR_TMP_MAXAGE) < 0) strerr_warnwu1sys("clean tmp/");
  {
    /* first login: the special folders (an account made by mail-user has them already) */
    struct stat st;
    if (stat("subscriptions", &st) < 0 && errno == ENOENT && mailstore_default_folders() < 0)
      strerr_warnwu1sys("create the default folders");
  }
  if (sess.tag) {
    out(sess.tag);
    out(" OK [CAPABILITY ");
    caps();
    out("] Logged in\r\n");
  } else {
    out("* PREAUTH [CAPABILITY ");
    caps();
    out("] Logged in\r\n");
  }
  spool.spool_open = &imap_spool_open;
  spool.ctx = 0;
  spool.max_literal = appendmax;
  for (;;) {
    int r;
    r = imapio_readcmd(&cmdbuf, &cmd, &spool);
    switch (r) {
      case 1: break;
      case IMAPIO_EOF: _exit(0);
      case IMAPIO_TIMEOUT: bye("Disconnected for inactivity.", 0);
      case IMAPIO_TOOLONG:
        sess.tag = tag_of(cmdbuf.s, cmdbuf.len);
        imap_bad("Error in IMAP command: Too long argument.");
        imap_spool_reset(&spool, &cmd);
        continue;
      case IMAPIO_TOOBIG:
        sess.tag = tag_of(cmdbuf.s, cmdbuf.len);
        imap_no("[TOOBIG] Literal too big");
        imap_spool_reset(&spool, &cmd);
        continue;
      case IMAPIO_BADLIT:
        sess.tag = tag_of(cmdbuf.s, cmdbuf.len);
        imap_bad("Error in IMAP command: Invalid literal");
        imap_spool_reset(&spool, &cmd);
        continue;
      case IMAPIO_FATAL:
        imap_spool_reset(&spool, &cmd);
        bye("[TOOBIG] Literal too big", 0);
      default: strerr_diefu1sys(111, "read a command"); /* a corrupt COMPRESS stream too */
    }
    r = imap_parse(cmdbuf.s, cmdbuf.len, &cmd);
    if (r == IMAP_ENOTAG) {
      sess.tag = "*";
      imap_bad("Error in IMAP command received by server.");
      imap_spool_reset(&spool, &cmd);
      continue;
    }
    memcpy(tagbuf, cmd.tag, cmd.taglen);
    tagbuf[cmd.taglen] = 0;
    sess.tag = tagbuf;
    if (r != IMAP_OK) {
      imap_bad(r == IMAP_EDEPTH ? "Error in IMAP command: Too deep nesting"
               : r == IMAP_ETOOMANY ? "Error in IMAP command: Too many arguments"
                                    : "Error in IMAP command: Invalid arguments.");
    } else
      dispatch();
    imap_spool_reset(&spool, &cmd);
  }
}
