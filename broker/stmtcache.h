/* Prepared statements cached per backend, keyed by statement text, and a
 * small table per text of how often it was seen lately (only texts that
 * repeat are worth a Prepare) and how long it ran lately (only quick texts
 * share a pipeline). Pure data structures: the broker decides when to
 * prepare, what may be pipelined and what the server knows (see
 * broker/pipeline.c). */
#ifndef PGB_STMTCACHE_H
#define PGB_STMTCACHE_H

#include <stddef.h>
#include <stdint.h>

#define STMT_CACHE_MAX   256    /* prepared statements per backend */
#define STMT_CACHE_SLOTS 512    /* open addressing, twice the entries */
#define STMT_TEXT_MAX    8192   /* longer texts are never prepared */
#define STMT_HEAT_SLOTS  4096
#define STMT_NAME_MAX    40

struct stmt_entry {
	uint64_t hash;
	char *sql;              /* NULL: empty, or a tombstone when dead is set */
	uint32_t id;            /* server-side name is stmt_name(id) */
	int nparams;
	int dead;
};

struct stmt_cache {
	struct stmt_entry *slots;   /* allocated on first use */
	uint32_t live;              /* entries in use */
	uint32_t next_id;           /* ids are never reused on one connection */
};

/* One slot per text hash (direct-mapped: a text that takes a slot resets
 * it, so the text it displaces counts as unseen again). The times are in
 * microseconds: an EWMA of weight 1/8 and a max that decays by 1/8 at
 * every execution, so one slow run keeps a text out of pipelines for a
 * few dozen runs, not forever. */
struct stmt_heat {
	uint64_t hash[STMT_HEAT_SLOTS];
	uint32_t count[STMT_HEAT_SLOTS];
	uint32_t ewma_us[STMT_HEAT_SLOTS];
	uint32_t max_us[STMT_HEAT_SLOTS];
	uint8_t timed[STMT_HEAT_SLOTS];	/* 1 once a run of the text was timed */
};

uint64_t stmt_hash(const char *sql, int nparams);
/* "_pgbroker_<token>_<id>": the token (random per broker) keeps agents
 * from guessing the names ahead. */
void stmt_name(char *buf, size_t n, uint32_t token, uint32_t id);
/* The id sql is prepared under on this connection, or 0. */
uint32_t stmt_cache_find(const struct stmt_cache *c, uint64_t h, const char *sql, int nparams);
/* Record sql as prepared under a new id: 0 when full, too long or out of memory. */
uint32_t stmt_cache_add(struct stmt_cache *c, uint64_t h, const char *sql, int nparams);
/* Stop using id (the server may still hold it: ids are not reused). */
void stmt_cache_forget(struct stmt_cache *c, uint32_t id);
/* The connection's prepared statements are gone (DISCARD ALL, new connection). */
void stmt_cache_clear(struct stmt_cache *c);
/* Count one sighting of hash; returns how often it was seen lately. */
uint32_t stmt_heat_see(struct stmt_heat *t, uint64_t h);
void stmt_heat_cool(struct stmt_heat *t, uint64_t h);
/* One execution of the text with hash h took us microseconds. */
void stmt_time_add(struct stmt_heat *t, uint64_t h, uint64_t us);
/* 1 when the text's recent runs were quick: it was timed, its EWMA is at
 * most ewma_us and its decaying max at most max_us. A text never timed
 * (or displaced from its slot) is not quick. */
int stmt_time_quick(const struct stmt_heat *t, uint64_t h, uint32_t ewma_us, uint32_t max_us);

#endif
