/* smtpd: the session layer of an SMTP server (smtp-receive): one session per process.
 *
 * It owns: the client's bytes in and the replies out, every wait bounded (lib/timedio's wait:
 * an idle timeout per I/O and a session deadline, both ending the session with 421 4.4.2);
 * command lines bounded by a maximum (longer ones skipped through their LF); the error count
 * (replies 4xx/5xx but 452 and 354); the pipelining check (input the client sent before it
 * should have waited, RFC 2920); STARTTLS's switch to the UCSPI-TLS fds, dropping what was
 * pipelined in clear (RFC 3207 4.2); the AUTH dialogue's 334 exchange (lib/saslserv); and the
 * end of the session (a hook logs it, then _exit; or, in a pool worker (lib/tcppool), a jump
 * back to the worker's loop when the session ended cleanly). The state machine (which command
 * when) is the program's: bin/smtp-receive.c.
 */
#ifndef PILLARBOX_SMTPD_H
#define PILLARBOX_SMTPD_H

#include <setjmp.h>
#include <stddef.h>
#include <skalibs/gccattributes.h>
#include <skalibs/stralloc.h>

#include "saslserv.h"

#define SMTPD_IBUF 4096

extern unsigned long smtpd_errors;  /* error replies so far */

/* The client's name for Received: when SMTP_RDNS is set (port 25; not 0) and TCPREMOTEIP is:
 * a forward-confirmed reverse lookup of ip, bounded in time (dns.h's dns_client_name), since
 * tcpserver's own lookup (no -H) cannot be bounded. 0 when off, none or unconfirmed. */
char const *smtpd_client_name(char const *ip);

/* Sets up on infd/outfd (made non-blocking): timeout seconds per wait, sessionmax seconds in
 * all; atexit(code, why) is called by smtpd_quit before the process exits. 1, or 0 (errno). */
int smtpd_init(int infd, int outfd, unsigned int timeout, unsigned int sessionmax,
               void (*atexit)(int code, char const *why));

/* Flushes the replies, calls the hook, exits with code; with a jump set (smtpd_keepalive)
 * and code 0, jumps there instead. */
void smtpd_quit(int code, char const *why) gccattr_noreturn;

/* A pool worker serves the next session after this one: a session that ends with code 0
 * (QUIT, the client gone, a timeout, a 421 of smtpd_die) siglongjmps to *j (set with
 * sigsetjmp) instead of exiting; any other code still exits (the pool starts another worker). */
void smtpd_keepalive(sigjmp_buf *j);

/* Forgets the session's I/O: buffers emptied, the error count zeroed, the TLS fds (when they
 * are not 0 and 1) closed, the AUTH line wiped. For the next session of a pool worker. */
void smtpd_reset(void);

/* Replies (lib/smtp's smtp_reply): a last line, a line of a multi-line reply, a last reply
 * before closing the session (exit 0). */
void smtpd_reply(unsigned int code, char const *ecode, char const *text);
void smtpd_reply_more(unsigned int code, char const *ecode, char const *text);
void smtpd_die(unsigned int code, char const *ecode, char const *text,
               char const *why) gccattr_noreturn;

/* Sends the replies now. */
void smtpd_flush(void);

/* The unread input: at least one byte after smtpd_fill (0 at EOF), then smtpd_consume. */
size_t smtpd_fill(void);
char const *smtpd_input(void);
void smtpd_consume(size_t n);

/* Reads one command line into line (without CR LF, NUL-terminated). 1, 0 on EOF, -1 when it
 * was longer than max (skipped through its LF). */
int smtpd_getline(stralloc *line, size_t max);

/* Has the client sent bytes we have not answered yet? Waits up to waitms for them first. */
int smtpd_pending(unsigned long waitms);

/* STARTTLS after "220 Ready": hands over to the UCSPI-TLS sidecar and switches to its fds,
 * forgetting any input pipelined in clear. 1, or 0 (the handshake failed). */
int smtpd_starttls(void);

/* The AUTH dialogue: sends each challenge as "334 TEXT" and reads the answers (at most
 * SASL_RESPONSE_MAX bytes a line). Returns saslserv's final result (SASLSERV_DONE with the
 * credentials in s, or an error); the caller wipes s. */
int smtpd_sasl(saslserv *s, char const *arg, size_t len);

/* Counts a login attempt from ip BEFORE its password check (lib/authfail), so parallel
 * guesses all count. 1 go on, 0 over the limit (answered 454 4.7.0). */
int smtpd_auth_attempt(char const *ip);

/* After a good password for user[0..len) from ip: takes the attempt back and sets *out to
 * the account's address (folded; NUL-terminated, the NUL not counted in out->len), or to the
 * login name itself when it names no account. */
void smtpd_auth_ok(char const *ip, char const *user, size_t len, stralloc *out);

/* The SMTP reply for a saslserv error result: its code (0 for SASLSERV_DONE and
 * SASLSERV_EAUTHZ, which are the caller's). */
unsigned int smtpd_sasl_error(int result, char const **ecode, char const **text);

/* AUTH ARG, once the caller's policy allows it (TLS or plaintext allowed, offered, nobody
 * logged in): refused with 454 while ip is blocked (lib/authfail); the dialogue
 * (smtpd_sasl); each attempt counted before its check; the check (lib/checkpw). A good
 * login: 235, its account into *user (as smtpd_auth_ok). A bad one: 535, ++*failures, 421
 * and the end of the session at the third, else a pause of delay times *failures seconds.
 * No decision (the auth service down): 454, not counted. s is wiped. */
void smtpd_auth(saslserv *s, char const *arg, size_t len, char const *ip, unsigned long delay,
                unsigned int *failures, stralloc *user);

/* For the log: the first max recipients of rcpts[0..len) (each a kind byte, the address, NUL)
 * as "<a>,<b>,...", NUL-terminated, into *out. */
void smtpd_rcptlist(stralloc *out, char const *rcpts, size_t len, unsigned int max);

#endif
