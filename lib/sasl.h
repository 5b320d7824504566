/* sasl: base64 and the SASL PLAIN (RFC 4616) and LOGIN mechanisms, as pure functions.
 *
 * Owns: strict base64 (RFC 4648, padded, no white space) with explicit output bounds; parsing
 * an AUTH / AUTHENTICATE argument into a mechanism and an optional initial response; decoding a
 * PLAIN message into authzid, authcid and password; the LOGIN prompts; building the
 * checkpassword input ("user\0password\0\0") for auth-check. Nothing here does I/O (the one
 * helper that runs auth-check lives in lib/checkpw.h).
 */
#ifndef PILLARBOX_SASL_H
#define PILLARBOX_SASL_H

#include <stddef.h>

#define SASL_FIELD_MAX 255      /* octets in an authzid, authcid or password (RFC 4616) */
#define SASL_RESPONSE_MAX 2048  /* octets of base64 in one client response (caller's line cap) */
#define SASL_DECODED_MAX 1024   /* octets a decoded response may have */

/* Encoded length of n octets (padded), not counting a NUL. */
#define SASL_B64_LEN(n) ((((n) + 2) / 3) * 4)

/* Results (negative: refused). */
#define SASL_OK 0
#define SASL_EBASE64 (-1)   /* not valid base64: 501 5.5.2 */
#define SASL_ETOOLONG (-2)  /* over a bound: 500 5.5.6 */
#define SASL_ESYNTAX (-3)   /* PLAIN message not "authzid\0authcid\0passwd", empty fields */
#define SASL_EAUTHZ (-4)    /* authzid present and different from authcid: 535 5.7.8 */
#define SASL_ECANCEL (-5)   /* the client sent "*": 501 5.7.0 */

/* Decodes base64 in[0..inlen) into out (room for outmax octets); *outlen gets the length.
 * Strict: length a multiple of 4, '=' only as final padding, no spaces, non-zero pad bits
 * refused. A lone "=" decodes to the empty string (RFC 4954 initial response). Returns SASL_OK,
 * SASL_EBASE64, or SASL_ETOOLONG when the result would not fit in outmax. */
int sasl_b64_decode(char const *in, size_t inlen, char *out, size_t outmax, size_t *outlen);

/* Encodes in[0..inlen) into out, which must have room for SASL_B64_LEN(inlen) octets.
 * Returns the number of octets written (no NUL is added). */
size_t sasl_b64_encode(char const *in, size_t inlen, char *out);

/* True if a client response line is the cancel request "*". */
int sasl_is_cancel(char const *s, size_t len);

/* Mechanisms */
#define SASL_MECH_UNKNOWN 0
#define SASL_MECH_PLAIN 1
#define SASL_MECH_LOGIN 2

/* Splits an AUTH argument "MECH [initial-response]" (mechanism name in any case). Sets *ir to
 * the initial response (or NULL if there is none) and *irlen to its length. Returns a
 * SASL_MECH_* value, or SASL_ESYNTAX on an empty argument or more than one space-separated
 * word after the mechanism. */
int sasl_parse_auth(char const *arg, size_t len, char const **ir, size_t *irlen);

/* A decoded PLAIN message: pointers into the caller's buffer, not NUL-terminated. */
typedef struct sasl_plain_s sasl_plain;
struct sasl_plain_s {
  char const *authzid;
  size_t authzidlen;
  char const *authcid;
  size_t authcidlen;
  char const *passwd;
  size_t passwdlen;
};

/* Parses a decoded PLAIN message msg[0..len) ("authzid NUL authcid NUL passwd"). The authzid
 * must be empty or equal to the authcid (byte for byte, ASCII case-insensitive); authcid and
 * password must be non-empty, at most SASL_FIELD_MAX octets, and hold no NUL. Returns SASL_OK,
 * SASL_ESYNTAX, SASL_ETOOLONG or SASL_EAUTHZ. */
int sasl_plain_parse(char const *msg, size_t len, sasl_plain *p);

/* The base64 LOGIN challenges: "VXNlcm5hbWU6" ("Username:") for step 0, "UGFzc3dvcmQ6"
 * ("Password:") for step 1. */
char const *sasl_login_prompt(unsigned int step);

/* Checks one decoded LOGIN field (user name or password): non-empty, at most SASL_FIELD_MAX
 * octets, no NUL. Returns SASL_OK, SASL_ESYNTAX or SASL_ETOOLONG. */
int sasl_login_field(char const *s, size_t len);

/* Builds the checkpassword input "user\0password\0\0" into out (room for outmax octets).
 * Returns the length written, or 0 if it does not fit or a field holds a NUL. */
size_t sasl_checkpassword_input(char *out, size_t outmax, char const *user, size_t userlen,
                                char const *pass, size_t passlen);

#endif
