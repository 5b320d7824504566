/* unit: queue-run's index, the id hash and the retry heap (lib/qindex), checked against a
 * plain array model under 200,000 random operations, the way qmail's prioq is exercised:
 * whatever is pushed comes out in order of due time, and every id is found until deleted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qindex.h"
#include "check.h"
char const *PROG = "unit-qindex";

#define N 5000 /* distinct ids in play */

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void)
{
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return rs;
}

struct model {
  int present, inheap;
  uint32_t slot;
  uint64_t next;
};
static struct model m[N];

static void idof(char *b, unsigned i)
{
  snprintf(b, QUEUE_ID_MAX, "17000%05u.%06u.%u", i % 97, i, 1000 + i % 13);
}

/* every heap entry no earlier than its parent, and heapidx consistent */
static int heap_ok(qindex const *x)
{
  uint32_t i;
  for (i = 0; i < x->heapn; i++) {
    if (x->slot[x->heap[i]].heapidx != i) return 0;
    if (i && x->slot[x->heap[i]].next < x->slot[x->heap[(i - 1) / 2]].next) return 0;
  }
  return 1;
}

int main(void)
{
  qindex x = QINDEX_ZERO;
  char id[QUEUE_ID_MAX];
  unsigned long op;
  unsigned i, present = 0, inheap = 0;

  CHECK(qindex_top(&x) == QINDEX_NONE);
  CHECK(qindex_find(&x, "1.2.3") == QINDEX_NONE);

  /* prioq: pushed in random order, popped in order of due time (ties in any order) */
  for (i = 0; i < N; i++) {
    uint32_t s;
    idof(id, i);
    s = qindex_add(&x, id);
    CHECK(s != QINDEX_NONE && qindex_find(&x, id) == s);
    CHECK(qindex_push(&x, s, rnd() % 1000));
  }
  CHECK(x.count == N && x.heapn == N && heap_ok(&x));
  {
    uint64_t last = 0;
    unsigned popped = 0;
    for (;;) {
      uint32_t s = qindex_top(&x);
      if (s == QINDEX_NONE) break;
      CHECK(x.slot[s].next >= last);
      last = x.slot[s].next;
      qindex_unqueue(&x, s);
      popped++;
    }
    CHECK(popped == N);
  }
  for (i = 0; i < N; i++) {
    idof(id, i);
    CHECK(qindex_find(&x, id) != QINDEX_NONE); /* out of the heap, still known */
    qindex_del(&x, qindex_find(&x, id));
    CHECK(qindex_find(&x, id) == QINDEX_NONE);
  }
  CHECK(x.count == 0 && x.heapn == 0);

  /* random operations against the model */
  for (op = 0; op < 200000; op++) {
    unsigned k = (unsigned)(rnd() % N), what = (unsigned)(rnd() % 8);
    idof(id, k);
    if (!m[k].present) {
      uint32_t s = qindex_add(&x, id);
      CHECK(s != QINDEX_NONE);
      m[k].present = 1, m[k].slot = s, m[k].inheap = 0;
      present++;
      if (what < 6) {
        m[k].next = rnd() % 100000;
        qindex_push(&x, s, m[k].next);
        m[k].inheap = 1, inheap++;
      }
      continue;
    }
    CHECK(qindex_find(&x, id) == m[k].slot);
    if (what == 0) { /* delete */
      qindex_del(&x, m[k].slot);
      if (m[k].inheap) inheap--;
      m[k].present = m[k].inheap = 0;
      present--;
    } else if (what <= 3) { /* reschedule, in the heap or not */
      m[k].next = rnd() % 100000;
      qindex_reset(&x, m[k].slot, m[k].next);
      if (!m[k].inheap) inheap++;
      m[k].inheap = 1;
    } else if (what == 4) { /* take out (loaded) */
      qindex_unqueue(&x, m[k].slot);
      if (m[k].inheap) inheap--;
      m[k].inheap = 0;
    } else if (what == 5) { /* pop the first due and check it is a minimum */
      uint32_t s = qindex_top(&x);
      if (s != QINDEX_NONE) {
        unsigned j;
        uint64_t min = UINT64_MAX;
        for (j = 0; j < N; j++)
          if (m[j].present && m[j].inheap && m[j].next < min) min = m[j].next;
        CHECK(x.slot[s].next == min);
        qindex_unqueue(&x, s);
        for (j = 0; j < N; j++)
          if (m[j].present && m[j].slot == s) m[j].inheap = 0;
        inheap--;
      }
    }
    if (op % 10000 == 0) {
      unsigned j;
      CHECK(heap_ok(&x));
      CHECK(x.count == present && x.heapn == inheap);
      for (j = 0; j < N; j++) {
        char b[QUEUE_ID_MAX];
        idof(b, j);
        CHECK(m[j].present ? qindex_find(&x, b) == m[j].slot : qindex_find(&x, b) == QINDEX_NONE);
        if (m[j].present) CHECK((x.slot[m[j].slot].heapidx != QINDEX_NONE) == m[j].inheap);
        if (m[j].present && m[j].inheap) CHECK(x.slot[m[j].slot].next == m[j].next);
      }
    }
  }
  CHECK(heap_ok(&x));
  CHECK(x.nslots <= N); /* slots are reused */
  CHECK(qindex_add(&x, "0123456789012345678901234567890123456789012345678901234567890123") ==
        QINDEX_NONE); /* too long for an id */
  qindex_free(&x);
  return CHECK_DONE();
}
