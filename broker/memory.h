/* memory.c: the memory budget (max_memory_mb): the bytes the broker holds
 * for agents, counted where they are allocated and freed, each agent's
 * share of them, and backends paused (not read) while the budget or an
 * agent's ring is full. */
#ifndef PGB_BROKER_MEMORY_H
#define PGB_BROKER_MEMORY_H

#include <stdint.h>

struct broker;
struct agent;
struct backend;
struct list;
struct mem_budget;

/* libpq keeps its buffers at their peak size: a backend whose buffers grew
 * past this is closed after its statement instead of going back to the pool. */
#define BE_BUF_BLOAT (1u << 20)

void mem_init(struct broker *b);
/* max_memory_mb in bytes. */
uint64_t mem_budget(const struct broker *b);
/* What one agent may hold: half the budget. */
uint64_t mem_share(const struct broker *b);
/* The largest row a backend may read: a row is held twice while it is read
 * (libpq's buffer, then its result), so a quarter of the budget. */
uint64_t mem_row_max(const struct broker *b);
/* Count n bytes held for a (NULL: an agent that is gone), or no longer. */
void mem_charge(struct broker *b, struct agent *a, uint64_t n);
void mem_uncharge(struct broker *b, struct agent *a, uint64_t n);
/* A request's blob is freed (request_free has no broker at hand). */
void mem_budget_release(struct mem_budget *m, uint64_t n);
/* The same for a response queued to a and then freed: also resumes the
 * backends paused until a's responses drain. */
void mem_resp_charge(struct broker *b, struct agent *a, uint64_t n);
void mem_resp_uncharge(struct broker *b, struct agent *a, uint64_t n);
/* New work from a is refused (PB008): it holds its share, or the broker
 * its budget. */
int mem_refuse(const struct broker *b, const struct agent *a);
/* Whether a's queued responses are enough to stop reading its results. */
int mem_agent_full(const struct broker *b, const struct agent *a);
/* Stop reading be: PAUSE_AGENT until a's responses drain, PAUSE_BUDGET until
 * the broker is under its budget. */
void mem_pause(struct broker *b, struct backend *be, struct agent *a, int why);
/* No longer paused (its statement ended): off every list. */
void mem_unpause(struct backend *be);
/* a is going: its paused backends read on (their rows are dropped). */
void mem_agent_gone(struct broker *b, struct agent *a);
/* End of a loop pass: read again the backends whose reason to pause went. */
void mem_run_resumes(struct broker *b);

#endif
