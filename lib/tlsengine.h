/* tlsengine: the TLS engine's process, for tls-serve (one engine per connection, forked by the
 * sidecar) and for tls-engine (the STARTTLS engine service: one long-running root process that
 * forks an engine for each connection handed over by a protocol program).
 *
 * tlsengine_relay: the engine proper. Runs the handshake on the network fds (bounded by the
 * handshake timeout), writes the TLS facts (tlsserver_facts' format, what UCSPI-TLS's 'Y'
 * asks for) on notif and closes it, then relays plaintext between the network and the
 * application's fds until either side ends. A failed handshake is logged with the peer's
 * address (TCPREMOTEIP) and the process exits 1 without writing the facts (so notif reads EOF:
 * the program knows the handshake failed).
 *
 * tlsengine_serve: the service. Keypairs are loaded by the caller (tlsserver_load, as root).
 * It listens on the UNIX socket path (who may reach it is decided by its directory, made by
 * mail-instance: group pb-tlsc, mode 0750), and for each connection:
 *   - the peer's uid (SO_PEERCRED) must be in the allowed list (when one is given), else the
 *     connection is closed at once and logged;
 *   - if a loaded certificate or key file was replaced (tlsserver_changed), every keypair is
 *     loaded again first, so a certificate replaced by an atomic rename is used by the next
 *     connection;
 *   - the connection goes to an engine that drops to the engine's uid and gid (TLS_UID/TLS_GID,
 *     given to tlsengine_serve) BEFORE it reads anything, then receives the handover (below)
 *     within TLSENGINE_HANDOVER_TIMEOUT seconds and runs tlsengine_relay.
 * The engine is a spare when one waits: with cfg->spares > 0 the service keeps that many
 * engines forked in advance (spawn_call), each already under the engine's ids, named
 * "tls-engine-idle" (comm) and blocked on a socketpair with the service; a connection is sent
 * to one over it (lib/fdpass), the spare renames itself "tls-engine" and goes on as above, and
 * a replacement is forked when the service has nothing else to do (no fork on a handshake's
 * path). A spare serves one connection and exits with it: one client's keys and plaintext are
 * never in a process that another client's bytes reach (doc/security.md). When no spare waits
 * (spares 0, a burst), the service forks the engine for the connection itself. After a key
 * reload every spare is let go (EOF on its socket: it exits) and new ones are forked with the
 * new keys. A spare that dies is replaced; the spares exit when the service does.
 * The service process itself never reads a byte from a connection: a slow or hostile peer
 * costs only its own engine. At most maxconn engines at once, spares included; over the limit,
 * connections wait in the listen queue (the program's wait for the handshake's outcome is
 * bounded).
 *
 * The handover (the protocol program's side is lib/ucspitls; lib/fdpass carries it): one
 * message of exactly one octet, 'Y', carrying three descriptors in SCM_RIGHTS: the network's
 * read side (the program's fd 0), the network's write side (its fd 1), and the engine's end of
 * a socketpair whose other end the program keeps for plaintext. Then the facts come back on
 * the connection, which the engine closes; then the engine relays between the network and the
 * socketpair.
 */
#ifndef PILLARBOX_TLSENGINE_H
#define PILLARBOX_TLSENGINE_H

#include <sys/types.h>

#define TLSENGINE_HANDOVER_TIMEOUT 10 /* seconds for the program to send the descriptors */
#define TLSENGINE_ALLOW_MAX 16        /* uids in the allowed list */
#define TLSENGINE_SPARES_MAX 64       /* engines waiting in advance */

/* The engine: never returns (exits 0 at a clean end, 1 after a failed handshake, 111 on a
 * system error). hsms: milliseconds for the handshake (0: no limit). notif: where the facts
 * go, or -1 for none. */
void tlsengine_relay(int netr, int netw, int appr, int appw, int notif, unsigned int hsms)
  __attribute__((noreturn));

typedef struct tlsengine_cfg_s {
  char const *path;     /* the socket */
  unsigned int maxconn; /* engines at once (spares included) */
  unsigned int spares;  /* engines forked in advance (at most TLSENGINE_SPARES_MAX) */
  unsigned int hsms;    /* handshake timeout, milliseconds */
  int drop;             /* 1: children take uid/gid below */
  uid_t uid;
  gid_t gid;
  uid_t allow[TLSENGINE_ALLOW_MAX]; /* peers allowed (besides root and our own uid) */
  unsigned int nallow;              /* 0: any peer that can reach the socket */
  int notif;            /* fd for the readiness newline, or -1 */
} tlsengine_cfg;

/* Runs the service until SIGTERM (then removes the socket and returns 0; the engines already
 * running carry on). Dies (strerr) when it cannot listen. */
int tlsengine_serve(tlsengine_cfg const *cfg);

#endif
