/* SPSC framed byte ring; see ring.h. */
#include "ring.h"

#include <string.h>

void ring_init(struct ring *r, struct ring_ctl *ctl, uint8_t *data, uint32_t size)
{
	r->ctl = ctl;
	r->data = data;
	r->size = size;
	r->pos = 0;
	r->peer = 0;
}

int64_t ring_space(struct ring *r)
{
	uint32_t head = __atomic_load_n(&r->ctl->head, __ATOMIC_ACQUIRE);

	/* The consumer may only move forward, and never past our tail. */
	if ((uint32_t)(head - r->peer) > (uint32_t)(r->pos - r->peer))
		return -1;
	r->peer = head;
	return (int64_t)r->size - (uint32_t)(r->pos - head);
}

uint32_t ring_frame_room(uint32_t space)
{
	if (space <= FRAME_HDR)
		return 0;
	return (space - FRAME_HDR) & ~(FRAME_ALIGN - 1);
}

static void copy_in(struct ring *r, uint32_t at, const void *src, uint32_t n)
{
	uint32_t i = at & (r->size - 1);
	uint32_t first = r->size - i < n ? r->size - i : n;

	memcpy(r->data + i, src, first);
	if (n > first)
		memcpy(r->data, (const uint8_t *)src + first, n - first);
}

void ring_write(struct ring *r, uint32_t off, const void *src, uint32_t n)
{
	copy_in(r, r->pos + off, src, n);
}

void ring_write_hdr(struct ring *r, const struct frame_hdr *h)
{
	memcpy(r->data + (r->pos & (r->size - 1)), h, FRAME_HDR);
}

void ring_publish(struct ring *r, uint32_t len)
{
	r->pos += FRAME_SPAN(len);
	__atomic_store_n(&r->ctl->tail, r->pos, __ATOMIC_RELEASE);
}

void ring_put(struct ring *r, const struct frame_hdr *h, const void *payload)
{
	ring_write_hdr(r, h);
	if (h->len)
		ring_write(r, FRAME_HDR, payload, h->len);
	ring_publish(r, h->len);
}

int ring_peek(struct ring *r, struct frame_hdr *h)
{
	uint32_t tail = __atomic_load_n(&r->ctl->tail, __ATOMIC_ACQUIRE);
	uint32_t avail = tail - r->pos;

	if (avail > r->size || (avail & (FRAME_ALIGN - 1)))
		return -1;
	r->peer = tail;
	if (avail == 0)
		return 0;
	/* Copy once: the producer may scribble on the header after we look. */
	memcpy(h, r->data + (r->pos & (r->size - 1)), FRAME_HDR);
	if (h->len > avail - FRAME_HDR || FRAME_SPAN(h->len) > avail)
		return -1;
	return 1;
}

void ring_read(const struct ring *r, uint32_t off, void *dst, uint32_t n)
{
	uint32_t i = (r->pos + FRAME_HDR + off) & (r->size - 1);
	uint32_t first = r->size - i < n ? r->size - i : n;

	memcpy(dst, r->data + i, first);
	if (n > first)
		memcpy((uint8_t *)dst + first, r->data, n - first);
}

void ring_consume(struct ring *r, const struct frame_hdr *h)
{
	r->pos += FRAME_SPAN(h->len);
	__atomic_store_n(&r->ctl->head, r->pos, __ATOMIC_RELEASE);
}

int ring_has_data(struct ring *r)
{
	return __atomic_load_n(&r->ctl->tail, __ATOMIC_ACQUIRE) != r->pos;
}
