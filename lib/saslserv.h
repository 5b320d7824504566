/* saslserv: the server side of a SASL dialogue (RFC 4422), PLAIN (RFC 4616) and LOGIN, for
 * every protocol that authenticates: SMTP AUTH (RFC 4954), POP3 AUTH (RFC 5034), IMAP
 * AUTHENTICATE (RFC 3501), ManageSieve AUTHENTICATE.
 *
 * It owns the steps, not the wire: the protocol program passes the AUTH argument, then each
 * client response line; saslserv says whether to send a challenge (base64 text the program
 * frames as "334 TEXT", "+ TEXT", ...), to fail with which reason, or that the credentials are
 * complete. It checks the base64 (lib/sasl, strict), the initial response ("=" is empty), the
 * "*" cancel, and the bounds: a response line over SASL_RESPONSE_MAX, a decoded message over
 * SASL_DECODED_MAX, a field over SASL_FIELD_MAX. No I/O, no password check (lib/checkpw).
 */
#ifndef PILLARBOX_SASLSERV_H
#define PILLARBOX_SASLSERV_H

#include <stddef.h>

#include "sasl.h"

typedef struct saslserv_s saslserv;
struct saslserv_s {
  int mech;                        /* SASL_MECH_PLAIN or SASL_MECH_LOGIN */
  unsigned int step;
  size_t userlen, passlen;
  char user[SASL_FIELD_MAX + 1];   /* NUL-terminated when complete */
  char pass[SASL_FIELD_MAX + 1];
};

/* Results. */
#define SASLSERV_CHALLENGE 1   /* send *challenge (base64, maybe ""), then feed the reply line */
#define SASLSERV_DONE 0        /* user/pass complete: check them */
#define SASLSERV_ESYNTAX (-1)  /* bad AUTH argument: 501 5.5.4 / BAD */
#define SASLSERV_EMECH (-2)    /* mechanism not supported: 504 5.5.4 */
#define SASLSERV_ECANCEL (-3)  /* the client sent "*": 501 5.7.0 */
#define SASLSERV_EBASE64 (-4)  /* not strict base64: 501 5.5.2 */
#define SASLSERV_ETOOLONG (-5) /* over a bound: 500 5.5.6 */
#define SASLSERV_EMALFORMED (-6) /* PLAIN message or LOGIN field malformed: 501 5.5.2 */
#define SASLSERV_EAUTHZ (-7)   /* PLAIN authzid not the authcid: counts as a failed login, 535;
                                  user is the authcid (for the log), pass is empty */

/* Starts with the AUTH argument arg[0..len) ("MECH [initial-response]"). Returns a
 * SASLSERV_* result; with SASLSERV_CHALLENGE, *challenge is set. */
int saslserv_start(saslserv *s, char const *arg, size_t len, char const **challenge);

/* Feeds one client response line (without its CRLF). Same results. */
int saslserv_step(saslserv *s, char const *line, size_t len, char const **challenge);

/* Wipes the credentials. Call when done, whatever the result. */
void saslserv_wipe(saslserv *s);

/* The mechanisms to advertise: "PLAIN LOGIN". */
#define SASLSERV_MECHS "PLAIN LOGIN"

#endif
