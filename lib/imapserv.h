/* imapserv: imap-serve's pre-login dialogue (RFC 3501 / 9051 not-authenticated state), for
 * one connection on fd 0/1 (UCSPI).
 *
 * Owns: the greeting with its CAPABILITY, CAPABILITY, STARTTLS (UCSPI-TLS, lib/ucspitls; what
 * the client pipelined in plaintext is dropped), LOGIN, AUTHENTICATE PLAIN / LOGIN with SASL-IR
 * (lib/saslserv), ID, NOOP, LOGOUT; LOGINDISABLED and no AUTH= outside TLS unless plaintext is
 * allowed on loopback; the bounds (a command with its literals at most IMAPSERV_CMD_MAX, a
 * literal at most IMAPSERV_LITERAL_MAX, refused before it is read), IMAPSERV_BAD_MAX refused
 * commands, IMAPSERV_FAILS_MAX failed logins per connection, failed logins per address counted
 * by lib/authfail before the check, connections per address capped (control/imap-peermax,
 * lib/connlimit), and one deadline for the whole dialogue.
 *
 * A login runs the checkpassword program cfg->progargv (e.g. `login-handoff imap` or
 * `auth-check imap-maildir`) with the credentials on fd 3, the client on fd 0/1, and
 * IMAP_TAG (the login command's tag: the session program answers it), IMAP_NOTIFYFD=4 (the
 * session writes one octet there once it runs) and IMAP_INPUT (what the client pipelined after
 * the login, hex-encoded) in its environment. From then on this process only waits for it
 * (or, as a tcp-pool worker, takes the next connection). It never opens a mailbox.
 */
#ifndef PILLARBOX_IMAPSERV_H
#define PILLARBOX_IMAPSERV_H

#include <setjmp.h>
#include <stddef.h>
#include <skalibs/gccattributes.h>
#include "imap_parse.h"

#define IMAPSERV_CMD_MAX 65536     /* octets of one command with its literals (ID: 30 pairs) */
#define IMAPSERV_LITERAL_MAX 4096  /* octets of one literal before login */
#define IMAPSERV_BAD_MAX 10        /* refused commands before we hang up */
#define IMAPSERV_FAILS_MAX 3       /* failed logins on one connection before we hang up */
#define IMAPSERV_AUTH_WAIT 30      /* seconds the checkpassword program may take to decide */

typedef struct imapserv_cfg_s imapserv_cfg;
struct imapserv_cfg_s {
  unsigned int timeout;            /* seconds for the whole pre-login dialogue */
  unsigned int faildelay;          /* seconds to wait before answering a failed login */
  int allow_plain;                 /* login without TLS allowed (on loopback only) */
  char const *ip;                  /* $TCPREMOTEIP, or NULL */
  char const *me;                  /* the host name for the greeting */
  char const *const *progargv;     /* the checkpassword program and its session program */
};

/* Serves the connection until LOGOUT, EOF, a limit, or the end of the logged-in session. */
void imapserv_run(imapserv_cfg const *cfg) gccattr_noreturn;

/* For a tcp-pool worker (imap-serve under tcp-pool): the end of a session (LOGOUT, EOF, the
 * login timeout, a login that runs its session) siglongjmps to j instead of exiting, and a
 * login does not wait for its session: login-handoff logs the logout and holds the
 * per-address slot (checkpw.h). Between two sessions imapserv_forget() drops what the last
 * one left (TLS, the failed logins, the bad commands, the buffers, the slot, an engine
 * connection, the alarm) and reaps the login programs of sessions that ended. */
void imapserv_keepalive(sigjmp_buf *j);
void imapserv_forget(void);

/* ---- pure helpers (unit-tested) ---- */

/* Capability flags */
#define IMAPSERV_TLS 1        /* the connection is in TLS */
#define IMAPSERV_STARTTLS 2   /* STARTTLS can be offered (a UCSPI-TLS sidecar is there) */
#define IMAPSERV_LOGINOK 4    /* login is allowed now (TLS, or plaintext allowed) */

/* The pre-login capability list for these flags (a static string). */
char const *imapserv_capabilities(unsigned int flags);

/* Is ip a loopback address ("127.x", "::1", "::ffff:127.x")? NULL: no. */
int imapserv_loopback(char const *ip);

/* LOGIN's arguments: exactly two astrings, each 1..SASL_FIELD_MAX octets without NUL. Sets
 * the pointers into c's buffer. 1 ok, 0 not. */
int imapserv_login_args(imap_cmd const *c, char const **user, size_t *ulen,
                        char const **pass, size_t *plen);

/* AUTHENTICATE's arguments as saslserv wants them, "MECH[ initial-response]", into out (room
 * for max octets). Returns the length, or 0 when the arguments are not one or two atoms or do
 * not fit. */
size_t imapserv_sasl_arg(imap_cmd const *c, char *out, size_t max);

/* Hex-encodes s[0..len) into out (room for 2 * len + 1 octets, NUL-terminated). */
void imapserv_hex(char *out, char const *s, size_t len);

#endif
