/* smtpconf: the settings of an SMTP server session (smtp-receive): what control/ says and
 * what the session's environment says, read up front as the program skeleton wants them.
 *
 * control/: me, domains, defaultdomain (the local service only), databytes, hop-limit,
 * ipv6-prefix and the smtp-* limits (doc/smtp-receive.8, FILES), with their defaults and
 * bounds; a file that holds junk ends the process with 100, one that cannot be read with 111.
 * A pool worker (lib/tcppool) keeps what it parsed from one session to the next and reads
 * the files again only when they may have changed (lib/control's stamps: an edit in place, a
 * file replaced by rename, created or removed), so a change still applies at the next
 * session. The environment (UCSPI and policy variables: TCPREMOTEIP, RELAYCLIENT, SMTPAUTH,
 * SMTP_SERVICE, ...) is read afresh for every session: tcppool rebuilds it per connection.
 */
#ifndef PILLARBOX_SMTPCONF_H
#define PILLARBOX_SMTPCONF_H

#include <skalibs/stralloc.h>

#include "control.h"

typedef struct smtpconf_s smtpconf;
struct smtpconf_s {
  /* control/: kept while unchanged */
  stralloc mesa;        /* control/me, NUL-terminated (empty: missing) */
  stralloc firstdomain; /* the first of control/domains, no NUL (RCPT TO:<postmaster>) */
  stralloc defdomain;   /* the default domain for bare names (the local service only) */
  unsigned long linemax, databytes, hoplimit, rcptmax, errmax, junkmax, timeout, sessionmax,
    authdelay, peermax, greetdelay;
  unsigned int v6prefix;  /* control/ipv6-prefix (lib/ipkey) */
  int defdomain_read;     /* defdomain was read with the rest */
  int loaded;             /* the fields above hold what the files said at the stamp */
  control_stamp stamp;
  /* the environment, per session; pointers into the environment or into mesa */
  char const *me;         /* control/me, else TCPLOCALHOST, else "localhost" */
  char const *remoteip;   /* TCPREMOTEIP, else "unknown" */
  char const *remotehost; /* TCPREMOTEHOST, else the SMTP_RDNS lookup (lib/smtpd), or 0 */
  char const *service;    /* SMTP_SERVICE, else submission / smtpd / local by the rules of
                           * smtp-receive(8), or 0 */
  int local;              /* service is "local" (sendmail -bs): bare names get defdomain */
  int relayclient;        /* RELAYCLIENT set */
  int authrequired;       /* SMTPAUTH: the submission policy */
  int plainok;            /* SMTPAUTH_PLAINTEXT and a loopback peer */
  int offer_auth;         /* AUTH may be offered (not on port 25 unless SMTP_OFFER_AUTH) */
};

/* Reads the settings of the session about to start into c (zeroed the first time). keep: c
 * is kept for the next session (a pool worker): control/ is read only when it may have
 * changed since the last call. Dies on a bad control file (exit 100) or a read error (111). */
void smtpconf_session(smtpconf *c, int keep);

#endif
