/* smtpconf: see smtpconf.h */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>

#include "control.h"
#include "ipkey.h"
#include "queue.h"
#include "smtpconf.h"
#include "smtpd.h"

/* Every control file read below, for the stamp */
static char const *const files[] = {
  "me", "domains", "defaultdomain", "smtp-linemax", "databytes", "hop-limit", "smtp-rcptmax",
  "smtp-errmax", "smtp-junkmax", "smtp-timeout", "smtp-sessionmax", "smtp-authdelay",
  "smtp-peermax", "smtp-greetdelay", "ipv6-prefix",
};

static void read_control(smtpconf *c)
{
  int r = control_readline(&c->mesa, "me");
  if (r < 0) strerr_diefusys(111, "read control/me");
  if (r > 0 && !stralloc_0(&c->mesa)) strerr_diefusys(111, "allocate");
  if (control_readline(&c->firstdomain, "domains") < 0)
    strerr_diefusys(111, "read control/domains");
  c->linemax = control_uint_in("smtp-linemax", 2048, 512, 65536);
  /* the same default as queue-inject's, and 0 means that default there too */
  c->databytes = control_uint("databytes", QUEUE_DATABYTES);
  if (!c->databytes) c->databytes = QUEUE_DATABYTES;
  c->hoplimit = control_uint("hop-limit", 100);
  if (!c->hoplimit) c->hoplimit = 100;
  c->rcptmax = control_uint_in("smtp-rcptmax", 100, 1, ULONG_MAX);
  c->errmax = control_uint("smtp-errmax", 20);
  c->junkmax = control_uint("smtp-junkmax", 100);
  c->timeout = control_uint_in("smtp-timeout", 300, 1, 86400);
  c->sessionmax = control_uint("smtp-sessionmax", 3600);
  c->authdelay = control_uint("smtp-authdelay", 1);
  c->peermax = control_uint("smtp-peermax", 10);
  c->greetdelay = control_uint_in("smtp-greetdelay", 0, 0, 30000);
  if (!c->sessionmax || c->sessionmax > 86400 * 7) c->sessionmax = 86400 * 7;
  c->v6prefix = ipkey_v6prefix();
  c->defdomain.len = 0;
  c->defdomain_read = 0;
}

static int loopback(char const *ip)
{
  return !strncmp(ip, "127.", 4) || !strcmp(ip, "::1") || !strncmp(ip, "::ffff:127.", 11);
}

static void read_env(smtpconf *c)
{
  char const *x;
  c->me = c->mesa.len ? c->mesa.s : ((x = getenv("TCPLOCALHOST")) && *x) ? x : "localhost";
  x = getenv("TCPREMOTEIP");
  c->remoteip = x && *x ? x : "unknown";
  x = getenv("TCPREMOTEHOST");
  c->remotehost = x && *x ? x : smtpd_client_name(c->remoteip);
  c->relayclient = !!getenv("RELAYCLIENT");
  c->authrequired = !!getenv("SMTPAUTH");
  /* AUTH without TLS: only when explicitly allowed, and only for a loopback peer */
  c->plainok = getenv("SMTPAUTH_PLAINTEXT") && loopback(c->remoteip);
  /* Which service this is: port 25 (smtpd) offers AUTH only when configured */
  c->service = getenv("SMTP_SERVICE");
  if (c->service && !*c->service) c->service = 0;
  x = getenv("TCPLOCALPORT");
  if (!c->service && c->authrequired) c->service = "submission";
  if (!c->service && x && !strcmp(x, "25")) c->service = "smtpd";
  if (!c->service && (x = getenv("PROTO")) && !strcmp(x, "LOCAL")) c->service = "local";
  c->local = c->service && !strcmp(c->service, "local");
  c->offer_auth = c->authrequired || !c->service || strcmp(c->service, "smtpd") ||
                  getenv("SMTP_OFFER_AUTH");
}

void smtpconf_session(smtpconf *c, int keep)
{
  if (!keep || !c->loaded || !control_stamp_same(&c->stamp)) {
    c->loaded = 0;
    /* the stamp first: a change made while the files are read shows at the next session */
    if (keep && !control_stamp_take(&c->stamp, files, sizeof files / sizeof *files))
      strerr_warnwusys("stat control/ (reading it at every session)");
    read_control(c);
    c->loaded = keep && c->stamp.valid;
  }
  read_env(c);
  if (c->local && !c->defdomain_read) {
    if (control_defaultdomain(&c->defdomain) < 0)
      strerr_diefusys(111, "read control/defaultdomain, control/domains or control/me");
    c->defdomain_read = 1;
  }
}
