/* owner: which sender addresses belong to an authenticated account (submission policy).
 *
 * An account owns: its own address; every address that resolves to it through the aliases
 * (lib/lookup: an alias, a +tag); and what control/sender-allow gives it, one grant per line:
 *   ACCOUNT ADDRESS      e.g. "jo@example.org boss@example.org" (a shared mailbox)
 *   ACCOUNT @DOMAIN      any address at DOMAIN ("web@example.org @lists.example.org")
 * Addresses compare without regard to case. Used for MAIL FROM and the From: header by
 * smtp-receive, and by anything else that sends as a logged-in user (the web program).
 */
#ifndef PILLARBOX_OWNER_H
#define PILLARBOX_OWNER_H

#include <stddef.h>

/* Does account[0..alen) (folded, as after AUTH) own addr[0..n)? 1 yes, 0 no, -1 error. */
int owner_owns(char const *account, size_t alen, char const *addr, size_t n);

/* Do all mailboxes of a From: field value (unfolded, lib/hdr) belong to account? There must
 * be at least one. 1 yes, 0 no, -1 error. */
int owner_owns_list(char const *account, size_t alen, char const *value, size_t n);

#endif
