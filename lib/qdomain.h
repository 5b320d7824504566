/* qdomain: queue-run's table of remote domains: how many smtp-send run for each (the
 * per-domain concurrency limit) and each one's backoff after failed attempts (a batch in
 * which nothing was delivered or refused). At most QDOMAIN_MAX domains are remembered; when
 * the table is full, a domain with nothing running and no backoff is forgotten. Entries never
 * move (a running delivery keeps a pointer to its domain). Names are case-insensitive.
 */
#ifndef PILLARBOX_QDOMAIN_H
#define PILLARBOX_QDOMAIN_H

#include <stddef.h>
#include <stdint.h>

#define QDOMAIN_MAX 4096

typedef struct qdomain_s qdomain;
struct qdomain_s {
  char name[256];
  unsigned int running; /* smtp-send processes for it now */
  unsigned int fails;   /* failed batches in a row */
  uint64_t until;       /* backed off until then (seconds since the epoch) */
};

/* The entry of name[0..len) (cut at 255 bytes), made if needed; NULL when the table is full
 * of busy or backed-off domains (or cannot be allocated). */
qdomain *qdomain_get(char const *name, size_t len);

/* The entry of the domain of addr (after its last '@'), or NULL (no domain, or full). */
qdomain *qdomain_of(char const *addr);

/* Forgets every backoff (queue-ctl flush). */
void qdomain_reset_all(void);

#endif
