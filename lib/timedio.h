/* timedio: reads and writes on non-blocking fds, every wait bounded by a deadline.
 *
 * Two levels:
 *   - fd level, for code that keeps its own buffers (smtp-send, lib/tlsclient's BearSSL
 *     callbacks, lib/smtpd): timedio_wait is the one "wait until readable or writable or the
 *     deadline" loop of the tree; timedio_fdread / timedio_fdwrite wrap read(2) / write(2) in it.
 *   - session level: a timedio holds a read fd and a write fd with an input and an output
 *     buffer (the caller's), for line-oriented protocol programs; lib/pop3io and lib/imapio
 *     are built on it. The fds are plain (0 and 1 from tcpserver or tls-serve) or, after
 *     STARTTLS, UCSPI-TLS's SSLREADFD and SSLWRITEFD: timedio_setfds switches and drops every
 *     buffered input byte (RFC 3207 4.2, the STARTTLS injection).
 *
 * Deadlines are absolute skalibs tains (timedio_timeout sets now + seconds), or each wait's
 * own (timedio_idle: the idle timer of POP3 and IMAP). A wait that reaches the deadline fails
 * with errno ETIMEDOUT. EINTR is retried (skalibs' buffer_timed_fill returns it, which would
 * end a session on every SIGCHLD). Lines are bounded: a line longer than the caller's maximum
 * is dropped through its LF and reported as such, never returned in pieces. No allocation: a
 * timedio and its buffers are static objects.
 */
#ifndef PILLARBOX_TIMEDIO_H
#define PILLARBOX_TIMEDIO_H

#include <stddef.h>
#include <sys/types.h>
#include <skalibs/tai.h>

#define TIMEDIO_IBUF 4096  /* a session's input buffer for SMTP-sized lines */
#define TIMEDIO_OBUF 16384 /* and its output buffer */

#define TIMEDIO_TOOLONG (-2) /* timedio_getline: the line was longer than max (dropped) */

/* Waits until fd is readable (forwrite 0) or writable (forwrite 1). Returns 1, or -1 on error
 * or when the deadline passes (errno ETIMEDOUT). */
int timedio_wait(int fd, int forwrite, tain const *deadline);

/* timedio_wait that also watches xfd for reading (imap-maildir's IDLE: the client or a
 * change in the folder): 1 when fd is ready, 2 when xfd is readable and fd is not, -1 as
 * timedio_wait. xfd < 0: timedio_wait. */
int timedio_wait2(int fd, int forwrite, int xfd, tain const *deadline);

/* read(2) on a non-blocking fd, waiting up to the deadline: > 0 bytes, 0 EOF, -1 error or
 * timeout (errno ETIMEDOUT). */
ssize_t timedio_fdread(int fd, char *buf, size_t len, tain const *deadline);

/* Writes all of s, waiting up to the deadline: 1, or 0 on error or timeout (errno). */
int timedio_fdwrite(int fd, char const *s, size_t len, tain const *deadline);

/* A layer between a session's buffers and its fds (lib/deflateio: IMAP COMPRESS=DEFLATE).
 * read is read(2) of the input fd through the layer (EAGAIN when nothing is there); pending
 * says the layer holds input that read returns without the fd being readable; out turns the
 * output about to be written into what is written (1, or 0 with errno). */
typedef struct timedio_layer_s timedio_layer;
struct timedio_layer_s {
  ssize_t (*read)(int fd, char *buf, size_t len);
  int (*pending)(void);
  int (*out)(char const *s, size_t len, char const **z, size_t *zlen);
};

/* The session: the caller's input and output buffers (static arrays of the size it wants:
 * lib/pop3io and lib/imapio are this with their own sizes), the fds, the deadline, an
 * optional layer. The fields are readable by the protocol modules built on it, which parse
 * ibuf[ipos..ilen) in place; only these functions move data. */
typedef struct timedio_s timedio;
struct timedio_s {
  int rfd, wfd;
  tain deadline;     /* of every wait, when idle is 0 */
  unsigned int idle; /* seconds: each wait's deadline is now + idle (an autologout timer) */
  timedio_layer const *layer;
  char *ibuf, *obuf;
  size_t isize, osize;
  size_t ipos, ilen, olen;
  void (*rest)(void); /* timedio_onrest */
  unsigned int restms;
};

#define TIMEDIO_TIMEOUT (-3) /* timedio_fill: the wait for input passed its deadline */

/* Sets the buffers and the fds (made non-blocking; TCP_NODELAY on a socket wfd, as replies are
 * written whole), empties the buffers, no layer; the deadline is "now + 300 s" until set.
 * Returns 1, or 0 (errno). */
int timedio_init(timedio *t, int rfd, int wfd, char *ibuf, size_t isize, char *obuf,
                 size_t osize);

/* Switches to other fds (STARTTLS): flushes nothing, DROPS the buffered input. 1 or 0.
 * timedio_usefds keeps the buffers: for a session set up statically (the buffers in the
 * initialiser) whose input may be preloaded before its fds are set. */
int timedio_setfds(timedio *t, int rfd, int wfd);
int timedio_usefds(timedio *t, int rfd, int wfd);

/* The deadline of the waits that follow: now + secs, or an absolute one; timedio_idle(t, secs)
 * gives each wait its own deadline, now + secs (0: back to the one deadline). */
void timedio_timeout(timedio *t, unsigned int secs);
void timedio_deadline(timedio *t, tain const *deadline);
void timedio_idle(timedio *t, unsigned int secs);
void timedio_setlayer(timedio *t, timedio_layer const *layer);

/* When a wait for input has lasted ms milliseconds with nothing arriving (the client is
 * thinking, or holds the session open), the session rests: the whole pages of its buffers
 * that hold nothing (all of the output buffer, which is flushed before any wait, and the input
 * buffer behind its unread bytes) are given back (lib/pagedrop), then rest() is called (the
 * program's own: its text, its spent buffers, lib/pagedrop), once per wait. A client that
 * keeps the session busy never waits that long, so pays nothing. rest 0: never. */
void timedio_onrest(timedio *t, void (*rest)(void), unsigned int ms);
#define TIMEDIO_REST_MS 100 /* the rest of a session's waits (lib/pop3io, lib/imapio) */

/* Reads one line, LF included, of at most max bytes (max <= TIMEDIO_IBUF). Flushes the output
 * before it waits for input. Returns 1 with the line in line[0..*len) (not NUL-terminated),
 * 0 at EOF (a last line without LF is dropped), -1 on error or timeout (errno ETIMEDOUT), or
 * TIMEDIO_TOOLONG when the line was longer than max (it has been read and dropped). */
int timedio_getline(timedio *t, char *line, size_t max, size_t *len);

/* timedio_getline without the copy: *line points into the input buffer (valid until the next
 * read), max is bounded by the buffer's size, and a timeout is TIMEDIO_TIMEOUT. */
int timedio_getline_in(timedio *t, char **line, size_t max, size_t *len);

/* Reads up to len bytes, the buffered ones first (a DATA body, a literal). > 0, 0 EOF, -1. */
ssize_t timedio_read(timedio *t, char *buf, size_t len);

/* Reads more input behind what is buffered (moved to the front of the buffer), flushing the
 * output first: > 0, 0 EOF (or a full buffer), -1 error (a flush that timed out too),
 * TIMEDIO_TIMEOUT. */
ssize_t timedio_fill(timedio *t);

/* The count of buffered input bytes not yet consumed (the client pipelined); timedio_input
 * also points *s at them. timedio_buffered: input is buffered here or in the layer. */
size_t timedio_pending(timedio const *t);
size_t timedio_input(timedio const *t, char const **s);
int timedio_buffered(timedio const *t);

/* Between two sessions of a pool worker: the buffered input (wiped: a password may be in it)
 * and output dropped. */
void timedio_forget(timedio *t);

/* Drops the buffered input; puts len bytes in front of it (input handed over from another
 * program): 1, or 0 if they do not fit. */
void timedio_discard(timedio *t);
int timedio_preload(timedio *t, char const *s, size_t len);

/* Waits for input (1 at once if some is buffered), or for xfd (-1: none) to be readable (2),
 * until the deadline (0); flushes the output first. -1 on error. */
int timedio_waitinput(timedio *t, int xfd, tain const *deadline);

/* Output through the buffer; each returns 1, or 0 on a write error or timeout (errno). */
int timedio_put(timedio *t, char const *s, size_t len);
int timedio_puts(timedio *t, char const *s);
int timedio_flush(timedio *t);

/* Room for writing in place: a pointer to at least min free bytes (min <= the buffer's size;
 * flushing if needed), *avail set; then timedio_commit(t, n) after writing n bytes. NULL on
 * error. */
char *timedio_room(timedio *t, size_t min, size_t *avail);
void timedio_commit(timedio *t, size_t n);

#endif
