/* addr: the one parser of mail addresses, used by every program.
 *
 * A path is parsed strictly once; the bytes it yields are the bytes that are checked, stored
 * and routed. No percent hack, no bang paths: '%' and '!' are ordinary local-part bytes, so
 * "a%b@local" is just an (unknown) local user. A source route "<@x,@y:u@d>" is accepted and
 * dropped (RFC 5321 4.1.1.3 and C.). A quoted local part is kept with its quotes, so
 * "\"a@b\"@local" is a local-part at "local", never "a@b". A trailing dot in the domain is
 * a syntax error. NUL, CR, LF and other controls are errors anywhere.
 */
#ifndef PILLARBOX_ADDR_H
#define PILLARBOX_ADDR_H

#include <stddef.h>
#include <skalibs/stralloc.h>

#define ADDR_LOCAL_MAX 64   /* octets in a local part (RFC 5321 4.5.3.1.1) */
#define ADDR_DOMAIN_MAX 255 /* octets in a domain (4.5.3.1.2) */
#define ADDR_PATH_MAX 256   /* octets in a path including the angle brackets (4.5.3.1.3) */

/* Results of addr_parse_path (negative: refused). */
#define ADDR_OK 0
#define ADDR_ESYNTAX (-1)  /* not a path */
#define ADDR_ELOCAL (-2)   /* local part over ADDR_LOCAL_MAX */
#define ADDR_EDOMAIN (-3)  /* domain over ADDR_DOMAIN_MAX */
#define ADDR_EPATH (-4)    /* path over ADDR_PATH_MAX */
#define ADDR_E8BIT (-5)    /* non-ASCII without SMTPUTF8 */

#define ADDR_ALLOW_NULL 1  /* "<>" allowed (reverse-path) */
#define ADDR_UTF8 2        /* SMTPUTF8 in effect: UTF-8 allowed in local part and domain */
#define ADDR_LOOSE 4       /* accept a path without angle brackets (sendmail, control files) */

/* Parses a path at s[0..len): optional leading spaces, '<', [source route ':'], mailbox, '>'.
 * On ADDR_OK, out holds the mailbox ("local@domain", or empty for "<>"), not NUL-terminated,
 * and *end is the offset just past the closing '>'. */
int addr_parse_path(char const *s, size_t len, unsigned int flags, stralloc *out, size_t *end);

/* Checks a bare mailbox "local@domain" (no brackets). Returns ADDR_OK or an error as above. */
int addr_check_mailbox(char const *s, size_t len, unsigned int flags);

/* Offset of the '@' that separates local part and domain (the last one outside quotes),
 * or len if none. */
size_t addr_at(char const *s, size_t len);

/* True if the domain part is an address literal ("[...]"). */
int addr_is_literal(char const *dom, size_t len);

/* Lower-cases the whole address into out (the key used for every lookup). */
int addr_fold(char const *s, size_t len, stralloc *out);

/* Human-readable text for an ADDR_E* code. */
char const *addr_strerror(int e);

#endif
