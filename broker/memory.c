/* The memory budget: bytes held for agents (requests, responses not yet in
 * a ring, rows and input being read), each agent's share, and the backends
 * paused while the budget or an agent's ring is full. */
#include <stdint.h>

#include "broker.h"
#include "exec.h"
#include "memory.h"

void mem_init(struct broker *b)
{
	list_init(&b->mem.waiting);
	list_init(&b->mem.resume);
}

uint64_t mem_budget(const struct broker *b)
{
	return (uint64_t)b->cfg.max_memory_mb << 20;
}

uint64_t mem_share(const struct broker *b)
{
	return mem_budget(b) / 2;
}

uint64_t mem_row_max(const struct broker *b)
{
	return mem_budget(b) / 4;
}

void mem_charge(struct broker *b, struct agent *a, uint64_t n)
{
	b->mem.used += n;
	if (b->mem.used > b->mem.peak)
		b->mem.peak = b->mem.used;
	if (a)
		a->mem += n;
}

void mem_uncharge(struct broker *b, struct agent *a, uint64_t n)
{
	mem_budget_release(&b->mem, n);
	if (a)
		a->mem -= n < a->mem ? n : a->mem;
}

void mem_budget_release(struct mem_budget *m, uint64_t n)
{
	m->used -= n < m->used ? n : m->used;
}

/* Responses of the agent's ring: two chunks queued (one of them being
 * written) are enough to keep it busy. */
int mem_agent_full(const struct broker *b, const struct agent *a)
{
	(void)b;
	return a->resp_mem >= a->resp.size;
}

static void resume_later(struct broker *b, struct backend *be)
{
	list_del(&be->pause_link);
	be->paused = PAUSE_RESUME;
	list_add_tail(&b->mem.resume, &be->pause_link);
}

void mem_resp_charge(struct broker *b, struct agent *a, uint64_t n)
{
	mem_charge(b, a, n);
	a->resp_mem += n;
}

void mem_resp_uncharge(struct broker *b, struct agent *a, uint64_t n)
{
	mem_uncharge(b, a, n);
	a->resp_mem -= n < a->resp_mem ? n : a->resp_mem;
	/* Resume at half: the ring still has a chunk to take meanwhile. */
	while (!list_empty(&a->paused) && a->resp_mem < a->resp.size / 2)
		resume_later(b, list_entry(a->paused.next, struct backend, pause_link));
}

int mem_refuse(const struct broker *b, const struct agent *a)
{
	return b->mem.used >= mem_budget(b) || a->mem + a->nbytes >= mem_share(b);
}

void mem_pause(struct broker *b, struct backend *be, struct agent *a, int why)
{
	list_del(&be->pause_link);
	be->paused = why;
	if (why == PAUSE_AGENT && a)
		list_add_tail(&a->paused, &be->pause_link);
	else
		list_add_tail(&b->mem.waiting, &be->pause_link);
}

void mem_unpause(struct backend *be)
{
	list_del(&be->pause_link);
	be->paused = PAUSE_NONE;
}

void mem_agent_gone(struct broker *b, struct agent *a)
{
	while (!list_empty(&a->paused))
		resume_later(b, list_entry(a->paused.next, struct backend, pause_link));
}

void mem_run_resumes(struct broker *b)
{
	struct list *pos;

	/* Under the budget again, with a margin so that a resumed backend
	 * reads more than one socket's worth before it pauses again. */
	if (!list_empty(&b->mem.waiting) && b->mem.used < mem_budget(b) - mem_budget(b) / 8)
		while (!list_empty(&b->mem.waiting))
			resume_later(b, list_entry(b->mem.waiting.next, struct backend,
						   pause_link));
	while ((pos = list_pop(&b->mem.resume))) {
		struct backend *be = list_entry(pos, struct backend, pause_link);

		be->paused = PAUSE_NONE;
		exec_resume(b, be);
	}
}
