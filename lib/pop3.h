/* pop3: the POP3 grammar and the wire encoding of stored messages (RFC 1939, 2449, 5034).
 *
 * Pure functions over byte ranges with explicit lengths; no I/O, no allocation. Used by
 * pop3-serve (before login) and pop3-maildir (after login).
 *   - pop3_parse splits one command line and enforces RFC 1939's limits: 255 octets for a
 *     command line (CRLF included), 40 octets for an argument (except PASS, whose argument is
 *     the rest of the line, and AUTH's initial response, bounded by the line limit).
 *   - pop3_enc turns a stored message (LF or CRLF line ends) into its wire form: CRLF line ends,
 *     dot-stuffing, optionally cut after the headers and N body lines (TOP). Works on chunks, so
 *     a message of any size goes through a fixed buffer.
 *   - pop3_wiresize counts the octets of that wire form without stuffing (the size LIST and STAT
 *     report), chunk by chunk.
 *   - pop3_uidl derives the UIDL of a Maildir file name.
 */
#ifndef PILLARBOX_POP3_H
#define PILLARBOX_POP3_H

#include <stddef.h>
#include <stdint.h>

#define POP3_LINE_MAX 255 /* octets in a command line, CRLF included (RFC 1939 section 3) */
#define POP3_ARG_MAX 40   /* octets in one argument (RFC 1939 section 3) */
#define POP3_UIDL_MAX 70  /* octets in a unique-id (RFC 1939 section 7) */

/* Commands. */
enum pop3_cmd_e {
  POP3_NONE = 0,
  POP3_USER, POP3_PASS, POP3_APOP, POP3_AUTH, POP3_STLS, POP3_CAPA, POP3_QUIT,
  POP3_STAT, POP3_LIST, POP3_RETR, POP3_DELE, POP3_NOOP, POP3_RSET, POP3_TOP, POP3_UIDL
};

/* Errors from pop3_parse (negative). */
#define POP3_ETOOLONG (-1) /* line over POP3_LINE_MAX */
#define POP3_EARGLONG (-2) /* an argument over POP3_ARG_MAX */
#define POP3_EUNKNOWN (-3) /* not a command we know */
#define POP3_ESYNTAX (-4)  /* wrong number of arguments, NUL or other control bytes */

typedef struct pop3_cmd_s pop3_cmd;
struct pop3_cmd_s {
  int cmd;            /* POP3_* */
  unsigned int argc;  /* 0, 1 or 2 */
  char const *arg[2]; /* point into the line given to pop3_parse */
  size_t arglen[2];
};

/* Parses one command line s[0..len) (with or without its CRLF or LF; len counts every byte
 * received for the line, so that the length limit sees the CRLF). Keywords are
 * case-insensitive; arguments are separated by one or more spaces. Checks the argument count
 * of each command. Returns the command (> 0) or a POP3_E* error. */
int pop3_parse(char const *s, size_t len, pop3_cmd *c);

/* The -ERR reply line (CRLF included) to a line pop3_parse refused with error e (< 0). */
char const *pop3_parse_reply(int e);

/* A message number: decimal, 1..max, at most 9 digits. Returns 1 and sets *n, or 0. */
int pop3_msgnum(char const *s, size_t len, unsigned long max, unsigned long *n);

/* A non-negative decimal (TOP's line count), at most 9 digits. Returns 1 and sets *n, or 0. */
int pop3_ulong(char const *s, size_t len, unsigned long *n);

/* The wire encoder. Initialise with pop3_enc_init(&e, -1) for RETR, or with the body line count
 * for TOP. */
typedef struct pop3_enc_s pop3_enc;
struct pop3_enc_s {
  long toplines;       /* < 0: whole message; else body lines still to send after the headers */
  size_t linelen;      /* bytes of the current stored line seen so far (capped) */
  unsigned char atbol; /* at the beginning of a line */
  unsigned char lastcr;/* the last byte of the current line was CR */
  unsigned char inbody;/* the empty line ending the headers has been seen */
  unsigned char done;  /* TOP's cut reached: pop3_enc_run consumes nothing more */
};
void pop3_enc_init(pop3_enc *e, long toplines);

/* Encodes from in[0..inlen) into out[0..outmax) (outmax >= 2). Sets *used to the input bytes
 * consumed and returns the output bytes written. Call again with the rest when *used < inlen
 * (the output was full); once e->done is set, the rest of the message is to be skipped. */
size_t pop3_enc_run(pop3_enc *e, char const *in, size_t inlen, char *out, size_t outmax,
                    size_t *used);

/* Ends the message: CRLF if the last line had no line end, then ".\r\n". out must have room for
 * 5 bytes. Returns the bytes written. */
size_t pop3_enc_end(pop3_enc *e, char *out);

/* Wire size counting: feed every chunk of the stored message, then pop3_wiresize_end. */
typedef struct pop3_wsize_s pop3_wsize;
struct pop3_wsize_s {
  uint64_t n;
  char last; /* last byte seen, 0 before any */
};
#define POP3_WSIZE_ZERO {0, 0}
void pop3_wiresize_feed(pop3_wsize *w, char const *s, size_t len);
uint64_t pop3_wiresize_end(pop3_wsize const *w);

/* Finds ",W=NNN" (the wire size, as Dovecot writes it) in the unique part of a Maildir file
 * name. Returns 1 and sets *size, or 0. */
int pop3_name_wsize(char const *name, size_t len, uint64_t *size);

/* The UIDL of a Maildir file name: the part before ':' (the unique name, so it survives
 * new/ -> cur/ and flag changes). When that is not a valid unique-id (over 70 octets or bytes
 * outside 0x21..0x7e), it is "H" and 40 hex digits of its SHA-256 instead. out must hold
 * POP3_UIDL_MAX bytes. Returns the length (>= 1). */
size_t pop3_uidl(char const *name, size_t len, char *out);

/* The delivery time at the start of a Maildir name ("1700000000.xxx"), 0 if none. */
uint64_t pop3_name_time(char const *name, size_t len);

#endif
