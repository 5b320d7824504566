/* authcache: the auth service's verified-credential cache (as Dovecot's auth_cache).
 *
 * Remembers, for a short time (the TTL), that a password was good for an account, so that a
 * client logging in again runs no new password hash. An entry holds:
 *   key   HMAC-SHA256(secret, address "\0" password), the secret drawn at random when the
 *         process starts (so neither a memory dump nor a timing tells a password);
 *   hd    SHA-256 of the stored hash string it was verified against: a lookup passes the
 *         account's current hash, and an entry made against another hash (the password was
 *         changed, the account disabled) is dropped at once instead of answering;
 *   the expiry time.
 * Only good results are stored. The table has a fixed number of slots (set at init); an entry
 * lives in one of AUTHCACHE_WAYS slots picked by its key, and a full set evicts the entry that
 * expires first. No allocation after init.
 */
#ifndef PILLARBOX_AUTHCACHE_H
#define PILLARBOX_AUTHCACHE_H

#include <stddef.h>
#include <stdint.h>

#define AUTHCACHE_WAYS 8

/* Sets up size slots (0: caching off) and draws the secret. 1 ok, 0 out of memory. */
int authcache_init(unsigned int size);

/* key for (address, password). */
void authcache_key(unsigned char key[32], char const *addr, size_t alen, char const *pw,
                   size_t plen);

/* hd for a stored hash string (NUL-terminated). */
void authcache_hd(unsigned char hd[32], char const *hash);

/* 1 if (key, hd) is cached and not expired at now (seconds on any monotonic scale). An entry
 * with the same key but another hd, or expired, is removed. */
int authcache_hit(unsigned char const key[32], unsigned char const hd[32], uint64_t now);

/* Remembers (key, hd) until now + ttl. */
void authcache_add(unsigned char const key[32], unsigned char const hd[32], uint64_t now,
                   unsigned int ttl);

/* Entries in use (for statistics). */
unsigned int authcache_count(void);

#endif
