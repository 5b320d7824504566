/* inject: the client side of queue injection, for every program that queues a message
 * (smtp-receive, sendmail, queue-inject-ipc -c, later the web program).
 *
 * It owns: choosing the way in ($QUEUE_INJECT, read here and nowhere else); speaking the
 * injection socket (MAILROOT/queue/inject.sock, served by s6-ipcserver running
 * queue-inject-ipc) in-process, with the session facts; or starting a qmail-queue chain
 * (message on its fd 0, envelope on its fd 1, queue id on fd 3 = $QUEUE_IDFD); feeding the
 * message and the envelope with a time bound per I/O; reading the queue id; and mapping the
 * result to an SMTP reply.
 *
 * The way in, from $QUEUE_INJECT:
 *   "socket" or "socket:PATH"  the injection socket (default path MAILROOT/queue/inject.sock)
 *   any other non-empty value  a command line (split on white space): a qmail-queue chain
 *   unset or empty             the socket when it exists and answers; else queue-inject when
 *                              the caller owns MAILROOT/queue (one uid for everything, tests)
 *                              or is root (lib/queue gives the file to the queue's owner, so
 *                              the queue holds only its owner's files either way); otherwise
 *                              the socket (which then fails as temporary)
 *
 * Socket framing (doc/queue-inject-ipc.8): optional "S" + netstring of facts ("name=value\n"
 * lines; the server then answers "I" ID "\n" at once, ID the queue id or empty), the message as
 * netstrings of at most 65536 bytes, "0:,", the envelope as one netstring; the server answers
 * one line "CODE ID\n" (CODE: queue-inject's exit code).
 *
 * The caller must ignore SIGPIPE (writes to a chain's pipes may hit a dead reader).
 */
#ifndef PILLARBOX_INJECT_H
#define PILLARBOX_INJECT_H

#include <stddef.h>
#include <sys/types.h>
#include <skalibs/stralloc.h>

#define INJECT_ID_MAX 128
#define INJECT_CHUNK 32768     /* bytes of message buffered per netstring (socket) */
#define INJECT_FACTS_MAX 4096  /* bytes of facts in the "S" netstring */

/* The facts of the session the message came in on. NULL or "" fields are left out. */
typedef struct inject_facts_s inject_facts;
struct inject_facts_s {
  char const *service; /* smtpd, submission, smtps, local, web */
  char const *ip;      /* the client's address */
  char const *helo;
  char const *user;    /* the authenticated account */
  char const *tls;     /* "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256" */
  int relay;           /* the client may relay (RELAYCLIENT) */
};
#define INJECT_FACTS_ZERO {0, 0, 0, 0, 0, 0}

#define INJECT_CHAIN 1
#define INJECT_SOCKET 2

typedef struct injector_s injector;
struct injector_s {
  int mode;            /* INJECT_CHAIN or INJECT_SOCKET */
  unsigned int timeout; /* seconds per I/O wait */
  pid_t pid;           /* chain: the first program */
  int msgfd, envfd, idfd; /* chain: its fd 0, fd 1, fd 3 (our ends) */
  int msgw, envw;      /* chain: read ends kept, to see what it left unread */
  int pidfd;           /* chain: readable when it exits (-1: not available) */
  int sock;            /* socket */
  int broken;          /* it stopped reading, exited or timed out before it had everything */
  int idclosed, reaped, wstat;
  int early;           /* the queue tells the id before it reads: 1 a lone queue-inject,
                        * 2 the socket (after facts) */
  char id[INJECT_ID_MAX];
  size_t idlen;
  size_t blen;         /* socket: bytes in buf */
  size_t rlen;         /* socket: bytes of the server's answer lines read ahead in rbuf */
  char rbuf[2 * (INJECT_ID_MAX + 8)];
  char buf[INJECT_CHUNK];
};

/* Result of inject_commit besides the qmail-queue exit codes (0, 11..91). */
#define INJECT_UNREAD (-1)  /* claimed success without reading all: treat as temporary */

/* Starts an injection: connects to the socket (sending the facts, f may be NULL) or starts
 * the chain. timeout: seconds per I/O wait. Returns 1, or 0 (nothing started; errno set). */
int inject_start(injector *j, inject_facts const *f, unsigned int timeout);

/* The same, always over the socket at path (queue-inject-ipc -c PATH). */
int inject_start_socket(injector *j, char const *path, inject_facts const *f, unsigned int timeout);

/* The queue id before the message is sent, when the queue tells it early (queue-inject run
 * alone, or through the socket after the facts): waits one I/O timeout at most. Returns 1 with
 * the id in id, 0 when none comes (a chain of hooks in front of queue-inject, no facts, an
 * error: the message can still be sent). */
int inject_early_id(injector *j, stralloc *id);

/* Feeds message bytes (LF line ends). A broken injector swallows them (j->broken set). */
void inject_write(injector *j, char const *s, size_t n);

/* Ends the message, sends the envelope env[0..envlen) ("F"sender"\0"("T"rcpt"\0")..."\0"),
 * waits for the answer. Returns the qmail-queue exit code (0 queued), INJECT_UNREAD, or 111
 * on trouble; the queue id (printable bytes only) goes to id. Everything is closed after. */
int inject_commit(injector *j, char const *env, size_t envlen, stralloc *id);

/* Abandons the message: nothing is committed. Safe on a zeroed or finished injector. */
void inject_abort(injector *j);

/* Is code (from inject_commit) a permanent refusal? (11..40 and 91) */
int inject_permanent(int code);

/* The SMTP reply for code: 250 2.0.0, 554 5.3.0 (permanent) or 451 4.3.0. Sets *ecode and
 * *text (static strings). Returns the reply code. */
unsigned int inject_reply(int code, char const **ecode, char const **text);

#endif
