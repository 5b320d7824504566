/* imapio: the session I/O of imap-serve and imap-maildir.
 *
 * One static input buffer, one static output buffer. A command is read whole, literals
 * included, into a caller's stralloc (imapio_readcmd): each line is bounded, a synchronising
 * literal gets its "+ " continuation only once it is known to be acceptable, and one over the
 * limit is refused before any of its octets is read. The literals of an APPEND are not kept in
 * memory but written to a file the caller opens (spooling). Replies are buffered and written
 * when the client has nothing more pipelined or the buffer is full; every wait has a deadline.
 * The buffers, the waits and the layer are a lib/timedio session's.
 */
#ifndef PILLARBOX_IMAPIO_H
#define PILLARBOX_IMAPIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <skalibs/stralloc.h>
#include "imap_parse.h"
#include "timedio.h"

#define IMAPIO_IBUF 16384
#define IMAPIO_OBUF 65536
#define IMAPIO_LINE_MAX 65536   /* octets of one command line */
#define IMAPIO_CMD_MAX 262144   /* octets of a whole command kept in memory, literals included */
#define IMAPIO_LITPLUS_MAX 4096 /* LITERAL-: non-synchronising literals accepted up to this */
#define IMAPIO_SPOOL_MIN 4096   /* APPEND literals above this go to a file, not to memory */

/* Results of imapio_readcmd besides 1 */
#define IMAPIO_EOF 0
#define IMAPIO_ERR (-1)      /* read error */
#define IMAPIO_TIMEOUT (-2)  /* idle deadline passed */
#define IMAPIO_TOOLONG (-3)  /* a line over IMAPIO_LINE_MAX: dropped up to its end */
#define IMAPIO_TOOBIG (-4)   /* a synchronising literal over the limit: refused, not read */
#define IMAPIO_FATAL (-5)    /* a non-synchronising literal over the limit: hang up */
#define IMAPIO_BADLIT (-6)   /* a malformed literal announcement ({n-}, huge number) */

/* How a command's literals are kept: spool_open is called for each literal of a command whose
 * name is APPEND and that are over IMAPIO_SPOOL_MIN octets; it returns an fd to write the octets to
 * (or -1: the octets are read and dropped, and spool_failed is set). max_literal bounds an APPEND
 * literal; other literals count against IMAPIO_CMD_MAX. */
typedef struct imapio_spool_s imapio_spool;
struct imapio_spool_s {
  int (*spool_open)(void *ctx, uint64_t size);
  void *ctx;
  uint64_t max_literal;
  int fd[IMAP_SPOOL_MAX];  /* out: the fds of this command's spooled literals */
  int spool_failed;        /* out */
};

/* A layer between the buffers and the descriptors (lib/deflateio: COMPRESS=DEFLATE): lib/timedio's
 * (read through the layer, input held in it, output turned into what is written). 0: plain. */
typedef timedio_layer imapio_layer;
void imapio_setlayer(imapio_layer const *l);

int imapio_init(int rfd, int wfd, unsigned int timeout);
/* The session rests (lib/timedio's timedio_onrest) after TIMEDIO_REST_MS of waiting for the
 * client, under IDLE too: its spent buffer pages are given back, then rest() runs (0: never). */
void imapio_onrest(void (*rest)(void));
/* Bounds imapio_readcmd tighter than IMAPIO_CMD_MAX (imap-serve before login): a command with
 * its literals at most cmdmax octets, an unspooled literal at most litmax. */
void imapio_setlimits(size_t cmdmax, uint64_t litmax);
void imapio_settimeout(unsigned int timeout);
void imapio_discard(void);
void imapio_forget(void); /* input (wiped) and output dropped: between two pool sessions */
int imapio_preload(char const *s, size_t len);
size_t imapio_pending(char const **s);

/* Reads one command into cmd (replacing its contents) and fills c->nspool / c->spool_at for
 * imap_parse. Returns 1, or one of IMAPIO_*. On IMAPIO_TOOBIG and IMAPIO_BADLIT cmd holds the
 * command up to the literal (so the caller can answer with its tag). */
int imapio_readcmd(stralloc *cmd, imap_cmd *c, imapio_spool *sp);

/* Reads one line (a SASL response, "DONE" after IDLE) into line, at most max octets (CRLF
 * removed). Returns 1, or IMAPIO_*. */
int imapio_readline(stralloc *line, size_t max);

/* 1 if input is buffered. */
int imapio_buffered(void);

/* Waits until input arrives (1), fd becomes readable (2), or the deadline in milliseconds
 * from now passes (0); flushes output first. fd may be -1. -1 on error. */
int imapio_wait(int fd, unsigned long ms);

int imapio_put(char const *s, size_t len);
int imapio_puts(char const *s);
int imapio_putu(uint64_t u);
int imapio_flush(void);

#endif
