/* tlsserver: the server side of TLS on BearSSL, for tls-serve and tls-engine (lib/tlsengine).
 *
 * Policy: TLS 1.2 only; ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only (no CBC, no
 * RSA key exchange, no static ECDH); the server's order of preference; no renegotiation.
 * RSA and EC (P-256, P-384, P-521) keys, PEM (PKCS#1, SEC 1 or PKCS#8 keys).
 *
 * Every keypair is read by tlsserver_load, when tls-serve starts (as root, before the TLS
 * engine drops root and before a byte is read from the client), and again by tls-engine when
 * tlsserver_changed says so; either way a certificate replaced by an atomic rename is used by
 * the next connection. The keypair is chosen by the SNI name:
 *   1. $CERTFILE:NAME and $KEYFILE:NAME (s6-networking's convention), if both are set;
 *   2. DIR/NAME/cert.pem and DIR/NAME/key.pem, if DIR/NAME/cert.pem exists
 *      (DIR is MAILROOT/tls, NAME a plain host name in lower case);
 *   3. the default pair: $TLS_CERTFILE / $TLS_KEYFILE, else $CERTFILE / $KEYFILE, else
 *      MAILROOT/tls/cert.pem and MAILROOT/tls/key.pem.
 * A key that does not belong to its certificate (the public key computed from the private key
 * differs from the certificate's) is refused at load: for the default pair tlsserver_load
 * fails and says so; an SNI pair that fails is left out, and a client asking for that name
 * gets the default pair (the reason is logged then). At most TLSSERVER_PAIRS_MAX pairs.
 * A name that is not a plain host name (bytes other than a-z 0-9 - . _, empty labels, over 253
 * octets) never touches the file system: it gets the default pair and is not exported.
 */
#ifndef PILLARBOX_TLSSERVER_H
#define PILLARBOX_TLSSERVER_H

#include <stddef.h>
#include <bearssl.h>
#include <skalibs/tai.h>

#define TLSSERVER_CERT_MAX 65536  /* octets in a certificate chain file */
#define TLSSERVER_KEY_MAX 16384   /* octets in a key file */
#define TLSSERVER_STAMP ".pair-checked" /* next to a pair in MAILROOT/tls: it was found good */
#define TLSSERVER_CHAIN_MAX 8     /* certificates in a chain */
#define TLSSERVER_FACTS_MAX 1024  /* octets of the SSL_* facts list */
#define TLSSERVER_PAIRS_MAX 33    /* keypairs: the default and 32 SNI names */

/* Loads every keypair (see above). Returns 1, or 0 if the default pair is unusable, with
 * tlsserver_error() saying why ("KEY does not match the certificate in CERT", ...). */
int tlsserver_load(void);

/* 1 if a file tlsserver_load read (or found missing) has been replaced, changed or created
 * since, or a name was added to MAILROOT/tls: a long-running server calls tlsserver_load again
 * (the stat of a few files; no file is read). */
int tlsserver_changed(void);

/* The i-th loaded pair (0 is the default, name ""): 1 with *name and *err (0 if usable, else
 * why not), 0 past the last one. */
unsigned int tlsserver_pairs(char const **name, char const **err, unsigned int i);

/* Sets up cc for one server connection with the policy above, using iobuf: full duplex when
 * iobuflen is over BR_SSL_BUFSIZE_MONO (the input part gets BR_SSL_BUFSIZE_INPUT first, the
 * rest bounds the size of outgoing records), else half duplex. Returns 1, or 0 with
 * tlsserver_error() telling why. */
int tlsserver_init(br_ssl_server_context *cc, unsigned char *iobuf, size_t iobuflen);

/* Zeroes every private key and certificate (done by tlsserver_run once the handshake is over). */
void tlsserver_wipe(void);

/* A one-line reason for the last failure (loading files, or the engine's error code). */
char const *tlsserver_error(void);

/* The OpenSSL-style name of a cipher suite ("ECDHE-ECDSA-AES128-GCM-SHA256"), or NULL. */
char const *tlsserver_suite_name(unsigned int suite);

/* The server name the client asked for, if it is a valid host name (lower case), else NULL. */
char const *tlsserver_sni(br_ssl_server_context const *cc);

/* Writes the facts of the finished handshake into out as s6-networking does: NUL-terminated
 * "SSL_PROTOCOL=...", "SSL_CIPHER=...", "SSL_TLS_SNI_SERVERNAME[=...]", then one more NUL.
 * Returns the length, or 0 if it does not fit in max. */
size_t tlsserver_facts(br_ssl_server_context const *cc, char *out, size_t max);

/* Relays between the network (netr/netw, TLS records) and the application (appr: plaintext
 * to send, appw: plaintext received; -1 if not yet known) until either side is done.
 * hsdeadline bounds the handshake. Once the handshake completes, onhs(cc, arg) is called; it
 * returns 1 to carry on, or 0 to stop. The fds are made non-blocking.
 * Returns 0 on a clean end, 1 if the handshake failed or timed out (tlsserver_error() says
 * which), 2 on a system error after the handshake (errno). */
int tlsserver_run(br_ssl_server_context *cc, int netr, int netw, int appr, int appw,
                  tain const *hsdeadline, int (*onhs)(br_ssl_server_context *, void *),
                  void *arg);

#endif
