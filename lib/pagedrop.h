/* pagedrop: a session that waits for its client gives pages back.
 *
 * A logged-in IMAP or POP3 session spends most of its life waiting. While it waits it needs
 * none of its program text, and none of the pages of a buffer whose contents are spent; both
 * count in its PSS (a program's text is mapped by fault-around, 64 kB at a time, as soon as
 * one instruction of it runs). These functions unmap such pages (MADV_DONTNEED):
 *   - pagedrop_poll: poll(2), after unmapping the read-only segments of every loaded object
 *     (the program, libc, the loader). They are clean file pages: they stay in the page cache
 *     and are mapped again, by the same faults as at the start, when the process runs on
 *     (about 10 faults for a command). Only the few pages that the wait itself runs on stay
 *     mapped, so that nothing faults them back (with fault-around) before the wait begins.
 *     Writable segments (relocated data) are never touched.
 *   - pagedrop_buf: the whole pages inside a buffer (static or heap) whose contents are dead:
 *     they are freed, and read back as zeros.
 *   - pagedrop_file: the pages of a read-only file mapping (a mailbox's record or cache),
 *     which come back from the page cache when they are read again.
 *   - pagedrop_stack: the stack below the caller's frame (less a margin), which an earlier
 *     deep call left resident.
 * An error of madvise leaves the pages where they were; nothing else fails.
 */
#ifndef PILLARBOX_PAGEDROP_H
#define PILLARBOX_PAGEDROP_H

#include <poll.h>
#include <stddef.h>

int pagedrop_poll(struct pollfd *fds, nfds_t n, int ms);
void pagedrop_buf(void *p, size_t len);
void pagedrop_file(void const *p, size_t len);
void pagedrop_stack(void);

#endif
