/* tls-crypto ROUNDS: the server's public-key work of one full TLS 1.2 ECDHE-ECDSA handshake on
 * P-256, done in-process with the BearSSL code the engines use (br_ec_get_default(),
 * br_ecdsa_sign_asn1_get_default()), timed over ROUNDS handshakes (best of 3 runs kept):
 *   ecdhe  the ephemeral key (a generator multiplication) and the shared secret (a point
 *          multiplication), as br_ssl_server does for ServerKeyExchange / ClientKeyExchange;
 *   x25519 the same with X25519, the group OpenSSL clients offer first (the one negotiated
 *          when both sides have it);
 *   ecdsa  the signature of ServerKeyExchange (a SHA-256 hash signed with the P-256 key).
 * Prints: ecdhe USEC x25519 USEC ecdsa USEC total USEC total_x25519 USEC (microseconds per handshake). Driven by
 * bench/tls.py, which sets it against the handshake's whole time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bearssl.h>

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
  br_ec_impl const *ec = br_ec_get_default();
  br_ecdsa_sign sign = br_ecdsa_sign_asn1_get_default();
  br_hmac_drbg_context rng;
  unsigned char seed[32], kbuf[BR_EC_KBUF_PRIV_MAX_SIZE], pbuf[BR_EC_KBUF_PUB_MAX_SIZE];
  unsigned char eph[32], pt[65], peer[65], hv[32], sig[80];
  br_ec_private_key sk;
  br_ec_public_key pk;
  double best_dh = 1e9, best_sig = 1e9, best_x = 1e9;
  unsigned char xpeer[32];
  long rounds = argc > 1 ? atol(argv[1]) : 200;
  if (rounds <= 0) return 100;
  memset(seed, 7, sizeof seed);
  br_hmac_drbg_init(&rng, &br_sha256_vtable, seed, sizeof seed);
  if (!br_ec_keygen(&rng.vtable, ec, &sk, kbuf, BR_EC_secp256r1)) return 111;
  if (!br_ec_compute_pub(ec, &pk, pbuf, &sk)) return 111;
  memcpy(peer, pk.q, 65);
  for (int run = 0; run < 3; run++) {
    double t0 = now(), t1, t2;
    for (long i = 0; i < rounds; i++) {
      br_hmac_drbg_generate(&rng, eph, sizeof eph);
      eph[0] &= 0x7f; /* below the order */
      if (ec->mulgen(pt, eph, sizeof eph, BR_EC_secp256r1) != 65) return 111;
      memcpy(pt, peer, 65);
      if (!ec->mul(pt, 65, eph, sizeof eph, BR_EC_secp256r1)) return 111;
    }
    t1 = now();
    for (long i = 0; i < rounds; i++) {
      br_sha256_context h;
      br_sha256_init(&h);
      br_sha256_update(&h, &i, sizeof i);
      br_sha256_out(&h, hv);
      if (!sign(ec, &br_sha256_vtable, hv, &sk, sig)) return 111;
    }
    t2 = now();
    for (long i = 0; i < rounds; i++) {
      br_hmac_drbg_generate(&rng, eph, sizeof eph);
      if (ec->mulgen(xpeer, eph, sizeof eph, BR_EC_curve25519) != 32) return 111;
      br_hmac_drbg_generate(&rng, eph, sizeof eph);
      if (!ec->mul(xpeer, 32, eph, sizeof eph, BR_EC_curve25519)) return 111;
    }
    if ((now() - t2) / rounds < best_x) best_x = (now() - t2) / rounds;
    if ((t1 - t0) / rounds < best_dh) best_dh = (t1 - t0) / rounds;
    if ((t2 - t1) / rounds < best_sig) best_sig = (t2 - t1) / rounds;
  }
  printf("ecdhe %.0f x25519 %.0f ecdsa %.0f total %.0f total_x25519 %.0f\n", best_dh * 1e6,
         best_x * 1e6, best_sig * 1e6, (best_dh + best_sig) * 1e6, (best_x + best_sig) * 1e6);
  return 0;
}
