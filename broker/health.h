/* health.c: sampling the pool's health for the stats segment. */
#ifndef PGB_BROKER_HEALTH_H
#define PGB_BROKER_HEALTH_H

#include <stdint.h>

struct broker;

int health_init(struct broker *b);
void health_timers(struct broker *b, int64_t *next_ns);
void health_free(struct broker *b);
void health_configure(struct broker *b);

#endif
