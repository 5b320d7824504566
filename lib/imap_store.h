/* imap_store: the IMAP commands that change messages (STORE, COPY, MOVE, EXPUNGE, UID
 * EXPUNGE, CLOSE, UNSELECT, APPEND), over lib/mailstore. APPEND's literals arrive spooled into
 * the Maildir's tmp/ by imapio_readcmd through imap_spool_open; they become messages with
 * mailstore_add (link into the folder's cur/, so a crash leaves either a whole message or a
 * tmp file that maildir_tmp_clean removes later). */
#ifndef PILLARBOX_IMAP_STORE_H
#define PILLARBOX_IMAP_STORE_H

#include <stdint.h>
#include "imap_parse.h"
#include "imapio.h"

void imap_cmd_store(imap_cmd *c, uint32_t first);
void imap_cmd_copy(imap_cmd *c, uint32_t first, int move);
void imap_cmd_expunge(imap_cmd *c, uint32_t first);
/* CLOSE (expunge_too = 1) or UNSELECT */
void imap_cmd_close(int expunge_too);
void imap_cmd_append(imap_cmd *c, imapio_spool *sp);

/* imapio_spool's spool_open: a fresh file in tmp/ of the Maildir (the current directory). */
int imap_spool_open(void *ctx, uint64_t size);
/* Closes and removes what the last command spooled and did not use. */
void imap_spool_reset(imapio_spool *sp, imap_cmd const *c);

#endif
