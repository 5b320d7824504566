/* authcache: see authcache.h */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <bearssl/bearssl_hash.h>
#include <bearssl/bearssl_hmac.h>
#include <skalibs/random.h>

#include "authcache.h"

struct entry {
  unsigned char key[32];
  unsigned char hd[32];
  uint64_t expires; /* 0: free */
};

static struct entry *slots;
static unsigned int nslots;
static unsigned int used;
static br_hmac_key_context secret;

int authcache_init(unsigned int size)
{
  char k[32];
  random_buf(k, sizeof k);
  br_hmac_key_init(&secret, &br_sha256_vtable, k, sizeof k);
  memset(k, 0, sizeof k);
  free(slots);
  slots = 0;
  nslots = used = 0;
  if (!size) return 1;
  if (size < AUTHCACHE_WAYS) size = AUTHCACHE_WAYS;
  slots = calloc(size, sizeof *slots);
  if (!slots) return 0;
  nslots = size;
  return 1;
}

void authcache_key(unsigned char key[32], char const *addr, size_t alen, char const *pw,
                   size_t plen)
{
  br_hmac_context h;
  br_hmac_init(&h, &secret, 0);
  br_hmac_update(&h, addr, alen);
  br_hmac_update(&h, "", 1);
  br_hmac_update(&h, pw, plen);
  br_hmac_out(&h, key);
  memset(&h, 0, sizeof h);
}

void authcache_hd(unsigned char hd[32], char const *hash)
{
  br_sha256_context c;
  br_sha256_init(&c);
  br_sha256_update(&c, hash, strlen(hash));
  br_sha256_out(&c, hd);
}

static int same(unsigned char const *a, unsigned char const *b)
{
  unsigned char d = 0;
  unsigned int i;
  for (i = 0; i < 32; i++) d |= a[i] ^ b[i];
  return !d;
}

static unsigned int first(unsigned char const key[32])
{
  uint32_t x = (uint32_t)key[0] | (uint32_t)key[1] << 8 | (uint32_t)key[2] << 16 |
               (uint32_t)key[3] << 24;
  return (unsigned int)(x % nslots);
}

static void drop(struct entry *e)
{
  memset(e, 0, sizeof *e);
  used--;
}

int authcache_hit(unsigned char const key[32], unsigned char const hd[32], uint64_t now)
{
  unsigned int i, s;
  if (!nslots) return 0;
  s = first(key);
  for (i = 0; i < AUTHCACHE_WAYS; i++) {
    struct entry *e = &slots[(s + i) % nslots];
    if (!e->expires || !same(e->key, key)) continue;
    if (e->expires <= now || !same(e->hd, hd)) {
      drop(e);
      return 0;
    }
    return 1;
  }
  return 0;
}

void authcache_add(unsigned char const key[32], unsigned char const hd[32], uint64_t now,
                   unsigned int ttl)
{
  struct entry *victim = 0;
  unsigned int i, s;
  if (!nslots || !ttl) return;
  s = first(key);
  for (i = 0; i < AUTHCACHE_WAYS; i++) {
    struct entry *e = &slots[(s + i) % nslots];
    if (e->expires && same(e->key, key)) {
      victim = e;
      break;
    }
    if (e->expires && e->expires <= now) drop(e);
    if (!e->expires) {
      if (!victim || victim->expires) victim = e;
    } else if (!victim || (victim->expires && e->expires < victim->expires))
      victim = e;
  }
  if (!victim->expires) used++;
  memcpy(victim->key, key, 32);
  memcpy(victim->hd, hd, 32);
  victim->expires = now + ttl;
}

unsigned int authcache_count(void)
{
  return used;
}
