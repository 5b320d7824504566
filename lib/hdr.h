/* hdr: header fields of a message (RFC 5322), as pure functions over byte ranges.
 *
 * It owns: matching a field's name (any case; white space before the colon is the same field,
 * the obsolete syntax of RFC 5322 4.5: "Bcc :" is Bcc); splitting an address list (To, Cc,
 * Bcc, From: display names, comments, quoted strings, groups) into its mailboxes; and a
 * streaming collector of one field's value (From:) over the bytes of a message as they pass.
 */
#ifndef PILLARBOX_HDR_H
#define PILLARBOX_HDR_H

#include <stddef.h>

/* If the field starting at h[0..n) is named name, returns the offset just after its colon;
 * otherwise 0. */
size_t hdr_field(char const *h, size_t n, char const *name);

/* Calls f(ctx, mailbox, len) for each mailbox in the address list s[0..n) (unfolded: CR and
 * LF already turned into spaces). The mailbox is the text between < > or the bare address,
 * white space around it trimmed; empty ones are skipped. Stops and returns 0 when f returns 0;
 * returns 1 otherwise. */
int hdr_addrlist(char const *s, size_t n, int (*f)(void *, char const *, size_t), void *ctx);

/* Collects the value of the first field named name in a message's header section, over the
 * message bytes (LF line ends) fed in pieces of any size; folding is undone (CR/LF become
 * spaces). Bounded: at most HDR_VALUE_MAX bytes are kept (over it, toolong is set). count
 * is the number of such fields seen (a second From: is worth refusing). */
#define HDR_VALUE_MAX 2048
typedef struct hdr_grab_s hdr_grab;
struct hdr_grab_s {
  char const *name;
  unsigned int state;     /* internal */
  size_t matched;         /* internal: bytes of name matched at the start of a line */
  unsigned int count;     /* fields with that name seen */
  int toolong;
  size_t len;
  char value[HDR_VALUE_MAX];
};
void hdr_grab_init(hdr_grab *g, char const *name);
void hdr_grab_scan(hdr_grab *g, char const *s, size_t n);

#endif
