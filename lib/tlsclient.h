/* tlsclient: the client side of TLS (BearSSL), for smtp-send's STARTTLS.
 *
 * Two modes: TLSCLIENT_ANY (opportunistic: the handshake is done in full, the server's key is
 * taken from its certificate, but neither the chain nor the name is checked) and
 * TLSCLIENT_VERIFY (the chain must lead to an anchor of the CA bundle, $PILLARBOX_CA_FILE or
 * /etc/ssl/certs/ca-certificates.crt, and the certificate must name the server name given).
 * SNI is sent in both modes. I/O is over a non-blocking socket, every wait bounded by the
 * deadline set with tlsclient_deadline(). Errors are described in t->err.
 */
#ifndef PILLARBOX_TLSCLIENT_H
#define PILLARBOX_TLSCLIENT_H

#include <stddef.h>
#include <sys/types.h>
#include <bearssl.h>
#include <skalibs/tai.h>

#define TLSCLIENT_ANY 0
#define TLSCLIENT_VERIFY 1

typedef struct tlsclient_anyx509_s tlsclient_anyx509;
struct tlsclient_anyx509_s {
  br_x509_class const *vtable;
  br_x509_decoder_context dc;
  unsigned int depth;
  br_x509_pkey pkey;
  int ok;
};

typedef struct tlsclient_s tlsclient;
struct tlsclient_s {
  br_ssl_client_context cc;
  br_x509_minimal_context xc;
  tlsclient_anyx509 any;
  br_sslio_context io;
  unsigned char buf[BR_SSL_BUFSIZE_BIDI];
  int fd;
  tain deadline;
  int timedout;
  char err[256];
};

/* Sets the deadline for every following wait. */
void tlsclient_deadline(tlsclient *t, tain const *deadline);

/* Runs the handshake on fd as a client for servername (SNI; name checked in VERIFY mode).
 * Returns 1 when the session is up, 0 on failure (t->err says why). */
int tlsclient_start(tlsclient *t, int fd, char const *servername, int mode);

/* Reads at most len bytes of application data. Returns the count (> 0), or -1 on error,
 * timeout (errno ETIMEDOUT) or end of session. */
ssize_t tlsclient_read(tlsclient *t, char *buf, size_t len);

/* Writes all of buf and flushes. Returns 1, or 0 on error or timeout. */
int tlsclient_write(tlsclient *t, char const *buf, size_t len);

/* Sends close_notify (bounded by the deadline). */
void tlsclient_close(tlsclient *t);

/* "TLSv1.2 ECDHE_RSA_WITH_AES_128_GCM_SHA256"-style description of the session, or "". */
char const *tlsclient_describe(tlsclient *t, char *buf, size_t len);

/* Loads the trust anchors (once per process). Returns the number loaded, or -1 (t->err). */
int tlsclient_load_anchors(char *err, size_t errlen);

#endif
