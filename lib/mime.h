/* mime: the one RFC 5322 / MIME parser of pillarbox, and what IMAP derives from it.
 *
 * Pure functions over a byte range with an explicit length (a message as mmapped from its
 * Maildir file: LF line ends as deliver-maildir stores them, CRLF tolerated, 8-bit and broken
 * input accepted); nothing ever reads outside s[0..len). No allocation while parsing: the parts
 * go into a table the caller gives. The string builders append to a stralloc.
 *
 * The model is Dovecot's (so that BODYSTRUCTURE and BODY[n.m] agree with it byte for byte):
 *   - a part is a header (up to and including the empty line that ends it; the whole part
 *     when there is no empty line) and a body;
 *   - a multipart's children are the texts between its boundary lines; the line end just
 *     before a boundary line belongs to the boundary, not to the part; a boundary line is any
 *     line starting with "--" and the boundary of the multipart or of any enclosing one
 *     (innermost first; prefix match); a missing close delimiter ends the multipart at the end
 *     of its parent; a multipart without a boundary parameter is a leaf;
 *   - a message/rfc822 part has exactly one child: the encapsulated message, whose header is
 *     the message's own header and whose body may again be multipart;
 *   - nesting deeper than MIME_DEPTH_MAX, or parts beyond the table, are not split further
 *     (the rest is the body of the last part made), so the work is linear in len.
 * Sizes that IMAP reports are "wire" sizes: the octets after every bare LF became CRLF, since
 * that is what a client receives (RFC822.SIZE, BODYSTRUCTURE sizes, literal lengths).
 *
 * Section numbers follow RFC 3501 6.4.5: the children of a multipart are 1..n; a non-multipart
 * message has one part, 1 (its body); the number after a message/rfc822 part walks into the
 * encapsulated message's own parts.
 */
#ifndef PILLARBOX_MIME_H
#define PILLARBOX_MIME_H

#include <stddef.h>
#include <stdint.h>
#include <skalibs/stralloc.h>

#define MIME_DEPTH_MAX 50      /* nesting of multiparts and messages */
#define MIME_BOUNDARY_MAX 200  /* longer boundary parameters are treated as absent */
#define MIME_SECTION_DEPTH 50  /* numbers in a section specification */
#define MIME_FIELDS_MAX 64     /* names in HEADER.FIELDS (...) */
#define MIME_NONE 0xffffffffu  /* no part */

enum mime_kind_e { MIME_LEAF = 0, MIME_MULTIPART = 1, MIME_MESSAGE = 2 };

typedef struct mime_part_s mime_part;
struct mime_part_s {
  size_t hdr_off, hdr_len;   /* the header in s, with its ending empty line if any */
  size_t body_off, body_len; /* the body in s */
  size_t hdr_wsize;          /* wire size (CRLF) of the header */
  size_t body_wsize;         /* wire size of the body */
  size_t body_lines;         /* lines of the body (BODYSTRUCTURE's line count) */
  unsigned int parent;       /* index of the enclosing part, MIME_NONE for the root (0) */
  unsigned int child;        /* first child, MIME_NONE if none */
  unsigned int next;         /* next sibling, MIME_NONE if none */
  unsigned int nchild;       /* number of children */
  unsigned char kind;        /* MIME_LEAF, MIME_MULTIPART, MIME_MESSAGE */
  unsigned char depth;       /* 0 for the root */
  unsigned char flags;       /* MIME_F_* */
};
#define MIME_F_ISMIME 1  /* Content-* fields count (MIME-Version, Content-Type, in a multipart) */
#define MIME_F_TEXT 2    /* text/ (or the default text/plain) */
#define MIME_F_DIGEST 4  /* multipart/digest: children default to message/rfc822 */
#define MIME_F_EOH 8     /* the header ended with an empty line */

typedef struct mime_msg_s mime_msg;
struct mime_msg_s {
  char const *s;   /* the message */
  size_t len;
  mime_part *part; /* the caller's table; part[0] is the message itself */
  unsigned int n;  /* parts used */
  unsigned int max;/* table size */
};

/* Parses s[0..len) into the caller's table part[0..max) (max >= 1; 256 is plenty for mail,
 * more parts are not split). Keeps pointers to s and part in m. Returns the part count (>= 1).
 * Cannot fail. */
unsigned int mime_parse(mime_msg *m, char const *s, size_t len, mime_part *part,
                        unsigned int max);

/* A header kept apart (s[0..len), as lib/msgcache keeps the top-level one) as a message of
 * one part that is all header, without parsing it: enough for mime_search_header and
 * mime_date on part 0, which is all SEARCH asks of a cached header. The wire sizes and the
 * MIME facts of the part are not set. Uses part[0] only. */
void mime_header_only(mime_msg *m, char const *s, size_t len, mime_part *part);

/* ---- wire form (CRLF) ---- */

/* Octets of s[0..len) once every LF not preceded by CR is sent as CRLF. prev is the byte
 * just before s (0 if none), so a CR LF split across ranges counts once. RFC822.SIZE is
 * mime_wire_size(s, len, 0). */
size_t mime_wire_size(char const *s, size_t len, char prev);

/* Appends the wire form of s[0..len) (prev as above) to sa, cut to [origin, origin+count) of
 * the wire octets (origin 0, count SIZE_MAX: all), as BODY[...]<origin.count> needs.
 * Returns 1, or 0 on allocation failure. */
int mime_wire_cat(stralloc *sa, char const *s, size_t len, char prev, size_t origin,
                  size_t count);

/* ---- IMAP strings ---- */

/* ENVELOPE of the message (or of part i when it is MIME_MESSAGE's child, i.e. any part that
 * has a message header): "(date subject from sender reply-to to cc bcc in-reply-to
 * message-id)" as RFC 3501 7.4.2, values raw (encoded words not decoded, as Dovecot does),
 * sender and reply-to defaulting to from. Appends to sa; returns 1, or 0 on allocation
 * failure. */
int mime_envelope(stralloc *sa, mime_msg const *m, unsigned int i);

/* BODYSTRUCTURE (ext = 1, with the extension data of RFC 3501 7.4.2) or BODY (ext = 0) of the
 * message (i = 0) or of part i. Appends to sa; returns 1, or 0 on allocation failure. */
int mime_bodystructure(stralloc *sa, mime_msg const *m, unsigned int i, int ext);

/* ---- sections ---- */

enum mime_sec_e {
  MIME_SEC_ALL = 0,        /* BODY[] or BODY[1.2]: the whole (sub)part */
  MIME_SEC_HEADER,         /* HEADER */
  MIME_SEC_FIELDS,         /* HEADER.FIELDS (names) */
  MIME_SEC_FIELDS_NOT,     /* HEADER.FIELDS.NOT (names) */
  MIME_SEC_TEXT,           /* TEXT */
  MIME_SEC_MIME            /* MIME */
};

typedef struct mime_section_s mime_section;
struct mime_section_s {
  unsigned int num[MIME_SECTION_DEPTH]; /* part numbers, each >= 1 */
  unsigned int nnum;
  int what;                             /* MIME_SEC_* */
  char const *field[MIME_FIELDS_MAX];   /* field names (point into the parsed text) */
  size_t fieldlen[MIME_FIELDS_MAX];
  unsigned int nfield;
};

/* Parses the text between "[" and "]" of BODY[...]/BINARY[...] (e.g. "", "1.2.3", "HEADER",
 * "2.TEXT", "1.MIME", "HEADER.FIELDS (From To)", "HEADER.FIELDS.NOT (\"X-A\" Y)");
 * keywords case-insensitive, names atoms or quoted strings. Returns 1, or 0 for a syntax
 * error (then BAD). The field names point into s. */
int mime_section_parse(char const *s, size_t len, mime_section *sec);

/* The part a section's numbers designate (0 for none: the message), or MIME_NONE when it does
 * not exist. */
unsigned int mime_section_part(mime_msg const *m, mime_section const *sec);

/* The byte range in s of a section (everything but HEADER.FIELDS[.NOT]): sets *off, *len and
 * *prev (the byte before it, for mime_wire_*) and returns 1; returns 0 when the section is
 * HEADER.FIELDS[.NOT] (use mime_section_cat), -1 when it designates nothing (Dovecot then
 * sends an empty string). HEADER/TEXT of a part that is not a message, and MIME of part 0,
 * are -1. */
int mime_section_range(mime_msg const *m, mime_section const *sec, size_t *off, size_t *len,
                       char *prev);

/* Appends the wire form (CRLF) of any section, cut to [origin, origin+count), to sa.
 * HEADER.FIELDS gives the matching fields as stored (folded lines kept), then an empty line.
 * Returns 1 (a nonexistent section appends nothing), or 0 on allocation failure. */
int mime_section_cat(stralloc *sa, mime_msg const *m, mime_section const *sec, size_t origin,
                     size_t count);

/* BINARY[section] (RFC 3516), as Dovecot answers it: appends the content of part i (from
 * mime_section_part) with its transfer encoding undone. Returns
 *    1  nothing to decode (7bit/8bit/binary/none, a multipart or message part, or a part that
 *       does not exist: then nothing is appended): the wire form was appended; send {n};
 *    2  base64 or quoted-printable decoded: send it as literal8 ~{n};
 *   -1  unknown Content-Transfer-Encoding: NO [UNKNOWN-CTE];
 *   -3  invalid base64/QP data: NO [PARSE] (nothing appended);
 *    0  allocation failure.
 * BINARY[] (no section) is the whole message as is: mime_section_cat, sent as ~{n}. */
int mime_binary_cat(stralloc *sa, mime_msg const *m, unsigned int i);

/* BINARY.SIZE: the length mime_binary_cat would append (0 for no such part); same returns
 * (1 or 2 when *size is set). */
int mime_binary_size(mime_msg const *m, unsigned int i, size_t *size);

/* ---- header fields ---- */

/* Iterates over the fields named name (case-insensitive) in the header h[0..hlen): start with
 * *pos = 0; each call sets *v, *vlen to the raw value (after the colon, folding kept) and
 * returns 1, or returns 0 when there is no further one. Lines without a colon are skipped. */
int mime_header_next(char const *h, size_t hlen, char const *name, size_t namelen,
                     size_t *pos, char const **v, size_t *vlen);

/* Appends the value v[0..vlen) unfolded (CR LF removed), leading and trailing white space
 * trimmed, RFC 2047 encoded words decoded to UTF-8 (UTF-8, US-ASCII, ISO-8859-1, ISO-8859-15
 * and Windows-1252 by table, any other charset through iconv; unknown charsets and raw
 * 8-bit bytes are taken as UTF-8, Latin-1 where that is invalid), white space between
 * adjacent encoded words dropped. Returns 1, or 0 on allocation failure. */
int mime_header_decode(stralloc *sa, char const *v, size_t vlen);

/* SEARCH FROM/TO/CC/BCC/SUBJECT/HEADER: 1 when any field named name of part i's header (0:
 * the message) contains needle (UTF-8) once decoded, ignoring ASCII case. Address fields
 * (From, Sender, Reply-To, To, Cc, Bcc, Resent-*) are compared in Dovecot's normalized form,
 * "Name <box@domain>, group: a@b;" with comments dropped and names decoded. An empty needle
 * matches any message that has the field. Returns 1, 0, or -1 on allocation failure. tmp is
 * scratch space the caller keeps across calls (so no allocation per message). */
int mime_search_header(mime_msg const *m, unsigned int i, char const *name, size_t namelen,
                       char const *needle, size_t nlen, stralloc *tmp);

/* SEARCH BODY (text = 0) and TEXT (text = 1; the headers too): 1 when needle occurs,
 * ignoring ASCII case, in the message's text (text and message bodies, transfer encoding
 * undone, the part's charset turned into UTF-8 as mime_header_decode does; headers decoded as
 * mime_header_decode).
 * Returns 1, 0, or -1 on allocation failure. */
int mime_search_text(mime_msg const *m, int text, char const *needle, size_t nlen,
                     stralloc *tmp);

/* needle in hay, ignoring ASCII case (bytes >= 0x80 compared exactly). Linear in practice
 * (memchr on the first byte, both cases). Returns the offset or -1. */
long mime_find_ci(char const *hay, size_t hlen, char const *needle, size_t nlen);

/* ---- dates ---- */

/* Parses an RFC 5322 date-time (Date: value) with the obsolete forms: optional day name,
 * 2- or 4-digit years (RFC 5322 4.3), missing seconds, comments, zone names UT/GMT/EST/EDT/
 * CST/CDT/MST/MDT/PST/PDT/military (as +0000 except Z), "+hhmm"/"-hhmm". Sets *t (seconds
 * since the epoch, UTC) and *zone (minutes east of UTC) and returns 1, or returns 0.
 * SENTBEFORE/ON/SINCE compare the date in the message's own zone: (*t + *zone*60) / 86400
 * days (RFC 3501: "disregarding time and timezone"). */
int mime_date_parse(char const *s, size_t len, int64_t *t, int *zone);

/* The Date: of part i's header (0: the message), as mime_date_parse. Returns 1 or 0. */
int mime_date(mime_msg const *m, unsigned int i, int64_t *t, int *zone);

#endif
