/* tlsclient: see tlsclient.h */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <skalibs/djbunix.h>
#include <skalibs/stralloc.h>
#include <skalibs/tai.h>

#include "timedio.h"
#include "tlsclient.h"

#define CA_FILE_DEFAULT "/etc/ssl/certs/ca-certificates.crt"
#define CA_FILE_MAX (16U << 20)
#define ANCHORS_MAX 4096

static br_x509_trust_anchor *anchors;
static size_t nanchors;
static int anchors_loaded;

/* ---- the accept-any X.509 engine: decodes the end-entity key, checks nothing else ---- */

static void any_start_chain(br_x509_class const **ctx, char const *server_name)
{
  tlsclient_anyx509 *a = (tlsclient_anyx509 *)(void *)ctx;
  (void)server_name;
  a->depth = 0;
  a->ok = 0;
}

static void any_start_cert(br_x509_class const **ctx, uint32_t length)
{
  tlsclient_anyx509 *a = (tlsclient_anyx509 *)(void *)ctx;
  (void)length;
  if (!a->depth) br_x509_decoder_init(&a->dc, 0, 0);
}

static void any_append(br_x509_class const **ctx, unsigned char const *buf, size_t len)
{
  tlsclient_anyx509 *a = (tlsclient_anyx509 *)(void *)ctx;
  if (!a->depth) br_x509_decoder_push(&a->dc, buf, len);
}

static void any_end_cert(br_x509_class const **ctx)
{
  tlsclient_anyx509 *a = (tlsclient_anyx509 *)(void *)ctx;
  if (!a->depth) {
    br_x509_pkey *pk = br_x509_decoder_get_pkey(&a->dc);
    if (pk) {
      a->pkey = *pk; /* points into a->dc.pkey_data, which lives as long as a */
      a->ok = 1;
    }
  }
  a->depth++;
}

static unsigned any_end_chain(br_x509_class const **ctx)
{
  tlsclient_anyx509 *a = (tlsclient_anyx509 *)(void *)ctx;
  if (!a->ok) {
    int e = br_x509_decoder_last_error(&a->dc);
    return e ? (unsigned)e : BR_ERR_X509_EMPTY_CHAIN;
  }
  return 0;
}

static br_x509_pkey const *any_get_pkey(br_x509_class const *const *ctx, unsigned *usages)
{
  tlsclient_anyx509 const *a = (tlsclient_anyx509 const *)(void const *)ctx;
  if (usages) *usages = BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN;
  return a->ok ? &a->pkey : 0;
}

static br_x509_class const any_vtable = {
  sizeof(tlsclient_anyx509), any_start_chain, any_start_cert, any_append, any_end_cert,
  any_end_chain, any_get_pkey
};

/* ---- trust anchors from a PEM bundle ---- */

static int append_oom;

static void append_sa(void *ctx, void const *buf, size_t len)
{
  stralloc *sa = ctx;
  if (!stralloc_catb(sa, buf, len)) append_oom = 1;
}

static void *memdup(void const *p, size_t n)
{
  void *q = malloc(n ? n : 1);
  if (q && n) memcpy(q, p, n);
  return q;
}

/* Adds one DER certificate as an anchor. 1 added, 0 skipped, -1 out of memory. */
static int add_anchor(unsigned char const *der, size_t len)
{
  br_x509_decoder_context dc;
  stralloc dn = STRALLOC_ZERO;
  br_x509_pkey *pk;
  br_x509_trust_anchor *ta;
  if (nanchors >= ANCHORS_MAX) return 0;
  br_x509_decoder_init(&dc, &append_sa, &dn);
  br_x509_decoder_push(&dc, der, len);
  pk = br_x509_decoder_get_pkey(&dc);
  if (append_oom) goto nomem;
  if (!pk || dn.len > 65536) {
    stralloc_free(&dn);
    return 0;
  }
  if (!(nanchors & 63)) {
    br_x509_trust_anchor *n = realloc(anchors, (nanchors + 64) * sizeof *anchors);
    if (!n) goto nomem;
    anchors = n;
  }
  ta = &anchors[nanchors];
  memset(ta, 0, sizeof *ta);
  ta->dn.data = memdup(dn.s, dn.len);
  ta->dn.len = dn.len;
  ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
  ta->pkey.key_type = pk->key_type;
  if (pk->key_type == BR_KEYTYPE_RSA) {
    ta->pkey.key.rsa.n = memdup(pk->key.rsa.n, pk->key.rsa.nlen);
    ta->pkey.key.rsa.nlen = pk->key.rsa.nlen;
    ta->pkey.key.rsa.e = memdup(pk->key.rsa.e, pk->key.rsa.elen);
    ta->pkey.key.rsa.elen = pk->key.rsa.elen;
    if (!ta->pkey.key.rsa.n || !ta->pkey.key.rsa.e) goto nomem;
  } else if (pk->key_type == BR_KEYTYPE_EC) {
    ta->pkey.key.ec.curve = pk->key.ec.curve;
    ta->pkey.key.ec.q = memdup(pk->key.ec.q, pk->key.ec.qlen);
    ta->pkey.key.ec.qlen = pk->key.ec.qlen;
    if (!ta->pkey.key.ec.q) goto nomem;
  } else {
    stralloc_free(&dn);
    return 0;
  }
  if (!ta->dn.data) goto nomem;
  nanchors++;
  stralloc_free(&dn);
  return 1;
nomem:
  stralloc_free(&dn);
  return -1;
}

int tlsclient_load_anchors(char *err, size_t errlen)
{
  char const *file = getenv("PILLARBOX_CA_FILE");
  stralloc sa = STRALLOC_ZERO, der = STRALLOC_ZERO;
  br_pem_decoder_context pc;
  size_t i = 0;
  int inobj = 0;
  if (anchors_loaded) return (int)nanchors;
  if (!file || !*file) file = CA_FILE_DEFAULT;
  if (!openslurpclose(&sa, file)) {
    snprintf(err, errlen, "unable to read CA bundle %s: %s", file, strerror(errno));
    return -1;
  }
  if (sa.len > CA_FILE_MAX) {
    snprintf(err, errlen, "CA bundle %s is too big", file);
    stralloc_free(&sa);
    return -1;
  }
  br_pem_decoder_init(&pc);
  while (i < sa.len) {
    i += br_pem_decoder_push(&pc, sa.s + i, sa.len - i);
    switch (br_pem_decoder_event(&pc)) {
      case BR_PEM_BEGIN_OBJ:
        inobj = !strcmp(br_pem_decoder_name(&pc), "CERTIFICATE") ||
                !strcmp(br_pem_decoder_name(&pc), "X509 CERTIFICATE");
        der.len = 0;
        br_pem_decoder_setdest(&pc, inobj ? &append_sa : 0, inobj ? &der : 0);
        break;
      case BR_PEM_END_OBJ:
        if (inobj && (append_oom || add_anchor((unsigned char *)der.s, der.len) < 0)) {
          snprintf(err, errlen, "out of memory loading %s", file);
          stralloc_free(&sa);
          stralloc_free(&der);
          return -1;
        }
        inobj = 0;
        break;
      case BR_PEM_ERROR:
        snprintf(err, errlen, "CA bundle %s is not valid PEM", file);
        stralloc_free(&sa);
        stralloc_free(&der);
        return -1;
      default: break;
    }
  }
  stralloc_free(&sa);
  stralloc_free(&der);
  if (!nanchors) {
    snprintf(err, errlen, "no usable certificate in CA bundle %s", file);
    return -1;
  }
  anchors_loaded = 1;
  return (int)nanchors;
}

/* ---- socket I/O bounded by the deadline ---- */

static int low_read(void *ctx, unsigned char *buf, size_t len)
{
  tlsclient *t = ctx;
  ssize_t r = timedio_fdread(t->fd, (char *)buf, len, &t->deadline);
  if (r > 0) return (int)r;
  if (!r) errno = EPIPE;
  else if (errno == ETIMEDOUT) t->timedout = 1;
  return -1;
}

static int low_write(void *ctx, unsigned char const *buf, size_t len)
{
  tlsclient *t = ctx;
  for (;;) { /* BearSSL wants a partial count: one write, waiting only while none is possible */
    ssize_t r = write(t->fd, buf, len);
    if (r > 0) return (int)r;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (timedio_wait(t->fd, 1, &t->deadline) < 0) {
      if (errno == ETIMEDOUT) t->timedout = 1;
      return -1;
    }
  }
}

void tlsclient_deadline(tlsclient *t, tain const *deadline)
{
  t->deadline = *deadline;
}

static void set_err(tlsclient *t, char const *what)
{
  int e = br_ssl_engine_last_error(&t->cc.eng);
  if (t->timedout) snprintf(t->err, sizeof t->err, "%s: timed out", what);
  else if (e >= 32 && e < 64)
    snprintf(t->err, sizeof t->err, "%s: certificate rejected (BearSSL X.509 error %d%s)", what, e,
             e == BR_ERR_X509_NOT_TRUSTED ? ": not trusted"
             : e == BR_ERR_X509_BAD_SERVER_NAME ? ": wrong host name"
             : e == BR_ERR_X509_EXPIRED ? ": expired" : "");
  else if (e) snprintf(t->err, sizeof t->err, "%s: TLS error %d", what, e);
  else snprintf(t->err, sizeof t->err, "%s: %s", what, strerror(errno));
}

int tlsclient_start(tlsclient *t, int fd, char const *servername, int mode)
{
  t->fd = fd;
  t->timedout = 0;
  t->err[0] = 0;
  if (mode == TLSCLIENT_VERIFY) {
    if (tlsclient_load_anchors(t->err, sizeof t->err) < 0) return 0;
    br_ssl_client_init_full(&t->cc, &t->xc, anchors, nanchors);
  } else {
    br_ssl_client_init_full(&t->cc, &t->xc, 0, 0);
    t->any.vtable = &any_vtable;
    br_ssl_engine_set_x509(&t->cc.eng, &t->any.vtable);
  }
  br_ssl_engine_set_buffer(&t->cc.eng, t->buf, sizeof t->buf, 1);
  if (!br_ssl_client_reset(&t->cc, servername, 0)) {
    set_err(t, "TLS setup failed");
    return 0;
  }
  br_sslio_init(&t->io, &t->cc.eng, &low_read, t, &low_write, t);
  if (br_sslio_flush(&t->io) < 0) {
    set_err(t, "TLS handshake failed");
    return 0;
  }
  return 1;
}

ssize_t tlsclient_read(tlsclient *t, char *buf, size_t len)
{
  int r = br_sslio_read(&t->io, buf, len);
  if (r < 0) {
    set_err(t, "TLS read failed");
    if (t->timedout) errno = ETIMEDOUT;
    return -1;
  }
  return r;
}

int tlsclient_write(tlsclient *t, char const *buf, size_t len)
{
  if (br_sslio_write_all(&t->io, buf, len) < 0 || br_sslio_flush(&t->io) < 0) {
    set_err(t, "TLS write failed");
    if (t->timedout) errno = ETIMEDOUT;
    return 0;
  }
  return 1;
}

void tlsclient_close(tlsclient *t)
{
  br_sslio_close(&t->io);
}

char const *tlsclient_describe(tlsclient *t, char *buf, size_t len)
{
  br_ssl_session_parameters sp;
  unsigned v;
  br_ssl_engine_get_session_parameters(&t->cc.eng, &sp);
  v = sp.version;
  snprintf(buf, len, "%s cipher 0x%04x",
           v == BR_TLS12   ? "TLSv1.2"
           : v == BR_TLS11 ? "TLSv1.1"
           : v == BR_TLS10 ? "TLSv1.0"
                           : "TLS",
           (unsigned)sp.cipher_suite);
  return buf;
}
