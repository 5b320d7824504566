/* smtp: the server side grammar of SMTP (RFC 5321), as pure functions over byte ranges.
 *
 * It owns: splitting a command line into a verb and its argument; parsing MAIL FROM / RCPT TO
 * (the path through lib/addr, then the ESMTP parameters); writing replies with their enhanced
 * status codes (RFC 2034, RFC 3463); and the DATA / BDAT byte state machine that finds the end
 * of data (CRLF "." CRLF and nothing else), undoes dot-stuffing, turns CRLF into LF and notes
 * every bare CR, bare LF or NUL. Nothing here does I/O or reads past the lengths it is given.
 */
#ifndef PILLARBOX_SMTP_H
#define PILLARBOX_SMTP_H

#include <stddef.h>
#include <skalibs/stralloc.h>

/* Verbs */
#define SMTP_V_UNKNOWN 0
#define SMTP_V_HELO 1
#define SMTP_V_EHLO 2
#define SMTP_V_MAIL 3
#define SMTP_V_RCPT 4
#define SMTP_V_DATA 5
#define SMTP_V_BDAT 6
#define SMTP_V_RSET 7
#define SMTP_V_NOOP 8
#define SMTP_V_QUIT 9
#define SMTP_V_VRFY 10
#define SMTP_V_EXPN 11
#define SMTP_V_HELP 12
#define SMTP_V_STARTTLS 13
#define SMTP_V_AUTH 14

typedef struct smtp_cmd_s smtp_cmd;
struct smtp_cmd_s {
  int verb;         /* SMTP_V_* */
  char const *arg;  /* the argument: after the verb and its spaces, trailing spaces dropped */
  size_t arglen;
};

/* Splits line[0..len) (without its CRLF or LF) into verb and argument. Verbs are matched
 * without regard to case. Returns 1, or 0 if the line holds a NUL or another control byte
 * other than TAB (the verb is still filled in). */
int smtp_parse_cmd(char const *line, size_t len, smtp_cmd *c);

/* Parameters of MAIL FROM and RCPT TO. */
#define SMTP_PARAMS_MAX 16          /* more than this: syntax error */
#define SMTP_BODY_NONE 0
#define SMTP_BODY_7BIT 1
#define SMTP_BODY_8BITMIME 2

typedef struct smtp_mailparams_s smtp_mailparams;
struct smtp_mailparams_s {
  unsigned long long size; /* SIZE=, 0 if absent */
  int has_size;
  int body;                /* SMTP_BODY_* */
  int smtputf8;            /* SMTPUTF8 given */
  int postmaster;          /* RCPT TO:<postmaster> without a domain */
  int addrerr;             /* the ADDR_E* code when SMTP_EADDR is returned */
};

/* Results of smtp_parse_mail / smtp_parse_rcpt (negative: refused). */
#define SMTP_OK 0
#define SMTP_ESYNTAX (-1)  /* no "FROM:" / "TO:", garbage: 501 5.5.4 */
#define SMTP_EADDR (-2)    /* the path is refused by lib/addr: 501 5.1.7 (MAIL) / 5.1.3 (RCPT) */
#define SMTP_EPARAM (-3)   /* unknown or unsupported parameter: 555 5.5.4 */
#define SMTP_EPARAMVAL (-4) /* bad parameter value: 501 5.5.4 */
#define SMTP_ENOMEM (-5)

/* Parses the argument of MAIL ("FROM:<path> params"). Liberal about a space after the colon
 * and the case of keywords. Accepts SIZE=n, BODY=7BIT|8BITMIME, SMTPUTF8, AUTH=xtext|<>.
 * On SMTP_OK, addr holds the mailbox (empty for "<>"). */
int smtp_parse_mail(char const *arg, size_t len, stralloc *addr, smtp_mailparams *p);

/* Parses the argument of RCPT ("TO:<path>"). No parameters are supported. "<postmaster>"
 * (any case) is accepted with p->postmaster set and addr = "postmaster"; the caller adds the
 * domain. flags: ADDR_UTF8 when the transaction has SMTPUTF8. */
int smtp_parse_rcpt(char const *arg, size_t len, unsigned int flags, stralloc *addr,
                    smtp_mailparams *p);

/* Parses a BDAT argument "SIZE [LAST]". Returns 1 with *n and *last set, 0 on bad syntax.
 * Sizes over max are a syntax error. */
int smtp_parse_bdat(char const *arg, size_t len, unsigned long long max, unsigned long long *n,
                    int *last);

/* Appends one reply line "CODE ECODE TEXT\r\n" to out; with more != 0 the separator after
 * CODE is '-' (a line of a multi-line reply). ecode may be NULL (the greeting has none).
 * Control bytes in text are replaced by '?'. Returns 1, or 0 on allocation failure. */
int smtp_reply(stralloc *out, unsigned int code, char const *ecode, char const *text, int more);

/* The DATA / BDAT byte state machine. */
#define SMTP_DATA_BARECR 1  /* a CR not followed by LF was seen */
#define SMTP_DATA_BARELF 2  /* an LF not preceded by CR was seen */
#define SMTP_DATA_NUL 4     /* a NUL byte was seen (refused like bare CR / LF: 550 5.6.0) */

typedef struct smtp_data_s smtp_data;
struct smtp_data_s {
  unsigned int state;  /* internal */
  unsigned int flags;  /* SMTP_DATA_* seen so far */
  int bdat;            /* 1: BDAT mode, no dot handling and no end marker */
};
#define SMTP_DATA_ZERO {0, 0, 0}

/* Starts a DATA body (just after the CRLF that ended the DATA command) or, with bdat != 0,
 * a BDAT message (state carries over between chunks of one message). */
void smtp_data_init(smtp_data *d, int bdat);

/* Consumes in[0..inlen) and writes the message bytes (LF line ends, dots unstuffed) to out,
 * which must have room for inlen + 2 bytes; *outlen is set to the bytes written. Returns the
 * number of input bytes consumed: all of them, or (DATA mode) fewer when the end of data was
 * reached, in which case *done is set to 1 and the rest of in belongs to the next command. */
size_t smtp_data_scan(smtp_data *d, char const *in, size_t inlen, char *out, size_t *outlen,
                      int *done);

/* Ends a BDAT message (after its LAST chunk): flushes a pending CR into out (room for 1 byte)
 * and notes it as bare. Returns the number of bytes written to out (0 or 1). */
size_t smtp_data_finish(smtp_data *d, char *out);

/* Loop detection (RFC 5321 6.3): counts the Received: header fields of a message as it
 * streams, over the bytes smtp_data_scan writes (LF line ends). Only the header section counts:
 * it ends at the first empty line. A field name matches in any case, with optional white space
 * before the colon ("Received :", obsolete syntax); a folded continuation line never matches. */
typedef struct smtp_hops_s smtp_hops;
struct smtp_hops_s {
  unsigned long count; /* Received: fields seen so far (saturates) */
  unsigned int state;  /* internal */
};
#define SMTP_HOPS_ZERO {0, 0}

void smtp_hops_init(smtp_hops *h);
void smtp_hops_scan(smtp_hops *h, char const *s, size_t n);

/* Is recipient a[0..alen) the same as b[0..blen) (both mailboxes as lib/addr yields them)?
 * The domain (after the last '@') never depends on case. The local part does only for a
 * remote domain (RFC 5321 2.4: it is the remote host's to interpret); with local != 0 (a local
 * domain, where lookups fold case) it is compared without regard to case. */
int smtp_rcpt_same(char const *a, size_t alen, char const *b, size_t blen, int local);

/* The argument arg[0..len) of MAIL FROM:<name> or RCPT TO:<name> from the local service
 * (sendmail -bs), whose path is a bare name (not empty, no '@', not postmaster): into sa as
 * the same argument with "@" domain[0..dlen) after the name, as sendmail's command-line
 * addresses get control/defaultdomain. 1 done, 0 nothing to do (no domain, no bare name),
 * -1 out of memory. */
int smtp_qualify(char const *arg, size_t len, char const *domain, size_t dlen, stralloc *sa);

/* Appends s[0..n) (at most max bytes) to sa, each byte outside [A-Za-z0-9.-_:[]] as '?'
 * (text a peer chose, going into a header or a reply). Returns 1, or 0 on allocation failure. */
int smtp_cat_safe(stralloc *sa, char const *s, size_t n, size_t max);

/* The "with" protocol name of RFC 3848 / RFC 6531: SMTP, ESMTP[S][A], UTF8SMTP[S][A]. */
char const *smtp_protocol(int esmtp, int utf8, int tls, int auth);

/* The facts of our Received: field (RFC 5321 4.4). NULL / "" fields are left out. */
typedef struct smtp_trace_s smtp_trace;
struct smtp_trace_s {
  char const *helo, *host, *ip, *me, *proto;
  char const *id;        /* the queue id: "with ESMTP id ID" */
  char const *tlsproto;  /* "(using TLSv1.2 with cipher ECDHE-...)" */
  char const *cipher;
  char const *rcpt;      /* the one recipient ("for <rcpt>"), or NULL */
  size_t rcptlen;
  char const *date;
};

/* Appends the Received: field (LF line ends, folded, ending in LF) to sa. Returns 1, or 0 on
 * allocation failure. The HELO, host, IP, id and TLS texts go through smtp_cat_safe. */
int smtp_received(stralloc *sa, smtp_trace const *t);

#endif
