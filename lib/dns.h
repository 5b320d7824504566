/* dns: where mail for a domain goes (MX, implicit MX, null MX, address literals).
 *
 * Uses glibc's resolver with a private res_state (res_ninit, res_nquery); answers are parsed
 * with ns_initparse/ns_parserr and bounds-checked name decompression. The DNS server is the
 * one of /etc/resolv.conf, or the one named by $PILLARBOX_DNS ("IPv4[:PORT]", for tests and
 * special setups); $PILLARBOX_DNS_TIMEOUT (seconds, 1..30) sets the per-try timeout.
 *
 * Outcome classes: DNS_OK (targets filled), DNS_PERM (NXDOMAIN, null MX, no address at all:
 * the mail can never go there), DNS_TEMP (SERVFAIL, timeout, refused, malformed or truncated
 * answers: try again later). Every count is bounded (DNS_TARGETS_MAX, DNS_ADDRS_MAX).
 */
#ifndef PILLARBOX_DNS_H
#define PILLARBOX_DNS_H

#include <stddef.h>
#include <skalibs/stralloc.h>

#define DNS_OK 0
#define DNS_PERM 1
#define DNS_TEMP 2

#define DNS_NAME_MAX 255     /* octets in a host name, without the final dot */
#define DNS_MX_MAX 32        /* MX records considered per domain */
#define DNS_ADDRS_MAX 16     /* addresses kept per host and family */
#define DNS_TARGETS_MAX 256  /* (host, address) pairs in one result */

typedef struct dns_target_s dns_target;
struct dns_target_s {
  unsigned int pref;           /* MX preference; 0 for implicit MX and literals */
  char host[DNS_NAME_MAX + 1]; /* host name (no final dot), or the literal "[...]" */
  int is6;                     /* 1: ip is IPv6 (16 bytes), 0: IPv4 (first 4 bytes) */
  unsigned char ip[16];
};

typedef struct dns_result_s dns_result;
struct dns_result_s {
  size_t n;
  dns_target t[DNS_TARGETS_MAX];
  int implicit;   /* 1 if the domain had no MX and its own addresses are used */
  char why[512];  /* for DNS_PERM / DNS_TEMP: a one-line reason */
};

/* Resolves where mail for domain (NUL-terminated; "[1.2.3.4]" and "[IPv6:...]" literals are
 * accepted) goes: MX hosts by preference (random order among equal preferences), each host's
 * IPv6 then IPv4 addresses. Returns DNS_OK, DNS_PERM or DNS_TEMP, with r->why set on failure. */
int dns_mx(char const *domain, dns_result *r);

/* Resolves one host name (or literal) to its addresses, all with preference pref, appended to r.
 * Returns DNS_OK (at least one address added), DNS_PERM (no such host / no address), DNS_TEMP. */
int dns_host(char const *host, unsigned int pref, dns_result *r);

/* Formats a target's address as text into buf (at least 46 bytes). Returns buf. */
char *dns_fmt_ip(dns_target const *t, char *buf);

/* Parses an address literal "[a.b.c.d]" or "[IPv6:x::y]" of length len. Returns 1 and fills
 * *is6/ip on success, 0 if it is not a valid literal. */
int dns_literal(char const *s, size_t len, int *is6, unsigned char *ip);

/* The name of an SMTP client for Received: (forward-confirmed reverse DNS: the first PTR name
 * of ip, text IPv4 or IPv6, whose A or AAAA records include ip). Returns 1 with the name in
 * name (DNS_NAME_MAX + 1 octets), or 0 when there is none, it does not confirm, or the resolver
 * does not answer. Bounded in time: one 1 s try at each of at most two servers per query, so a
 * dead resolver costs at most 2 s. A loopback address is "localhost", without a query. */
int dns_client_name(char const *ip, char *name);

/* For tests and fuzzing: parses a DNS reply held in buf[0..len) to a query for qname, as
 * dns_mx and dns_host do, without sending anything. want_mx=1: the MX records (hosts are
 * appended to r with their preferences and address 0.0.0.0); want_mx=0: the AAAA and A
 * records of qname. Returns the number of records used, -1 if the reply is malformed, -2 for
 * a null MX. */
int dns_parse_reply(unsigned char const *buf, int len, char const *qname, int want_mx,
                    dns_result *r);

#endif
