/* Single-producer single-consumer byte ring of framed messages in shared
 * memory. Positions run free (mod 2^32); the ring size is a power of two.
 * Each side keeps its own copy of its position and treats the peer's
 * position, read from shared memory, as untrusted until checked. */
#ifndef PGB_RING_H
#define PGB_RING_H

#include <stdint.h>
#include <stddef.h>

/* Frame header: 16 bytes, frames start on 16-byte boundaries so a header
 * never wraps; the payload may. */
struct frame_hdr {
	uint32_t len;    /* payload bytes */
	uint16_t type;
	uint16_t flags;
	uint32_t id;     /* request id */
	uint32_t aux;    /* first frame of a message: its total length */
};

#define FRAME_HDR 16u
#define FRAME_ALIGN 16u
#define FRAME_SPAN(len) (FRAME_HDR + (((len) + FRAME_ALIGN - 1) & ~(FRAME_ALIGN - 1)))

/* Shared control words of one ring. tail is written by the producer, head by
 * the consumer; need_space is set by a producer that waits for room. */
struct ring_ctl {
	_Alignas(64) uint32_t tail;
	_Alignas(64) uint32_t head;
	uint32_t need_space;
};

struct ring {
	struct ring_ctl *ctl;
	uint8_t *data;
	uint32_t size;   /* power of two */
	uint32_t pos;    /* our own position: tail for a producer, head for a consumer */
	uint32_t peer;   /* last validated peer position */
};

void ring_init(struct ring *r, struct ring_ctl *ctl, uint8_t *data, uint32_t size);

/* Producer. ring_space reloads the consumer's head (acquire) and returns the
 * free bytes, or -1 when that head is impossible (corrupt ring). */
int64_t ring_space(struct ring *r);
/* Largest payload one frame may carry when `space` bytes are free (0: none). */
uint32_t ring_frame_room(uint32_t space);
/* Write bytes at offset `off` from our tail (not yet published). */
void ring_write(struct ring *r, uint32_t off, const void *src, uint32_t n);
/* Write a header at our tail; the payload follows via ring_write(r, FRAME_HDR + i, ...). */
void ring_write_hdr(struct ring *r, const struct frame_hdr *h);
/* Publish one frame of payload `len` written above (release store of tail). */
void ring_publish(struct ring *r, uint32_t len);
/* Header + payload in one go; caller checked the space. */
void ring_put(struct ring *r, const struct frame_hdr *h, const void *payload);

/* Consumer. ring_peek reloads the producer's tail (acquire) and copies the
 * next header out. Returns 1 with *h filled, 0 when empty, -1 when the ring
 * is corrupt (tail or length out of range). */
int ring_peek(struct ring *r, struct frame_hdr *h);
/* Copy n payload bytes starting at payload offset off of the peeked frame. */
void ring_read(const struct ring *r, uint32_t off, void *dst, uint32_t n);
/* Release the peeked frame (release store of head). */
void ring_consume(struct ring *r, const struct frame_hdr *h);
/* Non-zero when the producer published something we have not peeked. */
int ring_has_data(struct ring *r);

#endif
