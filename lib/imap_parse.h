/* imap_parse: the IMAP command grammar (RFC 3501 / 9051), as pure functions over byte ranges.
 *
 * Owns: splitting one complete command (all its lines, with the octets of its literals inline,
 * as imapio_readcmd collects them) into a tag, a command name and a tree of arguments (atoms,
 * quoted strings, literals, parenthesised lists nested at most IMAP_DEPTH_MAX deep, at most
 * IMAP_ARGS_MAX nodes); finding a literal announcement ({n}, {n+}, ~{n}) at the end of a line;
 * sequence sets with a bound on their ranges; IMAP dates and date-times; modified UTF-7
 * mailbox names (RFC 3501 5.1.3) to and from UTF-8. Nothing here does I/O or allocates: the
 * caller gives the buffers, every length is explicit, nothing is read past what was given.
 *
 * The argument tree is a flat array in pre-order: a list's children follow it, and its `end`
 * is the index just past its last descendant, so the next sibling of node i is
 * (arg[i].type == IMAP_LIST ? arg[i].end : i + 1). Quoted strings are unescaped in place (the
 * buffer is modified). An atom that contains '[' runs to the matching ']' (spaces and lists
 * inside included) and on to the next space or ')': "BODY[HEADER.FIELDS (A B)]<0.10>" is one
 * atom, as RFC 3501's fetch-att needs.
 */
#ifndef PILLARBOX_IMAP_PARSE_H
#define PILLARBOX_IMAP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define IMAP_TAG_MAX 64       /* octets of a tag */
#define IMAP_ARGS_MAX 4096    /* argument nodes of one command */
#define IMAP_DEPTH_MAX 16     /* nesting of parenthesised lists */
#define IMAP_SPOOL_MAX 16     /* literals of one command kept outside the buffer (APPEND) */

/* Node types */
#define IMAP_ATOM 1    /* an atom (also NIL, numbers, flags, sequence sets, BODY[...]) */
#define IMAP_QUOTED 2  /* a quoted string, unescaped */
#define IMAP_LITERAL 3 /* a literal, its octets in the buffer */
#define IMAP_LIST 4    /* ( ... ) */
#define IMAP_SPOOLED 5 /* a literal whose octets were spooled to a file: spool = its index */

typedef struct imap_arg_s imap_arg;
struct imap_arg_s {
  char *s;         /* the octets (atoms, strings); NULL for lists */
  size_t len;      /* their length; for a spooled literal its announced size */
  uint32_t end;    /* lists: index past the last descendant */
  uint16_t type;
  uint8_t binary;  /* literal8 (~{n}) */
  uint8_t spool;   /* IMAP_SPOOLED: which spooled literal */
};

typedef struct imap_cmd_s imap_cmd;
struct imap_cmd_s {
  char *tag;
  size_t taglen;
  char *name;          /* the command word (not NUL-terminated) */
  size_t namelen;
  uint32_t nargs;      /* nodes in arg[] */
  imap_arg arg[IMAP_ARGS_MAX];
  /* Filled in by the reader before parsing: the buffer offsets of the '{' of literals whose
   * octets are not in the buffer (the buffer holds "{n}\r\n" and goes on after it). */
  unsigned int nspool;
  size_t spool_at[IMAP_SPOOL_MAX];
};

/* Results of imap_parse */
#define IMAP_OK 0
#define IMAP_ENOTAG (-1)    /* no valid tag: answer "* BAD" */
#define IMAP_ESYNTAX (-2)   /* "TAG BAD" */
#define IMAP_ETOOMANY (-3)  /* too many arguments */
#define IMAP_EDEPTH (-4)    /* lists nested too deep */

/* Parses buf[0..len): "tag SP command [SP args] CRLF" (the final CRLF or LF optional). The
 * tag and name are always set when the result is not IMAP_ENOTAG, so a BAD can carry the tag.
 * c->nspool / c->spool_at must be set (0 when nothing was spooled). */
int imap_parse(char *buf, size_t len, imap_cmd *c);

/* The index of the node after node i (its next sibling, or the parent's end). */
uint32_t imap_next(imap_cmd const *c, uint32_t i);

/* Case-insensitive comparison of a node (atom or string) with a NUL-terminated word. */
int imap_arg_is(imap_arg const *a, char const *word);
/* The same for an octet range. */
int imap_ieq(char const *s, size_t len, char const *word);

/* 1 if node a is an astring (atom, quoted, literal), 0 otherwise. */
int imap_is_string(imap_arg const *a);
/* 1 if node a is an atom equal to NIL. */
int imap_is_nil(imap_arg const *a);

/* If line[0..len) (its CRLF removed) ends with a literal announcement "{n}", "{n+}" (or the
 * literal8 forms "~{n}", "~{n+}"), returns 1 and sets *n, *nonsync (1 for "+") and *at (the
 * offset of the '{' or '~'). Returns 0 if it does not, -1 if it ends with a malformed one (a
 * number too large, "{n-}", an empty number). */
int imap_literal_tail(char const *line, size_t len, uint64_t *n, int *nonsync, size_t *at);

/* Parses a number (1..4294967295, no sign, no leading '+'). 1 ok, 0 not. */
int imap_number(char const *s, size_t len, uint32_t *u);
int imap_number64(char const *s, size_t len, uint64_t *u);

/* ---- sequence sets ---- */

#define IMAP_STAR 0           /* "*": the largest number in use, resolved by the caller */
#define IMAP_SEQSET_MAX 4096  /* ranges in one set */

typedef struct imap_range_s imap_range;
struct imap_range_s {
  uint32_t lo, hi; /* lo <= hi after parsing, unless one of them is IMAP_STAR (0) */
};

/* Parses a sequence set ("1,3:5,7:*") into r (room for max ranges). Returns the number of
 * ranges, or -1 on bad syntax (zero, junk, empty element) or more than max ranges. */
int imap_seqset(char const *s, size_t len, imap_range *r, size_t max);

/* 1 if u is in the set, given the value of "*"; ranges with a "*" end are resolved. */
int imap_seqset_has(imap_range const *r, size_t n, uint32_t u, uint32_t star);

/* ---- dates ---- */

/* Parses a date "d-Mon-yyyy" (search keys) into the UTC midnight of that day. 1 ok, 0 not. */
int imap_date(char const *s, size_t len, time_t *t);

/* Parses a date-time "dd-Mon-yyyy hh:mm:ss +zzzz" (APPEND; the day may have a leading space)
 * into a time. 1 ok, 0 not. */
int imap_datetime(char const *s, size_t len, time_t *t);

/* Formats t as "dd-Mon-yyyy hh:mm:ss +0000" into s (room for IMAP_DATETIME_LEN). Returns the
 * length (26). */
#define IMAP_DATETIME_LEN 26
size_t imap_datetime_fmt(char *s, time_t t);

/* ---- mailbox names ---- */

/* Converts a modified UTF-7 name to UTF-8. Returns the length written into out (room for
 * max octets), or -1 if s is not valid modified UTF-7 or does not fit. */
long imap_mutf7_to_utf8(char const *s, size_t len, char *out, size_t max);

/* Converts UTF-8 to modified UTF-7. Returns the length, or -1 if s is not valid UTF-8 or the
 * result does not fit. */
long imap_utf8_to_mutf7(char const *s, size_t len, char *out, size_t max);

/* 1 if s is valid modified UTF-7 (printable US-ASCII, '&' escapes well formed), else 0. */
int imap_mutf7_valid(char const *s, size_t len);

#endif
