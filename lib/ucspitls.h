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
 * The caller must throw away any plaintext it had buffered before calling ucspitls_start
 * (RFC 3207 4.2, the STARTTLS injection attack).
 */
#ifndef PILLARBOX_UCSPITLS_H
#define PILLARBOX_UCSPITLS_H

#include <skalibs/stralloc.h>

#define UCSPITLS_INFO_MAX 4096    /* octets of TLS facts accepted from the sidecar */
#define UCSPITLS_TIMEOUT 120      /* seconds to wait for the handshake's outcome */

/* 1 if SSLCTLFD, SSLREADFD and SSLWRITEFD are set to fd numbers (STARTTLS can be offered),
 * else 0. */
int ucspitls_available(void);

/* For a program that offers STARTTLS: marks the three fds close-on-exec (no child inherits
 * the sidecar) and returns SSLCTLFD's number, or -1 when STARTTLS is not available. */
int ucspitls_setup(void);

/* The TLS facts in the environment (SSL_PROTOCOL, SSL_CIPHER) copied into *proto and
 * *cipher, NUL-terminated (empty strings when not in TLS). 1 in TLS, 0 not, -1 out of memory. */
int ucspitls_facts(stralloc *proto, stralloc *cipher);

/* Is the sidecar still there on ctlfd? A closed control socket reads as EOF at once, so any
 * readiness (or a bad fd) means it went away: 1 alive, 0 gone. */
int ucspitls_alive(int ctlfd);

/* Asks the sidecar to start TLS ('Y'), waits (at most UCSPITLS_TIMEOUT seconds) for the
 * handshake's outcome, sets the SSL_* environment variables and closes SSLCTLFD. On success
 * returns 1 with *rfd and *wfd set to the fds to use from now on. Returns 0 on failure with
 * errno set (EPROTO: the handshake failed or the sidecar went away; ETIMEDOUT; EINVAL: not
 * available); the connection is then unusable. */
int ucspitls_start(int *rfd, int *wfd);

/* ucspitls_start, then moves the TLS fds onto 0 and 1, so that code reading fd 0 and writing
 * fd 1 carries on unchanged (its buffers must be emptied first). Returns 1, or 0 as above. */
int ucspitls_start_stdio(void);

#endif
