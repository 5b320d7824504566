/* tlsserver: see tlsserver.h */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bearssl.h>
#include <skalibs/djbunix.h>
#include <skalibs/iopause.h>
#include <skalibs/stralloc.h>
#include <skalibs/strerr.h>
#include <skalibs/tai.h>
#include <skalibs/types.h>

#include "control.h"
#include "tlsserver.h"

static uint16_t const suites[] = {
  BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
  BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
  BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
  BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
  BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
  BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
};

/* The keypairs, loaded once by tlsserver_load (as root, before anything is read from the
 * client): pairs[0] is the default, the others are SNI names. */
struct pair {
  char name[256];             /* "" for the default pair */
  stralloc chainbuf;
  size_t chainoff[TLSSERVER_CHAIN_MAX + 1];
  br_x509_certificate chain[TLSSERVER_CHAIN_MAX];
  size_t chainlen;
  br_skey_decoder_context skdc;
  char err[300];              /* SNI pair that failed to load: why (told when it is asked for) */
  int ok;
};
static struct pair pairs[TLSSERVER_PAIRS_MAX];
static unsigned int npairs;
static br_ssl_server_context *the_cc;
static char errbuf[512];
static char sniname[256];

char const *tlsserver_error(void)
{
  return errbuf;
}

static void seterr(char const *a, char const *b, char const *c)
{
  size_t n = 0, i;
  char const *parts[3] = {a, b, c};
  for (i = 0; i < 3; i++) {
    size_t l;
    if (!parts[i]) continue;
    l = strlen(parts[i]);
    if (l > sizeof errbuf - 1 - n) l = sizeof errbuf - 1 - n;
    memcpy(errbuf + n, parts[i], l);
    n += l;
  }
  errbuf[n] = 0;
}

/* What tlsserver_load looked at (files read, files missing, the tls/ directory), with the
 * identity it had then: tlsserver_changed compares. */
#define WATCH_MAX (3 * TLSSERVER_PAIRS_MAX + 1)
static struct watch {
  stralloc path;
  int exists;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtim, ctim;
} watch[WATCH_MAX];
static unsigned int nwatch;

static void watch_set(struct watch *w, struct stat const *st)
{
  w->exists = !!st;
  if (!st) return;
  w->dev = st->st_dev;
  w->ino = st->st_ino;
  w->size = st->st_size;
  w->mtim = st->st_mtim;
  w->ctim = st->st_ctim;
}

/* Remembers path as it is (st, or NULL: missing). Past WATCH_MAX, it is not watched. */
static void watch_add(char const *path, struct stat const *st)
{
  struct watch *w;
  if (nwatch >= WATCH_MAX) return;
  w = &watch[nwatch];
  if (!stralloc_copys(&w->path, path) || !stralloc_0(&w->path)) return;
  watch_set(w, st);
  nwatch++;
}

static void watch_path(char const *path)
{
  struct stat st;
  watch_add(path, stat(path, &st) == 0 ? &st : 0);
}

int tlsserver_changed(void)
{
  unsigned int i;
  for (i = 0; i < nwatch; i++) {
    struct stat st;
    struct watch now;
    int r = stat(watch[i].path.s, &st);
    if (r < 0 && errno != ENOENT && errno != ENOTDIR) return 1;
    watch_set(&now, r == 0 ? &st : 0);
    if (now.exists != watch[i].exists) return 1;
    if (now.exists && (now.dev != watch[i].dev || now.ino != watch[i].ino ||
                       now.size != watch[i].size || now.mtim.tv_sec != watch[i].mtim.tv_sec ||
                       now.mtim.tv_nsec != watch[i].mtim.tv_nsec ||
                       now.ctim.tv_sec != watch[i].ctim.tv_sec ||
                       now.ctim.tv_nsec != watch[i].ctim.tv_nsec))
      return 1;
  }
  return 0;
}

/* Reads a whole file of at most max octets into sa (replacing it). 1 ok, 0 error (errbuf). */
static int read_bounded(char const *path, size_t max, stralloc *sa)
{
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  sa->len = 0;
  if (fd < 0) {
    if (errno == ENOENT) watch_add(path, 0);
    seterr("unable to open ", path,
           errno == ENOENT ? ": no such file" : ": permission denied or I/O error");
    return 0;
  }
  if (fstat(fd, &st) < 0) st.st_mode = 0;
  else watch_add(path, &st);
  if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
    fd_close(fd);
    seterr(path, ": not a regular file or too large", 0);
    return 0;
  }
  if (!stralloc_ready(sa, (size_t)st.st_size + 2)) {
    fd_close(fd);
    seterr("out of memory reading ", path, 0);
    return 0;
  }
  for (;;) {
    ssize_t r;
    if (sa->len >= max + 1) break;
    r = read(fd, sa->s + sa->len, sa->a - 1 - sa->len);
    if (r < 0) {
      if (errno == EINTR) continue;
      fd_close(fd);
      seterr("unable to read ", path, 0);
      return 0;
    }
    if (!r) break;
    sa->len += (size_t)r;
    if (sa->len + 1 >= sa->a && !stralloc_readyplus(sa, 4096)) {
      fd_close(fd);
      seterr("out of memory reading ", path, 0);
      return 0;
    }
  }
  fd_close(fd);
  if (sa->len > max) {
    seterr(path, ": too large", 0);
    return 0;
  }
  sa->s[sa->len++] = '\n'; /* the PEM decoder wants an end of line after the last line */
  return 1;
}

struct pemsink {
  stralloc *out;
  int failed;
};

static void pem_dest(void *ctx, void const *src, size_t len)
{
  struct pemsink *p = ctx;
  if (!p->failed && !stralloc_catb(p->out, src, len)) p->failed = 1;
}

/* Decodes PEM objects from s[0..len). For each object whose name satisfies want(), the DER
 * bytes are appended to out and got(...) is called. Returns 1, or 0 on a PEM error. */
typedef int pem_want_fn(char const *name);
typedef int pem_got_fn(stralloc *out, size_t start, void *arg);

static int pem_each(char const *s, size_t len, pem_want_fn *want, pem_got_fn *got, stralloc *out,
                    void *arg)
{
  br_pem_decoder_context pc;
  struct pemsink sink = {out, 0};
  size_t start = 0;
  int inobj = 0;
  br_pem_decoder_init(&pc);
  while (len) {
    size_t k = br_pem_decoder_push(&pc, s, len);
    s += k;
    len -= k;
    switch (br_pem_decoder_event(&pc)) {
      case BR_PEM_BEGIN_OBJ:
        if (want(br_pem_decoder_name(&pc))) {
          start = out->len;
          sink.failed = 0;
          br_pem_decoder_setdest(&pc, &pem_dest, &sink);
          inobj = 1;
        } else br_pem_decoder_setdest(&pc, 0, 0);
        break;
      case BR_PEM_END_OBJ:
        if (inobj) {
          inobj = 0;
          if (sink.failed) return 0;
          if (!got(out, start, arg)) return 1;
        }
        break;
      case BR_PEM_ERROR:
        return 0;
      default:
        break;
    }
  }
  return 1;
}

static int want_cert(char const *name)
{
  return !strcmp(name, "CERTIFICATE") || !strcmp(name, "X509 CERTIFICATE");
}

static int got_cert(stralloc *out, size_t start, void *arg)
{
  struct pair *pr = arg;
  (void)start;
  pr->chainoff[++pr->chainlen] = out->len;
  return pr->chainlen < TLSSERVER_CHAIN_MAX;
}

static int want_key(char const *name)
{
  return !strcmp(name, "RSA PRIVATE KEY") || !strcmp(name, "EC PRIVATE KEY") ||
         !strcmp(name, "PRIVATE KEY");
}

static int got_key(stralloc *out, size_t start, void *arg)
{
  int *done = arg;
  (void)out;
  (void)start;
  *done = 1;
  return 0; /* the first key is the key */
}

static void pair_wipe(struct pair *pr)
{
  if (pr->chainbuf.s) memset(pr->chainbuf.s, 0, pr->chainbuf.a);
  pr->chainbuf.len = 0;
  pr->chainlen = 0;
  memset(&pr->skdc, 0, sizeof pr->skdc);
  pr->ok = 0;
}

void tlsserver_wipe(void)
{
  unsigned int i;
  for (i = 0; i < npairs; i++) pair_wipe(&pairs[i]);
}

/* Strips leading zero octets. */
static void unpad(unsigned char const **s, size_t *n)
{
  while (*n && !**s) (*s)++, (*n)--;
}

/* Does the private key of pr belong to its first certificate? 1 yes, 0 no (errbuf). */
static int pair_matches(struct pair *pr, char const *certfile, char const *keyfile)
{
  br_x509_decoder_context dc;
  br_x509_pkey const *pk;
  int same = 0;
  br_x509_decoder_init(&dc, 0, 0);
  br_x509_decoder_push(&dc, pr->chain[0].data, pr->chain[0].data_len);
  pk = br_x509_decoder_get_pkey(&dc);
  if (!pk || br_x509_decoder_last_error(&dc)) {
    seterr(certfile, ": unreadable certificate", 0);
    return 0;
  }
  switch (br_skey_decoder_key_type(&pr->skdc)) {
    case BR_KEYTYPE_RSA: {
      br_rsa_private_key const *sk = br_skey_decoder_get_rsa(&pr->skdc);
      static unsigned char n[4096 / 8 + 1]; /* BearSSL keys are 4096 bits at most */
      br_rsa_compute_modulus cm = br_rsa_compute_modulus_get_default();
      size_t nl = 0, pl;
      unsigned char const *pn, *np = n;
      if (pk->key_type != BR_KEYTYPE_RSA) break;
      /* the modulus n = p * q identifies the key (BearSSL 0.6's pubexp computation fails
       * for common keys, so e is not compared) */
      if (cm(0, sk) <= sizeof n) nl = cm(n, sk);
      pn = pk->key.rsa.n;
      pl = pk->key.rsa.nlen;
      unpad(&pn, &pl);
      unpad(&np, &nl);
      same = nl && nl == pl && !memcmp(np, pn, nl);
      memset(n, 0, sizeof n);
      break;
    }
    case BR_KEYTYPE_EC: {
      br_ec_private_key const *sk = br_skey_decoder_get_ec(&pr->skdc);
      unsigned char q[BR_EC_KBUF_PUB_MAX_SIZE];
      br_ec_public_key pub;
      if (pk->key_type != BR_KEYTYPE_EC || pk->key.ec.curve != sk->curve) break;
      if (!br_ec_compute_pub(br_ec_get_default(), &pub, q, sk)) break;
      same = pub.qlen == pk->key.ec.qlen && !memcmp(pub.q, pk->key.ec.q, pub.qlen);
      break;
    }
    default:
      break;
  }
  if (!same) {
    seterr(keyfile, " does not match the certificate in ", certfile);
    return 0;
  }
  return 1;
}

/* Checking that a key belongs to its certificate costs a private-key operation (an EC point
 * multiplication: about as much as a handshake's signature) at every connection. A pair found
 * good is remembered in a stamp file next to it (in MAILROOT/tls/, written like the keys by
 * root): a hash of both files' bytes. A changed key or certificate no longer matches the
 * stamp and is checked again; the stamp is a cache and is not fsync'ed. */
static void pair_digest(br_sha256_context *h, char *hex)
{
  static char const x[] = "0123456789abcdef";
  unsigned char d[br_sha256_SIZE];
  unsigned int i;
  br_sha256_out(h, d);
  for (i = 0; i < sizeof d; i++) {
    hex[2 * i] = x[d[i] >> 4];
    hex[2 * i + 1] = x[d[i] & 15];
  }
  hex[2 * sizeof d] = '\n';
  memset(d, 0, sizeof d);
  memset(h, 0, sizeof *h);
}

#define STAMP_LEN (2 * br_sha256_SIZE + 1)

static int stamp_ok(char const *stamp, char const *hex)
{
  char b[STAMP_LEN + 1];
  ssize_t r;
  int fd = open(stamp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;
  r = read(fd, b, sizeof b);
  fd_close(fd);
  return r == STAMP_LEN && !memcmp(b, hex, STAMP_LEN);
}

static void stamp_write(char const *stamp, char const *hex)
{
  stralloc tmp = STRALLOC_ZERO;
  char fmt[UINT_FMT];
  int fd, ok = 0;
  fmt[uint_fmt(fmt, (unsigned int)getpid())] = 0;
  if (!stralloc_cats(&tmp, stamp) || !stralloc_cats(&tmp, ".") || !stralloc_cats(&tmp, fmt) ||
      !stralloc_0(&tmp))
    goto end;
  fd = open(tmp.s, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) goto end; /* not ours to write (a copy of the instance, a read-only tls/) */
  ok = write(fd, hex, STAMP_LEN) == STAMP_LEN;
  fd_close(fd);
  if (!ok || rename(tmp.s, stamp) < 0) unlink(tmp.s);
end:
  stralloc_free(&tmp);
}

/* Loads a keypair into pr and checks that key and certificate belong together (unless the
 * stamp file, when given, says this very pair was checked). 1 ok, 0 error (errbuf). */
static int load_pair(struct pair *pr, char const *certfile, char const *keyfile,
                     char const *stamp)
{
  stralloc file = STRALLOC_ZERO, der = STRALLOC_ZERO;
  size_t i;
  int done = 0, ok = 0;
  br_sha256_context h;
  char hex[STAMP_LEN];
  pair_wipe(pr);
  br_sha256_init(&h);
  br_sha256_update(&h, "pillarbox pair 1", 16);
  if (!read_bounded(certfile, TLSSERVER_CERT_MAX, &file)) goto end;
  br_sha256_update(&h, file.s, file.len);
  pr->chainoff[0] = 0;
  if (!pem_each(file.s, file.len, &want_cert, &got_cert, &pr->chainbuf, pr)) {
    seterr(certfile, ": bad PEM", 0);
    goto end;
  }
  if (!pr->chainlen) {
    seterr(certfile, ": no certificate in it", 0);
    goto end;
  }
  for (i = 0; i < pr->chainlen; i++) {
    pr->chain[i].data = (unsigned char *)pr->chainbuf.s + pr->chainoff[i];
    pr->chain[i].data_len = pr->chainoff[i + 1] - pr->chainoff[i];
  }
  if (!read_bounded(keyfile, TLSSERVER_KEY_MAX, &file)) goto end;
  br_sha256_update(&h, "", 1);
  br_sha256_update(&h, file.s, file.len);
  pair_digest(&h, hex);
  if (!pem_each(file.s, file.len, &want_key, &got_key, &der, &done) || !done) {
    seterr(keyfile, ": no PEM private key in it", 0);
    goto end;
  }
  br_skey_decoder_init(&pr->skdc);
  br_skey_decoder_push(&pr->skdc, der.s, der.len);
  if (br_skey_decoder_last_error(&pr->skdc) || !br_skey_decoder_key_type(&pr->skdc)) {
    seterr(keyfile, ": unreadable private key", 0);
    goto end;
  }
  if (!stamp || !stamp_ok(stamp, hex)) {
    if (!pair_matches(pr, certfile, keyfile)) goto end;
    if (stamp) stamp_write(stamp, hex);
  }
  ok = 1;
end:
  if (file.s) memset(file.s, 0, file.a);
  if (der.s) memset(der.s, 0, der.a);
  memset(&h, 0, sizeof h);
  stralloc_free(&file);
  stralloc_free(&der);
  if (!ok) pair_wipe(pr);
  pr->ok = ok;
  return ok;
}

static int load_default(void)
{
  char const *c = getenv("TLS_CERTFILE"), *k = getenv("TLS_KEYFILE");
  if (!c || !k || !*c || !*k) {
    c = getenv("CERTFILE");
    k = getenv("KEYFILE");
  }
  if (c && k && *c && *k) return load_pair(&pairs[0], c, k, 0);
  {
    stralloc cp = STRALLOC_ZERO, kp = STRALLOC_ZERO, sp = STRALLOC_ZERO;
    int r = 0;
    if (mailroot_path(&cp, "tls/cert.pem") && mailroot_path(&kp, "tls/key.pem") &&
        mailroot_path(&sp, "tls/" TLSSERVER_STAMP))
      r = load_pair(&pairs[0], cp.s, kp.s, sp.s);
    else seterr("out of memory", 0, 0);
    stralloc_free(&cp);
    stralloc_free(&kp);
    stralloc_free(&sp);
    return r;
  }
}

/* A plain host name in lower case (what tlsserver_sni gives)? */
static int name_ok(char const *s, size_t n)
{
  size_t i;
  if (!n || n > 253) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return 0;
    if (c == '.' && (i == 0 || s[i - 1] == '.')) return 0;
  }
  return s[n - 1] != '.';
}

static struct pair *find_pair(char const *name)
{
  unsigned int i;
  for (i = 1; i < npairs; i++)
    if (!strcmp(pairs[i].name, name)) return &pairs[i];
  return 0;
}

/* Adds the SNI pair name (certfile, keyfile); a failure is kept in the pair, not fatal. */
static void add_named(char const *name, size_t n, char const *certfile, char const *keyfile,
                      char const *stamp)
{
  struct pair *pr;
  char lname[256];
  size_t i;
  if (n >= sizeof lname) return;
  for (i = 0; i < n; i++) {
    char c = name[i];
    lname[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  lname[n] = 0;
  if (!name_ok(lname, n) || find_pair(lname)) return;
  if (npairs >= TLSSERVER_PAIRS_MAX) {
    strerr_warnw3x("too many SNI keypairs, ", lname, " ignored");
    return;
  }
  pr = &pairs[npairs++];
  memcpy(pr->name, lname, n + 1);
  if (!load_pair(pr, certfile, keyfile, stamp)) {
    size_t l = strlen(errbuf);
    if (l >= sizeof pr->err) l = sizeof pr->err - 1;
    memcpy(pr->err, errbuf, l);
    pr->err[l] = 0;
  }
}

extern char **environ;

int tlsserver_load(void)
{
  char **e;
  tlsserver_wipe();
  nwatch = 0;
  npairs = 1;
  pairs[0].name[0] = 0;
  if (!load_default()) return 0;
  /* 1. $CERTFILE:NAME with $KEYFILE:NAME (s6-networking) */
  for (e = environ; *e; e++) {
    if (!strncmp(*e, "CERTFILE:", 9)) {
      char const *eq = strchr(*e, '=');
      stralloc kn = STRALLOC_ZERO;
      char const *k;
      if (!eq || eq == *e + 9 || !eq[1]) continue;
      if (!stralloc_cats(&kn, "KEYFILE:") || !stralloc_catb(&kn, *e + 9, eq - *e - 9) ||
          !stralloc_0(&kn)) {
        seterr("out of memory", 0, 0);
        return 0;
      }
      k = getenv(kn.s);
      if (k && *k) add_named(*e + 9, eq - *e - 9, eq + 1, k, 0);
      stralloc_free(&kn);
    }
  }
  /* 2. MAILROOT/tls/NAME/{cert,key}.pem */
  {
    stralloc dir = STRALLOC_ZERO, c = STRALLOC_ZERO, k = STRALLOC_ZERO, sp = STRALLOC_ZERO;
    DIR *d;
    if (!mailroot_path(&dir, "tls")) {
      seterr("out of memory", 0, 0);
      return 0;
    }
    d = opendir(dir.s);
    if (d) {
      for (;;) {
        struct dirent *de = readdir(d);
        struct stat st;
        size_t n;
        if (!de) break;
        if (de->d_name[0] == '.') continue;
        n = strlen(de->d_name);
        if (!name_ok(de->d_name, n)) continue;
        c.len = k.len = 0;
        if (!stralloc_catb(&c, dir.s, dir.len - 1) || !stralloc_catb(&c, "/", 1) ||
            !stralloc_catb(&c, de->d_name, n) || !stralloc_copyb(&k, c.s, c.len) ||
            !stralloc_copyb(&sp, c.s, c.len) || !stralloc_cats(&sp, "/" TLSSERVER_STAMP) ||
            !stralloc_0(&sp) || !stralloc_cats(&c, "/cert.pem") || !stralloc_0(&c) ||
            !stralloc_cats(&k, "/key.pem") || !stralloc_0(&k)) {
          closedir(d);
          seterr("out of memory", 0, 0);
          return 0;
        }
        if (stat(c.s, &st) < 0) {
          watch_add(c.s, 0); /* a cert.pem that appears later is seen */
          continue;
        }
        add_named(de->d_name, n, c.s, k.s, sp.s);
      }
      closedir(d);
    }
    /* last: the stamps written above changed it already */
    watch_path(dir.s);
    stralloc_free(&dir);
    stralloc_free(&c);
    stralloc_free(&k);
    stralloc_free(&sp);
  }
  return 1;
}

unsigned int tlsserver_pairs(char const **name, char const **err, unsigned int i)
{
  if (i >= npairs) return 0;
  *name = pairs[i].name;
  *err = pairs[i].ok ? 0 : pairs[i].err;
  return 1;
}

char const *tlsserver_sni(br_ssl_server_context const *cc)
{
  char const *s = br_ssl_engine_get_server_name(&cc->eng);
  size_t n = s ? strlen(s) : 0, i;
  if (!n || n > 253 || n >= sizeof sniname) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 'A' && c <= 'Z') c += 32;
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return 0;
    if (c == '.' && (i == 0 || sniname[i - 1] == '.')) return 0;
    sniname[i] = (char)c;
  }
  if (sniname[n - 1] == '.') return 0;
  sniname[n] = 0;
  return sniname;
}

/* The policy: pick the keypair by SNI, then hand over to BearSSL's single-keypair policy. */
static int sni_choose(br_ssl_server_policy_class const **pctx, br_ssl_server_context const *cc,
                      br_ssl_server_choices *choices)
{
  char const *name = tlsserver_sni(cc);
  struct pair *pr = &pairs[0];
  (void)pctx;
  if (name) {
    struct pair *p = find_pair(name);
    if (p && p->ok) pr = p;
    else if (p) strerr_warnw4x("keypair for ", name, " unusable, using the default: ", p->err);
  }
  if (!pr->ok) {
    strerr_warnw1x("no usable certificate (tlsserver_load not called?)");
    return 0;
  }
  switch (br_skey_decoder_key_type(&pr->skdc)) {
    case BR_KEYTYPE_RSA:
      br_ssl_server_set_single_rsa(the_cc, pr->chain, pr->chainlen,
                                   br_skey_decoder_get_rsa(&pr->skdc), BR_KEYTYPE_SIGN,
                                   br_rsa_private_get_default(), br_rsa_pkcs1_sign_get_default());
      break;
    case BR_KEYTYPE_EC:
      br_ssl_server_set_single_ec(the_cc, pr->chain, pr->chainlen,
                                  br_skey_decoder_get_ec(&pr->skdc), BR_KEYTYPE_SIGN,
                                  BR_KEYTYPE_EC, br_ec_get_default(),
                                  br_ecdsa_sign_asn1_get_default());
      break;
    default:
      return 0;
  }
  return (*the_cc->policy_vtable)->choose(the_cc->policy_vtable, cc, choices);
}

static uint32_t sni_keyx(br_ssl_server_policy_class const **pctx, unsigned char *data, size_t *len)
{
  (void)pctx; (void)data; (void)len;
  return 0; /* never reached: choose() hands over to the single-keypair policy */
}

static size_t sni_sign(br_ssl_server_policy_class const **pctx, unsigned algo, unsigned char *data,
                       size_t hvlen, size_t len)
{
  (void)pctx; (void)algo; (void)data; (void)hvlen; (void)len;
  return 0;
}

static br_ssl_server_policy_class const sni_vtable = {
  sizeof(br_ssl_server_policy_class const *), &sni_choose, &sni_keyx, &sni_sign};
static br_ssl_server_policy_class const *sni_policy = &sni_vtable;

int tlsserver_init(br_ssl_server_context *cc, unsigned char *iobuf, size_t iobuflen)
{
  br_ssl_engine_context *e = &cc->eng;
  the_cc = cc;
  br_ssl_server_zero(cc);
  br_ssl_engine_set_versions(e, BR_TLS12, BR_TLS12);
  br_ssl_engine_set_suites(e, suites, sizeof suites / sizeof suites[0]);
  br_ssl_engine_add_flags(e, BR_OPT_ENFORCE_SERVER_PREFERENCES | BR_OPT_NO_RENEGOTIATION);
  br_ssl_engine_set_hash(e, br_sha1_ID, &br_sha1_vtable);
  br_ssl_engine_set_hash(e, br_sha224_ID, &br_sha224_vtable);
  br_ssl_engine_set_hash(e, br_sha256_ID, &br_sha256_vtable);
  br_ssl_engine_set_hash(e, br_sha384_ID, &br_sha384_vtable);
  br_ssl_engine_set_hash(e, br_sha512_ID, &br_sha512_vtable);
  br_ssl_engine_set_prf_sha256(e, &br_tls12_sha256_prf);
  br_ssl_engine_set_prf_sha384(e, &br_tls12_sha384_prf);
  br_ssl_engine_set_default_aes_gcm(e);
  br_ssl_engine_set_default_chapol(e);
  br_ssl_engine_set_default_ec(e);
  br_ssl_server_set_policy(cc, &sni_policy);
  br_ssl_engine_set_buffer(e, iobuf, iobuflen, iobuflen > BR_SSL_BUFSIZE_MONO);
  if (!br_ssl_server_reset(cc)) {
    seterr("unable to initialise the TLS engine", 0, 0);
    return 0;
  }
  return 1;
}

char const *tlsserver_suite_name(unsigned int s)
{
  switch (s) {
    case BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: return "ECDHE-ECDSA-AES128-GCM-SHA256";
    case BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: return "ECDHE-RSA-AES128-GCM-SHA256";
    case BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: return "ECDHE-ECDSA-AES256-GCM-SHA384";
    case BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: return "ECDHE-RSA-AES256-GCM-SHA384";
    case BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: return "ECDHE-ECDSA-CHACHA20-POLY1305";
    case BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: return "ECDHE-RSA-CHACHA20-POLY1305";
    default: return 0;
  }
}

static int put(char *out, size_t max, size_t *n, char const *s, size_t len)
{
  if (len > max - *n) return 0;
  memcpy(out + *n, s, len);
  *n += len;
  return 1;
}

size_t tlsserver_facts(br_ssl_server_context const *cc, char *out, size_t max)
{
  br_ssl_session_parameters sp;
  char const *suite, *name = tlsserver_sni(cc);
  unsigned int v = br_ssl_engine_get_version(&cc->eng);
  size_t n = 0;
  br_ssl_engine_get_session_parameters(&cc->eng, &sp);
  memset(sp.master_secret, 0, sizeof sp.master_secret);
  suite = tlsserver_suite_name(sp.cipher_suite);
  if (!suite) suite = "";
  if (!put(out, max, &n, "SSL_PROTOCOL=", 13) ||
      !put(out, max, &n, v == BR_TLS12 ? "TLSv1.2" : "unknown", v == BR_TLS12 ? 8 : 8) ||
      !put(out, max, &n, "SSL_CIPHER=", 11) || !put(out, max, &n, suite, strlen(suite) + 1) ||
      !put(out, max, &n, "SSL_TLS_SNI_SERVERNAME", 22))
    return 0;
  if (name) {
    if (!put(out, max, &n, "=", 1) || !put(out, max, &n, name, strlen(name))) return 0;
  }
  if (!put(out, max, &n, "\0\0", 2)) return 0;
  return n;
}

static void engine_error(br_ssl_engine_context const *e, char const *what)
{
  char num[16];
  int err = br_ssl_engine_last_error(e);
  size_t i = sizeof num - 1;
  unsigned int u = err < 0 ? 0 : (unsigned int)err;
  num[i] = 0;
  do {
    num[--i] = (char)('0' + u % 10);
    u /= 10;
  } while (u && i);
  seterr(what, " (BearSSL error ", 0);
  {
    size_t l = strlen(errbuf);
    size_t k = strlen(num + i);
    if (l + k + 2 < sizeof errbuf) {
      memcpy(errbuf + l, num + i, k);
      errbuf[l + k] = ')';
      errbuf[l + k + 1] = 0;
    }
  }
}

int tlsserver_run(br_ssl_server_context *cc, int netr, int netw, int appr, int appw,
                  tain const *hsdeadline, int (*onhs)(br_ssl_server_context *, void *),
                  void *arg)
{
  br_ssl_engine_context *e = &cc->eng;
  int handshaken = 0, closing = 0, neteof = 0;
  tain closedeadline;
  if (ndelay_on(netr) < 0 || ndelay_on(netw) < 0) return 2;
  {
    /* The handshake goes out as several small records: without TCP_NODELAY, Nagle and the
     * peer's delayed ACK cost tens of milliseconds per flight. Not a socket: nothing to do. */
    int one = 1;
    if (setsockopt(netw, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
      /* not a TCP socket (a pipe, a Unix socket): nothing to tune */
    }
  }
  if (appr >= 0 && ndelay_on(appr) < 0) return 2;
  if (appw >= 0 && ndelay_on(appw) < 0) return 2;
  for (;;) {
    unsigned int st = br_ssl_engine_current_state(e);
    iopause_fd x[4];
    int ix[4] = {-1, -1, -1, -1}; /* net read, net write, app read, app write */
    unsigned int n = 0;
    int r;
    tain const *deadline;
    if (st & BR_SSL_CLOSED) break;
    if (!handshaken && (st & (BR_SSL_SENDAPP | BR_SSL_RECVAPP))) {
      handshaken = 1;
      tlsserver_wipe();
      if (onhs && !onhs(cc, arg)) return 2;
    }
    if (neteof && !(st & BR_SSL_RECVAPP)) break;
    if (closing && !(st & BR_SSL_SENDREC)) break;
    if (!neteof && (st & BR_SSL_RECVREC)) {
      x[n].fd = netr;
      x[n].events = IOPAUSE_READ;
      ix[0] = n++;
    }
    if (st & BR_SSL_SENDREC) {
      if (netw == netr && ix[0] >= 0) {
        x[ix[0]].events |= IOPAUSE_WRITE;
        ix[1] = ix[0];
      } else {
        x[n].fd = netw;
        x[n].events = IOPAUSE_WRITE;
        ix[1] = n++;
      }
    }
    /* After the peer has gone, what the application writes is read and dropped, so that it
     * never blocks on a full pipe while we wait for it to take the last bytes. */
    if (handshaken && appr >= 0 && (neteof || (!closing && (st & BR_SSL_SENDAPP)))) {
      x[n].fd = appr;
      x[n].events = IOPAUSE_READ;
      ix[2] = n++;
    }
    if (appw >= 0 && (st & BR_SSL_RECVAPP)) {
      x[n].fd = appw;
      x[n].events = IOPAUSE_WRITE;
      ix[3] = n++;
    }
    if (!n) break;
    deadline = !handshaken ? hsdeadline : (closing || neteof) ? &closedeadline : &tain_infinite;
    r = iopause_g(x, n, deadline);
    if (r < 0) {
      if (errno == EINTR) continue;
      return 2;
    }
    if (!r) {
      if (!handshaken) {
        seterr("handshake timed out", 0, 0);
        return 1;
      }
      break;
    }
    if (ix[1] >= 0 && (x[ix[1]].revents & (IOPAUSE_WRITE | IOPAUSE_EXCEPT))) {
      int dead = 0;
      for (;;) { /* write while the engine has records and the socket takes them */
        size_t len;
        unsigned char *buf = br_ssl_engine_sendrec_buf(e, &len);
        ssize_t w = write(netw, buf, len);
        if (w < 0) {
          if (errno != EAGAIN && errno != EINTR) {
            if (!handshaken) {
              seterr("network write failed during the handshake", 0, 0);
              return 1;
            }
            dead = 1;
          }
          break;
        }
        br_ssl_engine_sendrec_ack(e, (size_t)w);
        if ((size_t)w < len || !(br_ssl_engine_current_state(e) & BR_SSL_SENDREC)) break;
      }
      if (dead) break;
      continue;
    }
    if (ix[0] >= 0 && (x[ix[0]].revents & (IOPAUSE_READ | IOPAUSE_EXCEPT))) {
      for (;;) { /* read while the engine wants bytes (header, then body) and they are there */
        size_t len;
        unsigned char *buf = br_ssl_engine_recvrec_buf(e, &len);
        ssize_t k = read(netr, buf, len);
        if (k < 0) {
          if (errno != EAGAIN && errno != EINTR) {
            if (!handshaken) {
              seterr("network read failed during the handshake", 0, 0);
              return 1;
            }
            neteof = 1;
            tain_addsec_g(&closedeadline, 5);
          }
          break;
        }
        if (!k) {
          if (!handshaken) {
            seterr("peer closed the connection during the handshake", 0, 0);
            return 1;
          }
          neteof = 1;
          tain_addsec_g(&closedeadline, 5);
          break;
        }
        br_ssl_engine_recvrec_ack(e, (size_t)k);
        if ((size_t)k < len || (br_ssl_engine_current_state(e) & (BR_SSL_RECVREC | BR_SSL_RECVAPP |
            BR_SSL_SENDREC | BR_SSL_CLOSED)) != BR_SSL_RECVREC)
          break;
      }
      continue;
    }
    if (ix[3] >= 0 && (x[ix[3]].revents & (IOPAUSE_WRITE | IOPAUSE_EXCEPT))) {
      size_t len;
      unsigned char *buf = br_ssl_engine_recvapp_buf(e, &len);
      ssize_t w = write(appw, buf, len);
      if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) {
          /* the application is gone: say goodbye to the peer */
          fd_close(appw);
          appw = -1;
          if (!closing) {
            closing = 1;
            br_ssl_engine_close(e);
            tain_addsec_g(&closedeadline, 5);
          }
          if (neteof) break;
        }
      } else br_ssl_engine_recvapp_ack(e, (size_t)w);
      continue;
    }
    if (ix[2] >= 0 && neteof && (x[ix[2]].revents & (IOPAUSE_READ | IOPAUSE_EXCEPT))) {
      char sink[4096];
      ssize_t k = read(appr, sink, sizeof sink);
      if (!k || (k < 0 && errno != EAGAIN && errno != EINTR)) {
        fd_close(appr);
        appr = -1;
      }
      continue;
    }
    if (ix[2] >= 0 && (x[ix[2]].revents & (IOPAUSE_READ | IOPAUSE_EXCEPT))) {
      size_t len;
      unsigned char *buf = br_ssl_engine_sendapp_buf(e, &len);
      ssize_t k = read(appr, buf, len);
      if (k < 0) {
        if (errno != EAGAIN && errno != EINTR) k = 0;
        else continue;
      }
      if (!k) {
        fd_close(appr);
        appr = -1;
        closing = 1;
        br_ssl_engine_close(e);
        tain_addsec_g(&closedeadline, 5);
      } else {
        br_ssl_engine_sendapp_ack(e, (size_t)k);
        br_ssl_engine_flush(e, 0);
      }
      continue;
    }
  }
  if (!handshaken) {
    engine_error(e, "handshake failed");
    return 1;
  }
  if (appw >= 0) fd_close(appw);
  {
    int err = br_ssl_engine_last_error(e);
    if (err != BR_ERR_OK && err != BR_ERR_IO) engine_error(e, "TLS session ended with an error");
  }
  return 0;
}
