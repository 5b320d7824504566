/* connlimit: a cap on the connections one client address holds at once, across processes.
 *
 * tcpserver caps connections in total (-c), not per address, so one address could hold every
 * slot. Each connection takes a slot: an exclusive, non-blocking flock on the file
 * DIR/KEY.N for some N < max (KEY from lib/ipkey: IPv6 by prefix). The kernel drops the lock
 * when the process exits, whatever way it exits, so a slot is never leaked. A slot file is
 * unlinked by its holder on release (connlimit_release) and a taker checks that the file it
 * locked is still the one named, so files do not pile up and no slot is ever held twice.
 *
 * DIR is MAILROOT/run/slots/SERVICE (smtpd for smtp-receive, pop3 for pop3-serve, login for
 * imap-serve), made by mail-instance with the service user as owner; it is created here
 * (mode 0700) when missing and its parent is writable.
 */
#ifndef PILLARBOX_CONNLIMIT_H
#define PILLARBOX_CONNLIMIT_H

typedef struct connlimit_s connlimit;
struct connlimit_s {
  int fd;          /* the locked slot file, -1 if none */
  char path[512];  /* its name, to unlink on release */
};
#define CONNLIMIT_ZERO {-1, {0}}

/* Takes a slot for ip under MAILROOT/run/slots/service, at most max per key (v6bits: IPv6
 * prefix length, 0 for the default). Returns 1 (slot held in c), 0 (all max slots are held:
 * refuse the connection), -1 on error (errno set; the caller logs and carries on without a
 * cap). The lock fd is close-on-exec unless keep_on_exec. */
int connlimit_take(connlimit *c, char const *service, char const *ip, unsigned int max,
                   unsigned int v6bits, int keep_on_exec);

/* Releases the slot (unlink, then close). Exiting releases it too (the file stays). */
void connlimit_release(connlimit *c);

/* The slot is held by another process now (a child that got a copy of the fd, and removes
 * the file when it is done): closes this process's copy, unlinks nothing. */
void connlimit_pass(connlimit *c);

#endif
