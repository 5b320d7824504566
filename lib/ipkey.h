/* ipkey: the key under which a client address is counted (connection caps, failed logins).
 *
 * IPv4 addresses count one by one; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is its IPv4
 * address; an IPv6 address counts by its prefix (default /64, as one customer usually holds a
 * whole /64). The key is printable text without '/' or ':' (it may name a file): IPv4 as
 * "192.0.2.7", IPv6 as the prefix's 16 bytes in hex, then "-" and the prefix length
 * ("20010db8000000010000000000000000-64"). Text that is no address becomes "x" followed by its
 * safe bytes (bounded), so it is still a key.
 */
#ifndef PILLARBOX_IPKEY_H
#define PILLARBOX_IPKEY_H

#include <stddef.h>

#define IPKEY_MAX 72         /* room for a key and its NUL */
#define IPKEY_V6PREFIX 64    /* default prefix length (control/ipv6-prefix) */

/* Writes the key of ip (NUL-terminated text; NULL is "unknown") into out (IPKEY_MAX bytes,
 * NUL-terminated). v6bits: the IPv6 prefix length, 1..128 (0 means IPKEY_V6PREFIX). Returns
 * the key's length. */
size_t ipkey(char const *ip, unsigned int v6bits, char *out);

/* The prefix length from control/ipv6-prefix (default IPKEY_V6PREFIX; out of range: default). */
unsigned int ipkey_v6prefix(void);

#endif
