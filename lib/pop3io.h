/* pop3io: the session I/O of pop3-serve and pop3-maildir.
 *
 * One input buffer and one output buffer, both static (no allocation): command lines are read
 * with an idle deadline (the autologout timer) and a bounded length; replies are buffered and
 * written in large writes, flushed only when the client has nothing more pipelined (or the
 * buffer is full), with a deadline on each write's progress. The fds are made non-blocking.
 * The buffers and the waits are a lib/timedio session's.
 */
#ifndef PILLARBOX_POP3IO_H
#define PILLARBOX_POP3IO_H

#include <stddef.h>

#define POP3IO_IBUF 1024  /* input buffer: a command line or an AUTH continuation line */
#define POP3IO_OBUF 32768 /* output buffer */

/* Results of pop3io_getline besides 1 (a line). */
#define POP3IO_EOF 0
#define POP3IO_ERR (-1)     /* read error, errno set */
#define POP3IO_TIMEOUT (-2) /* idle deadline passed */

/* Sets the fds (non-blocking) and the idle timeout in seconds. */
int pop3io_init(int rfd, int wfd, unsigned int timeout);

/* The session rests (lib/timedio's timedio_onrest) after TIMEDIO_REST_MS of waiting for the
 * client: its spent buffer pages are given back, then rest() runs (0: never). */
void pop3io_onrest(void (*rest)(void));

/* Drops whatever input is buffered (after STLS). */
void pop3io_discard(void);

/* Forgets the session's buffered input and output (a pool worker between two sessions). */
void pop3io_forget(void);

/* Puts bytes in front of the input (the pipelined rest handed over by pop3-serve). Returns 1,
 * or 0 if they do not fit. */
int pop3io_preload(char const *s, size_t len);

/* The buffered, not yet consumed input. */
size_t pop3io_pending(char const **s);

/* The hand-over of that input to the post-login program through the environment ($POP3_INPUT):
 * lower-case hex, two digits per byte, so that every byte (a NUL too) crosses an exec.
 * pop3io_pending_hex writes the pending input as hex into out (room for 2 * POP3IO_IBUF + 1)
 * with a final NUL and returns the hex length; pop3io_preload_hex puts the decoded bytes in
 * front of the input: 1, or 0 if the text is not hex or does not fit. */
size_t pop3io_pending_hex(char *out);
int pop3io_preload_hex(char const *hex);

/* Reads one line (up to and including LF) of at most max bytes. Flushes the output before
 * waiting. line and len get the line; a longer line is discarded up to its LF and reported with
 * *len = max + 1 (its bytes are not given). Returns 1, POP3IO_EOF, POP3IO_ERR or
 * POP3IO_TIMEOUT. */
int pop3io_getline(char **line, size_t *len, size_t max);

/* pop3io_getline for a command line (at most POP3IO_IBUF bytes); on POP3IO_TIMEOUT it has
 * also said "-ERR autologout: idle for too long" and flushed the output. */
int pop3io_getcmd(char **line, size_t *len);

/* Output. Each returns 1, or 0 on a write error or timeout (errno set). */
int pop3io_put(char const *s, size_t len);
int pop3io_puts(char const *s);
int pop3io_flush(void);
/* Room for direct writing: returns a pointer to at least min free bytes (flushing if needed)
 * and sets *avail; then pop3io_commit(n) after writing n bytes. NULL on error. */
char *pop3io_room(size_t min, size_t *avail);
void pop3io_commit(size_t n);

#endif
