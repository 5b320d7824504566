/* pagedrop: unmapping the pages a waiting session does not need (pagedrop.h). */
#define _GNU_SOURCE /* dl_iterate_phdr; madvise(MADV_DONTNEED): posix_madvise ignores it */
#include <link.h>
#include <poll.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pagedrop.h"

/* Called through the GOT, not the PLT: the PLT is in the program's text, which is dropped. */
extern int madvise(void *, size_t, int) __attribute__((noplt));
extern int poll(struct pollfd *, nfds_t, int) __attribute__((noplt));

/* Octets of this file's pagedrop_poll kept mapped from its start: it is under 1 kB (762 with
 * gcc 12 -O2), over 4 kB when ASan instruments it; a page it spans and we dropped would be
 * faulted back in the wait, with its neighbours (fault-around: 64 kB). */
#ifdef __SANITIZE_ADDRESS__
#define SELF_SPAN 6144
#else
#define SELF_SPAN 1024
#endif

#define RANGES 32 /* read-only segments collected (a session program has about 10) */
typedef struct segs_s segs;
struct segs_s {
  uintptr_t vdso;
  unsigned int n;
  uintptr_t lo[RANGES], hi[RANGES];
};

static uintptr_t pagesize(void)
{
  static uintptr_t ps;
  if (!ps) {
    long n = sysconf(_SC_PAGESIZE);
    ps = n > 0 ? (uintptr_t)n : 4096;
  }
  return ps;
}

/* [lo, hi) rounded inwards to whole pages. Inlined: it runs while the text is dropped. */
__attribute__((always_inline)) static inline void drop(uintptr_t lo, uintptr_t hi, uintptr_t ps)
{
  lo = (lo + ps - 1) & ~(ps - 1);
  hi &= ~(ps - 1);
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static int object(struct dl_phdr_info *info, size_t size, void *x)
{
  segs *g = x;
  ElfW(Half) i;
  (void)size;
  if (g->vdso && info->dlpi_addr == g->vdso) return 0; /* no file behind it */
  for (i = 0; i < info->dlpi_phnum && g->n < RANGES; i++) {
    ElfW(Phdr) const *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W)) continue;
    g->lo[g->n] = info->dlpi_addr + ph->p_vaddr;
    g->hi[g->n++] = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
  }
  return 0;
}

int pagedrop_poll(struct pollfd *fds, nfds_t n, int ms)
{
  segs g;
  uintptr_t ps = pagesize(), keep[3], keepend[3];
  unsigned int i, j;
  g.vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
  g.n = 0;
  (void)dl_iterate_phdr(&object, &g);
  /* What runs from the first madvise to the end of the wait stays mapped: this function (the
   * pages of its first SELF_SPAN octets) and the code of madvise and poll in libc (the page of
   * each start, and the next one when the start is within 1 kB of a page's end: neither is
   * longer). Were one more page touched, it would only come back with its neighbours
   * (fault-around): memory, never correctness.
   * Ranges are rounded inwards: a page that a read-only segment would share with a writable
   * one (a linker that packs them) keeps its relocated data. */
  keep[0] = (uintptr_t)&pagedrop_poll;
  keep[1] = (uintptr_t)&madvise;
  keep[2] = (uintptr_t)&poll;
  for (i = 0; i < 3; i++) {
    keepend[i] = (keep[i] + (i ? 1024 : SELF_SPAN) + ps - 1) & ~(ps - 1);
    keep[i] &= ~(ps - 1);
  }
  for (i = 1; i < 3; i++)
    for (j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
      uintptr_t t = keep[j], te = keepend[j];
      keep[j] = keep[j - 1];
      keepend[j] = keepend[j - 1];
      keep[j - 1] = t;
      keepend[j - 1] = te;
    }
  for (i = 0; i < g.n; i++) {
    uintptr_t lo = g.lo[i], hi = g.hi[i];
    for (j = 0; j < 3 && lo < hi; j++) {
      if (keepend[j] <= lo || keep[j] >= hi) continue;
      if (keep[j] > lo) drop(lo, keep[j], ps);
      lo = keepend[j];
    }
    if (lo < hi) drop(lo, hi, ps);
  }
  return poll(fds, n, ms);
}

void pagedrop_buf(void *p, size_t len)
{
  drop((uintptr_t)p, (uintptr_t)p + len, pagesize());
}

void pagedrop_file(void const *p, size_t len)
{
  uintptr_t ps = pagesize(), lo = (uintptr_t)p & ~(ps - 1);
  drop(lo, ((uintptr_t)p + len + ps - 1) & ~(ps - 1), ps); /* a mapping ends on a page */
}

void pagedrop_stack(void)
{
  volatile char here = 0;
  uintptr_t top = (uintptr_t)&here, margin = 4 * pagesize();
  /* The pages below this frame, less a margin for the calls that follow; the range may start
   * below the stack's mapping (madvise then applies to the mapped part and says ENOMEM). */
  if (top > margin + (1u << 20)) drop(top - margin - (1u << 20), top - margin, pagesize());
}
