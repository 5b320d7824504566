/* qindex: the id hash and the retry heap of queue-run. See qindex.h. */
#include <stdlib.h>
#include <string.h>

#include "qindex.h"

static uint32_t hstr(char const *s)
{
  uint32_t h = 5381;
  while (*s) h = (h * 33) ^ (unsigned char)*s++;
  return h;
}

/* puts slot+1 v into a table of cap entries (cap a power of 2) */
static void place(uint32_t *t, uint32_t cap, qslot const *slots, uint32_t v)
{
  uint32_t i = hstr(slots[v - 1].id) & (cap - 1);
  while (t[i]) i = (i + 1) & (cap - 1);
  t[i] = v;
}

static int hash_grow(qindex *x)
{
  uint32_t cap = x->hashcap ? x->hashcap * 2 : 1024, i;
  uint32_t *t;
  if (cap < x->hashcap) return 0;
  t = calloc(cap, sizeof *t);
  if (!t) return 0;
  for (i = 0; i < x->hashcap; i++)
    if (x->hash[i]) place(t, cap, x->slot, x->hash[i]);
  free(x->hash);
  x->hash = t;
  x->hashcap = cap;
  return 1;
}

uint32_t qindex_find(qindex const *x, char const *id)
{
  uint32_t i;
  if (!x->hashcap) return QINDEX_NONE;
  i = hstr(id) & (x->hashcap - 1);
  while (x->hash[i]) {
    if (!strcmp(x->slot[x->hash[i] - 1].id, id)) return x->hash[i] - 1;
    i = (i + 1) & (x->hashcap - 1);
  }
  return QINDEX_NONE;
}

static void hash_del(qindex *x, uint32_t s)
{
  uint32_t m = x->hashcap - 1, i = hstr(x->slot[s].id) & m, j;
  while (x->hash[i] && x->hash[i] != s + 1) i = (i + 1) & m;
  if (!x->hash[i]) return;
  x->hash[i] = 0;
  x->count--;
  /* backward shift: re-place the rest of the cluster */
  for (j = (i + 1) & m; x->hash[j]; j = (j + 1) & m) {
    uint32_t v = x->hash[j];
    x->hash[j] = 0;
    place(x->hash, x->hashcap, x->slot, v);
  }
}

uint32_t qindex_add(qindex *x, char const *id)
{
  uint32_t s;
  size_t len = strlen(id);
  if (len >= QUEUE_ID_MAX) return QINDEX_NONE;
  if ((x->count + 1) * 2 > x->hashcap && !hash_grow(x)) return QINDEX_NONE;
  if (x->nfree) s = x->freel[--x->nfree];
  else {
    if (x->nslots == x->slotcap) { /* the free list first: room for every slot */
      uint32_t c = x->slotcap ? x->slotcap * 2 : 1024;
      uint32_t *f = realloc(x->freel, c * sizeof *f), *h;
      qslot *n;
      if (!f) return QINDEX_NONE;
      x->freel = f;
      x->freecap = c;
      h = realloc(x->heap, c * sizeof *h); /* and the heap: pushing never fails */
      if (!h) return QINDEX_NONE;
      x->heap = h;
      x->heapcap = c;
      n = realloc(x->slot, c * sizeof *n);
      if (!n) return QINDEX_NONE;
      x->slot = n;
      x->slotcap = c;
    }
    s = x->nslots++;
  }
  memset(&x->slot[s], 0, sizeof x->slot[s]);
  memcpy(x->slot[s].id, id, len + 1);
  x->slot[s].flags = QINDEX_USED;
  x->slot[s].heapidx = QINDEX_NONE;
  place(x->hash, x->hashcap, x->slot, s + 1);
  x->count++;
  return s;
}

/* ---- the heap ---- */

static int less(qindex const *x, uint32_t a, uint32_t b)
{
  return x->slot[x->heap[a]].next < x->slot[x->heap[b]].next;
}

static void swap(qindex *x, uint32_t a, uint32_t b)
{
  uint32_t t = x->heap[a];
  x->heap[a] = x->heap[b];
  x->heap[b] = t;
  x->slot[x->heap[a]].heapidx = a;
  x->slot[x->heap[b]].heapidx = b;
}

static void up(qindex *x, uint32_t i)
{
  while (i && less(x, i, (i - 1) / 2)) {
    swap(x, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void down(qindex *x, uint32_t i)
{
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < x->heapn && less(x, l, m)) m = l;
    if (r < x->heapn && less(x, r, m)) m = r;
    if (m == i) return;
    swap(x, i, m);
    i = m;
  }
}

int qindex_push(qindex *x, uint32_t s, uint64_t next)
{
  if (x->heapn == x->heapcap) {
    uint32_t c = x->heapcap ? x->heapcap * 2 : 1024;
    uint32_t *h = realloc(x->heap, c * sizeof *h);
    if (!h) return 0;
    x->heap = h;
    x->heapcap = c;
  }
  x->slot[s].next = next;
  x->heap[x->heapn] = s;
  x->slot[s].heapidx = x->heapn++;
  up(x, x->heapn - 1);
  return 1;
}

void qindex_unqueue(qindex *x, uint32_t s)
{
  uint32_t i = x->slot[s].heapidx;
  if (i == QINDEX_NONE) return;
  x->heapn--;
  if (i != x->heapn) {
    x->heap[i] = x->heap[x->heapn];
    x->slot[x->heap[i]].heapidx = i;
    down(x, i);
    up(x, x->slot[x->heap[i]].heapidx);
  }
  x->slot[s].heapidx = QINDEX_NONE;
}

int qindex_reset(qindex *x, uint32_t s, uint64_t next)
{
  uint32_t i = x->slot[s].heapidx;
  if (i == QINDEX_NONE) return qindex_push(x, s, next);
  x->slot[s].next = next;
  down(x, i);
  up(x, x->slot[s].heapidx);
  return 1;
}

uint32_t qindex_top(qindex const *x)
{
  return x->heapn ? x->heap[0] : QINDEX_NONE;
}

void qindex_del(qindex *x, uint32_t s)
{
  qindex_unqueue(x, s);
  hash_del(x, s);
  x->slot[s].flags = 0;
  x->slot[s].id[0] = 0;
  x->freel[x->nfree++] = s; /* freecap >= slotcap: always room */
}

void qindex_free(qindex *x)
{
  free(x->slot);
  free(x->freel);
  free(x->hash);
  free(x->heap);
  memset(x, 0, sizeof *x);
}
