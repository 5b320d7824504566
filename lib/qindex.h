/* qindex: queue-run's in-memory index of queued messages: one small slot per message (its id,
 * next try, flags), a hash set of ids (open addressing, linear probing, backward-shift
 * deletion) and a binary min-heap of slots by next try (the retry heap, qmail's prioq).
 *
 * Slots are numbered from 0 and reused (a free list); a slot number stays valid until
 * qindex_del. A slot is in the heap or not (taken out while its message is loaded). Every
 * operation is O(1) or O(log n); 100,000 messages cost about 10 MB. Only qindex_add
 * allocates (room for the heap and the free list grows with the slots, so pushing and
 * deleting never fail); its failure leaves the index as it was.
 */
#ifndef PILLARBOX_QINDEX_H
#define PILLARBOX_QINDEX_H

#include <stdint.h>
#include "queue.h"

#define QINDEX_NONE UINT32_MAX

typedef struct qslot_s qslot;
struct qslot_s {
  char id[QUEUE_ID_MAX];
  uint64_t next;    /* when it is due (seconds since the epoch); meaningful in the heap */
  uint32_t heapidx; /* QINDEX_NONE: not in the heap */
  uint32_t flags;   /* the caller's; QINDEX_USED is set while the slot holds an id */
};
#define QINDEX_USED 1u

typedef struct qindex_s qindex;
struct qindex_s {
  qslot *slot;
  uint32_t nslots, slotcap;
  uint32_t *freel, nfree, freecap;
  uint32_t *hash, hashcap, count; /* hash entries hold slot+1, 0 = empty; count: ids held */
  uint32_t *heap, heapn, heapcap;
};
#define QINDEX_ZERO {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

/* The slot holding id, or QINDEX_NONE. */
uint32_t qindex_find(qindex const *x, char const *id);

/* A new slot for id (which must not be there yet: use qindex_find), not in the heap.
 * Returns the slot, or QINDEX_NONE on allocation failure. */
uint32_t qindex_add(qindex *x, char const *id);

/* Forgets slot s (out of the heap and the hash); its number may be reused. */
void qindex_del(qindex *x, uint32_t s);

/* Puts s into the heap due at next (it must not be in it). Returns 1. */
int qindex_push(qindex *x, uint32_t s, uint64_t next);

/* Takes s out of the heap (nothing if it is not in it). */
void qindex_unqueue(qindex *x, uint32_t s);

/* Moves s (in the heap or not) to be due at next. Returns 1. */
int qindex_reset(qindex *x, uint32_t s, uint64_t next);

/* The slot due first, or QINDEX_NONE if the heap is empty. */
uint32_t qindex_top(qindex const *x);

/* Frees everything. */
void qindex_free(qindex *x);

#endif
