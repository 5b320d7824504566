/* deflateio: COMPRESS=DEFLATE (RFC 4978) for an IMAP session, as a layer of lib/imapio.
 *
 * After deflateio_start, every octet imapio writes is raw deflate (RFC 1951, no zlib header)
 * and every octet it reads is inflated first. Each imapio_flush ends in a sync flush
 * (Z_SYNC_FLUSH), so the client can decode every reply as soon as it arrives. The input
 * side inflates into imapio's own fixed buffer, so the command limits of imapio bound what a
 * client can make us hold however well its data compresses. zlib (zlib1g-dev; linked as
 * libz.a).
 */
#ifndef PILLARBOX_DEFLATEIO_H
#define PILLARBOX_DEFLATEIO_H

#include <stddef.h>
#include <sys/types.h>

/* Starts compression in both directions. Call it right after the tagged OK of COMPRESS has
 * been flushed: what imapio already holds of the client's input (sent after the COMPRESS
 * line, so compressed) is taken over and inflated. 1 ok, 0 out of memory. */
int deflateio_start(void);

/* Is compression on? */
int deflateio_active(void);

/* The layer's parts, for the unit test: read(2) that inflates (fails with EAGAIN as read does;
 * EPROTO on a corrupt stream), whether inflated input waits to be returned, and the deflation
 * of an output chunk (the result stays valid until the next call). */
ssize_t deflateio_read(int fd, char *buf, size_t len);
int deflateio_pending(void);
int deflateio_out(char const *s, size_t len, char const **z, size_t *zlen);

#endif
