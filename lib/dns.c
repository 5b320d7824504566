/* dns: see dns.h */
#define _DEFAULT_SOURCE 1
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>

#include <skalibs/random.h>

#include "dns.h"

#define DNS_ANSWER_MAX 65536
#define DNS_CNAME_MAX 8

static struct __res_state rs;
static int rs_ready;
static unsigned char answer[DNS_ANSWER_MAX];

static void why(dns_result *r, char const *a, char const *b, char const *c)
{
  snprintf(r->why, sizeof r->why, "%s%s%s", a, b ? b : "", c ? c : "");
}

/* Sets up the private resolver state once. 0 ok, -1 on error (r->why set). */
static int init(dns_result *r)
{
  char const *x;
  if (rs_ready) return 0;
  memset(&rs, 0, sizeof rs);
  if (res_ninit(&rs) < 0) {
    why(r, "unable to initialise the resolver", 0, 0);
    return -1;
  }
  x = getenv("PILLARBOX_DNS");
  if (x && *x) {
    char ip[64];
    unsigned long port = 53;
    char const *colon = strchr(x, ':');
    size_t n = colon ? (size_t)(colon - x) : strlen(x);
    struct in_addr a;
    if (n >= sizeof ip) goto bad;
    memcpy(ip, x, n);
    ip[n] = 0;
    if (inet_pton(AF_INET, ip, &a) != 1) goto bad;
    if (colon) {
      char *end;
      errno = 0;
      port = strtoul(colon + 1, &end, 10);
      if (errno || *end || end == colon + 1 || !port || port > 65535) goto bad;
    }
    rs.nscount = 1;
    memset(&rs.nsaddr_list[0], 0, sizeof rs.nsaddr_list[0]);
    rs.nsaddr_list[0].sin_family = AF_INET;
    rs.nsaddr_list[0].sin_port = htons((unsigned short)port);
    rs.nsaddr_list[0].sin_addr = a;
  }
  x = getenv("PILLARBOX_DNS_TIMEOUT");
  if (x && *x) {
    char *end;
    unsigned long t = strtoul(x, &end, 10);
    if (*end || !t || t > 30) {
      why(r, "PILLARBOX_DNS_TIMEOUT must be 1..30 seconds", 0, 0);
      res_nclose(&rs);
      return -1;
    }
    rs.retrans = (int)t;
    rs.retry = 2;
  }
  rs.options &= ~(unsigned long)(RES_DNSRCH | RES_DEFNAMES);
  rs_ready = 1;
  return 0;
bad:
  why(r, "PILLARBOX_DNS must be IPv4[:PORT]: ", x, 0);
  res_nclose(&rs);
  return -1;
}

/* Compares two domain names, ignoring case and one trailing dot. */
static int samename(char const *a, char const *b)
{
  size_t la = strlen(a), lb = strlen(b);
  if (la && a[la - 1] == '.') la--;
  if (lb && b[lb - 1] == '.') lb--;
  return la == lb && !strncasecmp(a, b, la);
}

/* Checks that a name is a plausible host name: LDH labels, '_' tolerated, 1..63 per label, no
 * label beginning or ending with '-' (RFC 5321 4.1.2's sub-domain: Let-dig [Ldh-str]). A name
 * that fails is refused before any query. */
static int goodname(char const *s)
{
  size_t n = strlen(s), lab = 0, i;
  if (n && s[n - 1] == '.') n--;
  if (!n || n > 253) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '.') {
      if (!lab || s[i - 1] == '-') return 0;
      lab = 0;
      continue;
    }
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '-' || c == '_'))
      return 0;
    if (!lab && c == '-') return 0;
    if (++lab > 63) return 0;
  }
  return lab > 0 && s[n - 1] != '-';
}

#define Q_OK 0
#define Q_NXDOMAIN 1
#define Q_NODATA 2
#define Q_TEMP 3

/* One query. On Q_OK, *len is the answer length in the static buffer. */
static int query(char const *name, int type, int *len, dns_result *r)
{
  int n;
  rs.res_h_errno = 0;
  n = res_nquery(&rs, name, ns_c_in, type, answer, sizeof answer);
  if (n < 0) {
    switch (rs.res_h_errno) {
      case HOST_NOT_FOUND: return Q_NXDOMAIN;
      case NO_DATA: return Q_NODATA;
      case TRY_AGAIN:
        why(r, "DNS server failure or timeout looking up ", name, 0);
        return Q_TEMP;
      default:
        why(r, "DNS error (refused or malformed answer) looking up ", name, 0);
        return Q_TEMP;
    }
  }
  if (n > (int)sizeof answer) {
    why(r, "truncated DNS answer for ", name, 0);
    return Q_TEMP;
  }
  *len = n;
  return Q_OK;
}

/* Walks the answer section of a reply to a query for qname of type: follows CNAMEs from qname
 * (bounded) and calls f on each record of that type owned by the final name.
 * Returns the number of records passed to f, or -1 if the answer is malformed. */
static int each_answer_in(unsigned char const *buf, int len, char const *qname, int type,
                          int (*f)(ns_msg *, ns_rr *, void *), void *data)
{
  ns_msg msg;
  char cur[NS_MAXDNAME];
  int hops, count = 0, i, nrr;
  if (len < 0 || ns_initparse(buf, len, &msg) < 0) return -1;
  if (ns_msg_getflag(msg, ns_f_tc)) return -1;
  nrr = ns_msg_count(msg, ns_s_an);
  if (strlen(qname) >= sizeof cur) return -1;
  strcpy(cur, qname);
  for (hops = 0; hops <= DNS_CNAME_MAX; hops++) {
    int moved = 0;
    for (i = 0; i < nrr; i++) {
      ns_rr rr;
      if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) return -1;
      if (ns_rr_class(rr) != ns_c_in || ns_rr_type(rr) != ns_t_cname) continue;
      if (!samename(ns_rr_name(rr), cur)) continue;
      if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr), cur,
                             sizeof cur) < 0)
        return -1;
      moved = 1;
      break;
    }
    if (!moved) break;
  }
  if (hops > DNS_CNAME_MAX) return -1;
  for (i = 0; i < nrr; i++) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) return -1;
    if (ns_rr_class(rr) != ns_c_in || (int)ns_rr_type(rr) != type) continue;
    if (!samename(ns_rr_name(rr), cur)) continue;
    if (f(&msg, &rr, data) < 0) return -1;
    count++;
  }
  return count;
}

static int each_answer(int len, char const *qname, int type,
                       int (*f)(ns_msg *, ns_rr *, void *), void *data)
{
  return each_answer_in(answer, len, qname, type, f, data);
}

typedef struct addctx_s addctx;
struct addctx_s {
  dns_result *r;
  char const *host;
  unsigned int pref;
  int is6;
  unsigned int n;
};

static int add_target(dns_result *r, char const *host, unsigned int pref, int is6,
                      unsigned char const *ip)
{
  dns_target *t;
  size_t i, hl = strlen(host);
  if (r->n >= DNS_TARGETS_MAX) return 0;
  if (hl && host[hl - 1] == '.') hl--;
  if (hl > DNS_NAME_MAX) return 0;
  for (i = 0; i < r->n; i++) /* the same address twice for one host is pointless */
    if (r->t[i].is6 == is6 && !memcmp(r->t[i].ip, ip, is6 ? 16 : 4) &&
        strlen(r->t[i].host) == hl && !strncasecmp(r->t[i].host, host, hl))
      return 0;
  t = &r->t[r->n++];
  memset(t, 0, sizeof *t);
  t->pref = pref;
  memcpy(t->host, host, hl);
  t->host[hl] = 0;
  t->is6 = is6;
  memcpy(t->ip, ip, is6 ? 16 : 4);
  return 1;
}

static int on_addr(ns_msg *msg, ns_rr *rr, void *data)
{
  addctx *c = data;
  (void)msg;
  if (ns_rr_rdlen(*rr) != (c->is6 ? 16 : 4)) return -1;
  if (c->n >= DNS_ADDRS_MAX) return 0;
  if (add_target(c->r, c->host, c->pref, c->is6, ns_rr_rdata(*rr))) c->n++;
  return 0;
}

int dns_literal(char const *s, size_t len, int *is6, unsigned char *ip)
{
  char buf[64];
  if (len < 3 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof buf) return 0;
  if (len > 7 && !strncasecmp(s + 1, "IPv6:", 5)) {
    memcpy(buf, s + 6, len - 7);
    buf[len - 7] = 0;
    if (inet_pton(AF_INET6, buf, ip) != 1) return 0;
    *is6 = 1;
    return 1;
  }
  memcpy(buf, s + 1, len - 2);
  buf[len - 2] = 0;
  if (inet_pton(AF_INET, buf, ip) == 1) {
    *is6 = 0;
    return 1;
  }
  if (strchr(buf, ':') && inet_pton(AF_INET6, buf, ip) == 1) { /* lenient: "[::1]" */
    *is6 = 1;
    return 1;
  }
  return 0;
}

char *dns_fmt_ip(dns_target const *t, char *buf)
{
  if (!inet_ntop(t->is6 ? AF_INET6 : AF_INET, t->ip, buf, 46)) strcpy(buf, "?");
  return buf;
}

int dns_host(char const *host, unsigned int pref, dns_result *r)
{
  static int const types[2] = {ns_t_aaaa, ns_t_a};
  int nx = 0, temp = 0, k;
  unsigned int added = 0;
  size_t hl = strlen(host);
  if (hl && host[0] == '[') {
    int is6;
    unsigned char ip[16];
    if (!dns_literal(host, hl, &is6, ip)) {
      why(r, "invalid address literal: ", host, 0);
      return DNS_PERM;
    }
    add_target(r, host, pref, is6, ip);
    return DNS_OK;
  }
  if (!goodname(host)) {
    why(r, "invalid host name: ", host, 0);
    return DNS_PERM;
  }
  if (init(r) < 0) return DNS_TEMP;
  for (k = 0; k < 2; k++) {
    int len = 0, q = query(host, types[k], &len, r), c;
    addctx ctx;
    if (q == Q_NXDOMAIN) {
      nx = 1;
      break;
    }
    if (q == Q_NODATA) continue;
    if (q == Q_TEMP) {
      temp = 1;
      continue;
    }
    ctx.r = r;
    ctx.host = host;
    ctx.pref = pref;
    ctx.is6 = types[k] == ns_t_aaaa;
    ctx.n = 0;
    c = each_answer(len, host, types[k], &on_addr, &ctx);
    if (c < 0) {
      why(r, "malformed DNS answer for ", host, 0);
      temp = 1;
      continue;
    }
    added += ctx.n;
  }
  if (added) return DNS_OK;
  if (temp) return DNS_TEMP;
  if (nx) why(r, "host not found (NXDOMAIN): ", host, 0);
  else why(r, "host has no address (no A or AAAA record): ", host, 0);
  return DNS_PERM;
}

typedef struct mx_s mx;
struct mx_s {
  unsigned int pref;
  uint32_t rnd;
  char host[NS_MAXDNAME];
};

typedef struct mxctx_s mxctx;
struct mxctx_s {
  mx *list;
  unsigned int n;
  int null;
};

static int on_mx(ns_msg *msg, ns_rr *rr, void *data)
{
  mxctx *c = data;
  unsigned char const *rd = ns_rr_rdata(*rr);
  unsigned int len = ns_rr_rdlen(*rr);
  mx *m;
  char name[NS_MAXDNAME];
  int used;
  if (len < 3) return -1;
  used = ns_name_uncompress(ns_msg_base(*msg), ns_msg_end(*msg), rd + 2, name, sizeof name);
  if (used < 0 || (unsigned int)used != len - 2) return -1;
  if (!name[0] || !strcmp(name, ".")) {
    c->null = 1;
    return 0;
  }
  if (c->n >= DNS_MX_MAX) return 0;
  m = &c->list[c->n++];
  m->pref = ((unsigned int)rd[0] << 8) | rd[1];
  m->rnd = random_uint32(0xffffffffU);
  strcpy(m->host, name);
  return 0;
}

static int mxcmp(void const *a, void const *b)
{
  mx const *x = a, *y = b;
  if (x->pref != y->pref) return x->pref < y->pref ? -1 : 1;
  if (x->rnd != y->rnd) return x->rnd < y->rnd ? -1 : 1;
  return 0;
}

int dns_mx(char const *domain, dns_result *r)
{
  static mx list[DNS_MX_MAX];
  mxctx c;
  int len = 0, q, cnt, temp = 0;
  unsigned int i;
  size_t dl = strlen(domain);
  r->n = 0;
  r->implicit = 0;
  r->why[0] = 0;
  if (dl && domain[0] == '[') return dns_host(domain, 0, r);
  if (!goodname(domain)) {
    why(r, "invalid domain name: ", domain, 0);
    return DNS_PERM;
  }
  if (init(r) < 0) return DNS_TEMP;
  q = query(domain, ns_t_mx, &len, r);
  if (q == Q_TEMP) return DNS_TEMP;
  if (q == Q_NXDOMAIN) {
    why(r, "domain does not exist (NXDOMAIN): ", domain, 0);
    return DNS_PERM;
  }
  c.list = list;
  c.n = 0;
  c.null = 0;
  if (q == Q_OK) {
    cnt = each_answer(len, domain, ns_t_mx, &on_mx, &c);
    if (cnt < 0) {
      why(r, "malformed DNS answer for MX of ", domain, 0);
      return DNS_TEMP;
    }
  }
  if (c.null) {
    why(r, "domain accepts no mail (null MX, RFC 7505): ", domain, 0);
    return DNS_PERM;
  }
  if (!c.n) {
    int x;
    r->implicit = 1;
    x = dns_host(domain, 0, r);
    if (x == DNS_PERM) why(r, "domain has no MX and no address: ", domain, 0);
    return x;
  }
  qsort(list, c.n, sizeof *list, &mxcmp);
  for (i = 0; i < c.n; i++) {
    int x = dns_host(list[i].host, list[i].pref, r);
    if (x == DNS_TEMP) temp = 1;
  }
  if (r->n) return DNS_OK;
  if (temp) return DNS_TEMP;
  why(r, "no MX host of ", domain, " has an address");
  return DNS_PERM;
}

int dns_parse_reply(unsigned char const *buf, int len, char const *qname, int want_mx,
                    dns_result *r)
{
  static mx list[DNS_MX_MAX];
  r->n = 0;
  if (want_mx) {
    mxctx c;
    unsigned int i;
    int cnt;
    c.list = list;
    c.n = 0;
    c.null = 0;
    cnt = each_answer_in(buf, len, qname, ns_t_mx, &on_mx, &c);
    if (cnt < 0) return -1;
    if (c.null) return -2;
    for (i = 0; i < c.n; i++) {
      static unsigned char const zero[16];
      if (strlen(list[i].host) > DNS_NAME_MAX) return -1;
      add_target(r, list[i].host, list[i].pref, 0, zero);
    }
    return (int)c.n;
  } else {
    addctx ctx;
    int k, total = 0;
    for (k = 0; k < 2; k++) {
      int c;
      ctx.r = r;
      ctx.host = qname;
      ctx.pref = 0;
      ctx.is6 = !k;
      ctx.n = 0;
      c = each_answer_in(buf, len, qname, k ? ns_t_a : ns_t_aaaa, &on_addr, &ctx);
      if (c < 0) return -1;
      total += (int)ctx.n;
    }
    return total;
  }
}

typedef struct ptrctx_s ptrctx;
struct ptrctx_s {
  char *name;
  int found;
};

static int on_ptr(ns_msg *msg, ns_rr *rr, void *data)
{
  ptrctx *c = data;
  char name[NS_MAXDNAME];
  size_t n;
  int used = ns_name_uncompress(ns_msg_base(*msg), ns_msg_end(*msg), ns_rr_rdata(*rr), name,
                                sizeof name);
  if (used < 0 || (unsigned int)used != ns_rr_rdlen(*rr)) return -1;
  if (c->found) return 0; /* several PTRs: the first one, as Postfix */
  n = strlen(name);
  if (n && name[n - 1] == '.') name[--n] = 0;
  if (!n || n > DNS_NAME_MAX || !goodname(name)) return 0;
  memcpy(c->name, name, n + 1);
  c->found = 1;
  return 0;
}

/* The reverse name of an address: d.c.b.a.in-addr.arpa or the nibbles of ip6.arpa. */
static void ptrname(int is6, unsigned char const *ip, char *out)
{
  static char const hex[] = "0123456789abcdef";
  int i;
  if (!is6) {
    sprintf(out, "%u.%u.%u.%u.in-addr.arpa", ip[3], ip[2], ip[1], ip[0]);
    return;
  }
  for (i = 15; i >= 0; i--) {
    *out++ = hex[ip[i] & 15];
    *out++ = '.';
    *out++ = hex[ip[i] >> 4];
    *out++ = '.';
  }
  strcpy(out, "ip6.arpa");
}

int dns_client_name(char const *ip, char *name)
{
  static dns_result r; /* static: smtp-receive's stack stays small */
  unsigned char a[16];
  char q[80];
  int is6 = 0, len = 0;
  size_t i;
  ptrctx c;
  if (!strncasecmp(ip, "::ffff:", 7) && strchr(ip + 7, '.')) ip += 7; /* v4-mapped */
  if (inet_pton(AF_INET, ip, a) == 1) {
    if (a[0] == 127) goto localhost;
  } else if (inet_pton(AF_INET6, ip, a) == 1) {
    static unsigned char const one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (!memcmp(a, one, 16)) goto localhost;
    is6 = 1;
  } else
    return 0;
  r.n = 0;
  if (init(&r) < 0) return 0;
  /* bounded: one try of 1 s at each of at most two servers per query */
  rs.retrans = 1;
  rs.retry = 1;
  if (rs.nscount > 2) rs.nscount = 2;
  ptrname(is6, a, q);
  if (query(q, ns_t_ptr, &len, &r) != Q_OK) return 0;
  c.name = name;
  c.found = 0;
  if (each_answer(len, q, ns_t_ptr, &on_ptr, &c) <= 0 || !c.found) return 0;
  /* forward-confirmed: the name has the address */
  if (dns_host(name, 0, &r) != DNS_OK) return 0;
  for (i = 0; i < r.n; i++)
    if (r.t[i].is6 == is6 && !memcmp(r.t[i].ip, a, is6 ? 16 : 4)) return 1;
  return 0;
localhost:
  strcpy(name, "localhost");
  return 1;
}
