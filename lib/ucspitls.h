/* ucspitls: the protocol program's side of UCSPI-TLS (STARTTLS through a TLS sidecar).
 *
 * The sidecar (tls-serve -S, or s6-networking's s6-ucspitlsd) starts the program with
 *   SSLCTLFD   a socket: write one command byte here to start TLS,
 *   SSLREADFD  a pipe: after TLS has started, the decrypted bytes from the peer come from here,
 *   SSLWRITEFD a pipe: after TLS has started, bytes written here go to the peer encrypted.
 * Until then the program talks plaintext on fd 0/1 as usual. The command 'Y' asks for TLS and
 * for the TLS facts: once the handshake is done, the sidecar writes them on SSLCTLFD as
 * NUL-terminated "NAME=VALUE" (or "NAME" for an unset one) strings, ends the list with an extra
 * NUL and closes the socket. EOF before the list is complete means the handshake failed (the
 * connection is then unusable: the program should exit). This is s6-networking's protocol
 * byte for byte, so programs using it run under s6-tlsserver as well as under tls-serve.
 *
 * Facts: SSL_PROTOCOL ("TLSv1.2"), SSL_CIPHER (e.g. "ECDHE-ECDSA-AES128-GCM-SHA256"),
 * SSL_TLS_SNI_SERVERNAME (the name the client asked for, unset if none). ucspitls_start puts
 * them into the environment (setenv / unsetenv; only names starting with "SSL_").
 *
 * The engine service instead (tls-engine, lib/tlsengine): with TLS_ENGINE set to the path of
 * its socket (and no SSLCTLFD), the program runs alone on the plaintext connection, fd 0/1 the
 * network, and no TLS process exists until the client asks for TLS. Then ucspitls_ready
 * connects to the socket (within UCSPITLS_CONNECT_TIMEOUT seconds) and ucspitls_start hands
 * the network fds 0 and 1 over with the engine's end of a new socketpair (lib/fdpass), reads
 * the facts back in the same format as above, and puts the plaintext socket on fds 0 and 1:
 * the program keeps no copy of the network connection, so what it writes can only go through
 * the engine, and the connection ends when the engine does.
 *
 * The caller must throw away any plaintext it had buffered before calling ucspitls_start
 * (RFC 3207 4.2, the STARTTLS injection attack).
 */
#ifndef PILLARBOX_UCSPITLS_H
#define PILLARBOX_UCSPITLS_H

#include <skalibs/stralloc.h>

#define UCSPITLS_INFO_MAX 4096    /* octets of TLS facts accepted from the sidecar */
#define UCSPITLS_TIMEOUT 120      /* seconds to wait for the handshake's outcome */
#define UCSPITLS_CONNECT_TIMEOUT 5 /* seconds to reach the engine service */
#define UCSPITLS_ENGINE 65536     /* ucspitls_setup's handle for the engine service */

/* 1 if SSLCTLFD, SSLREADFD and SSLWRITEFD are set to fd numbers, or TLS_ENGINE to a path
 * (STARTTLS can be offered), else 0. */
int ucspitls_available(void);

/* For a program that offers STARTTLS: marks the three fds close-on-exec (no child inherits
 * the sidecar) and returns SSLCTLFD's number; UCSPITLS_ENGINE with the engine service; -1
 * when STARTTLS is not available. */
int ucspitls_setup(void);

/* The TLS facts in the environment (SSL_PROTOCOL, SSL_CIPHER) copied into *proto and
 * *cipher, NUL-terminated (empty strings when not in TLS). 1 in TLS, 0 not, -1 out of memory. */
int ucspitls_facts(stralloc *proto, stralloc *cipher);

/* Can STARTTLS go ahead (to be asked before the program says yes to its client)? h is what
 * ucspitls_setup returned. The sidecar: is it still there on SSLCTLFD (a closed control socket
 * reads as EOF at once, so any readiness or a bad fd means it went away)? The engine service:
 * connects to it, bounded in time (the connection is kept for ucspitls_start). 1 yes, 0 no
 * (the program answers its client with a temporary refusal). */
int ucspitls_ready(int h);

/* Asks the sidecar to start TLS ('Y'), or hands the connection to the engine service,
 * waits (at most UCSPITLS_TIMEOUT seconds) for the handshake's outcome, sets the SSL_*
 * environment variables and closes SSLCTLFD (the engine's connection). On success returns 1
 * with *rfd and *wfd set to the fds to use from now on (with the engine service, one socket,
 * also moved onto fds 0 and 1). Returns 0 on failure with
 * errno set (EPROTO: the handshake failed or the sidecar went away; ETIMEDOUT; EINVAL: not
 * available); the connection is then unusable. */
int ucspitls_start(int *rfd, int *wfd);

/* Implicit TLS through the engine service (ports 465, 993, 995 run as tcpserver -> program,
 * no TLS program exec'd and no key read per connection): with TLS_IMPLICIT=1, hands the
 * connection to the engine service (TLS_ENGINE) before the program has written or read a
 * byte, as ucspitls_start does for STARTTLS, and unsets TLS_IMPLICIT and TLS_ENGINE (no
 * STARTTLS inside TLS). Returns 1 in TLS (fds 0 and 1 the plaintext socket, SSL_* set), 0 when
 * not asked (TLS_IMPLICIT unset, or already in TLS: SSL_PROTOCOL set by tls-serve), -1 on
 * failure with errno (EINVAL: TLS_IMPLICIT without TLS_ENGINE; the engine unreachable or the
 * handshake failed): the program must then end the session without writing to the client
 * (fails closed: never plaintext on a TLS port): it exits, or, a tcp-pool worker, closes the
 * connection (tcppool_done) and takes the next one. */
int ucspitls_implicit(void);

/* ucspitls_implicit for a server's session, failure handled as above: 1 the session goes on
 * (in TLS, or TLS not asked). On failure (a client gone before its handshake, a port scanner,
 * the engine down) not a byte has been written: a program serving one connection (pooled 0)
 * exits 111; a tcp-pool worker gets 0 after a warning, and ends that session only. */
int ucspitls_implicit_session(int pooled);

/* ucspitls_start, then moves the TLS fds onto 0 and 1, so that code reading fd 0 and writing
 * fd 1 carries on unchanged (its buffers must be emptied first). Returns 1, or 0 as above. */
int ucspitls_start_stdio(void);

/* Closes a connection to the engine service that ucspitls_ready made and no ucspitls_start
 * used (the session ended in between): for the next session of a pool worker. */
void ucspitls_reset(void);

#endif
