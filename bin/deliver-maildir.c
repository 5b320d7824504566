/* deliver-maildir: deliver one message (fd 0) into one Maildir, durably (lib/deliver).
 * With -W, queue-spawn's long-running worker: requests come on fd 0 (a socket), each with
 * its message and report pipe, so no process is started per delivery. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/allreadwrite.h>
#include <skalibs/sig.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/types.h>

#include "deliver.h"
#include "groupsync.h"
#include "maildir.h"

char const *PROG = "deliver-maildir";

static char const *env(char const *name, void *ctx)
{
  (void)ctx;
  return getenv(name);
}

int main(int argc, char const *const *argv)
{
  stralloc diag = STRALLOC_ZERO;
  deliver_job j;
  int code;
  if (argc >= 2 && !strcmp(argv[1], "-W")) {
    /* -W -g FD: queue-spawn's table of shared fsyncs of new/ (lib/groupsync) on FD */
    static groupsync g = GROUPSYNC_ZERO;
    unsigned int fd;
    size_t n = argc == 4 && !strcmp(argv[2], "-g") ? uint_scan(argv[3], &fd) : 0;
    if (n && !argv[3][n] && fd > 2) {
      if (groupsync_init(&g, (int)fd)) maildir_groupsync(&g);
      else strerr_warnwusys("map the table of shared fsyncs (each delivery fsyncs new/ itself)");
      close((int)fd);
    } else if (argc != 2) strerr_dieusage(100, "deliver-maildir -W [ -g fd ] | [ -q quota ] DIR");
    /* a closed report pipe must not kill a worker: the exit record still goes back */
    return sig_altignore(SIGPIPE) < 0 ? 111 : deliver_serve(0, (unsigned long)-1);
  }
  code = deliver_job_make(&j, argc, argv, &env, 0, &diag);
  if (!code) code = deliver_maildir(&j, &diag);
  if (diag.len && allwrite(2, diag.s, diag.len) != diag.len) code = code ? code : 0;
  return code;
}
