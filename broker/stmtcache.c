/* Prepared-statement cache and heat table; see stmtcache.h. */
#include "stmtcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t stmt_hash(const char *sql, int nparams)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(unsigned)nparams;	/* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ULL;
	}
	/* FNV's last bytes barely reach the high bits: mix (splitmix64) */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return h ? h : 1;
}

void stmt_name(char *buf, size_t n, uint32_t token, uint32_t id)
{
	snprintf(buf, n, "_pgbroker_%08x_%u", token, id);
}

static uint32_t slot_of(uint64_t h)
{
	return (uint32_t)(h ^ (h >> 29)) & (STMT_CACHE_SLOTS - 1);
}

uint32_t stmt_cache_find(const struct stmt_cache *c, uint64_t h, const char *sql, int nparams)
{
	if (!c->slots)
		return 0;
	for (uint32_t i = slot_of(h), k = 0; k < STMT_CACHE_SLOTS;
	     i = (i + 1) & (STMT_CACHE_SLOTS - 1), k++) {
		const struct stmt_entry *e = &c->slots[i];

		if (!e->sql && !e->dead)
			return 0;
		if (!e->dead && e->hash == h && e->nparams == nparams && strcmp(e->sql, sql) == 0)
			return e->id;
	}
	return 0;
}

uint32_t stmt_cache_add(struct stmt_cache *c, uint64_t h, const char *sql, int nparams)
{
	size_t len = strlen(sql);
	uint32_t i;
	char *copy;

	if (c->live >= STMT_CACHE_MAX || len > STMT_TEXT_MAX)
		return 0;
	if (!c->slots && !(c->slots = calloc(STMT_CACHE_SLOTS, sizeof(*c->slots))))
		return 0;
	if (!(copy = malloc(len + 1)))
		return 0;
	memcpy(copy, sql, len + 1);
	/* Tombstones are reused; at most STMT_CACHE_MAX are live, so an empty
	 * or dead slot is always found. */
	for (i = slot_of(h); c->slots[i].sql; i = (i + 1) & (STMT_CACHE_SLOTS - 1))
		;
	c->slots[i] = (struct stmt_entry){ .hash = h, .sql = copy, .id = ++c->next_id,
					   .nparams = nparams };
	c->live++;
	return c->slots[i].id;
}

void stmt_cache_forget(struct stmt_cache *c, uint32_t id)
{
	if (!c->slots || !id)
		return;
	for (uint32_t i = 0; i < STMT_CACHE_SLOTS; i++) {
		struct stmt_entry *e = &c->slots[i];

		if (e->sql && e->id == id) {
			free(e->sql);
			e->sql = NULL;
			e->dead = 1;
			c->live--;
			return;
		}
	}
}

void stmt_cache_clear(struct stmt_cache *c)
{
	if (c->slots) {
		for (uint32_t i = 0; i < STMT_CACHE_SLOTS; i++)
			free(c->slots[i].sql);
		free(c->slots);
	}
	c->slots = NULL;
	c->live = 0;
}

static uint32_t heat_slot(struct stmt_heat *t, uint64_t h)
{
	uint32_t i = (uint32_t)(h >> 17) & (STMT_HEAT_SLOTS - 1);

	if (t->hash[i] != h) {
		t->hash[i] = h;
		t->count[i] = 0;
		t->ewma_us[i] = t->max_us[i] = 0;
		t->timed[i] = 0;
	}
	return i;
}

uint32_t stmt_heat_see(struct stmt_heat *t, uint64_t h)
{
	uint32_t i = heat_slot(t, h);

	if (t->count[i] < UINT32_MAX)
		t->count[i]++;
	return t->count[i];
}

void stmt_heat_cool(struct stmt_heat *t, uint64_t h)
{
	uint32_t i = (uint32_t)(h >> 17) & (STMT_HEAT_SLOTS - 1);

	if (t->hash[i] == h)
		t->count[i] = 0;
}

void stmt_time_add(struct stmt_heat *t, uint64_t h, uint64_t us)
{
	uint32_t i = heat_slot(t, h);
	uint32_t v = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;

	if (!t->timed[i]) {
		t->timed[i] = 1;
		t->ewma_us[i] = t->max_us[i] = v;
		return;
	}
	/* in 64 bits: an EWMA of values near UINT32_MAX must not wrap */
	t->ewma_us[i] = (uint32_t)(((uint64_t)t->ewma_us[i] * 7 + v) / 8);
	t->max_us[i] -= t->max_us[i] / 8;
	if (v > t->max_us[i])
		t->max_us[i] = v;
}

int stmt_time_quick(const struct stmt_heat *t, uint64_t h, uint32_t ewma_us, uint32_t max_us)
{
	uint32_t i = (uint32_t)(h >> 17) & (STMT_HEAT_SLOTS - 1);

	return t->hash[i] == h && t->timed[i] && t->ewma_us[i] <= ewma_us &&
	       t->max_us[i] <= max_us;
}
