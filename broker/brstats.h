/* stats.c: the broker's side of the stats segment (common/stats.h): open,
 * fill from the live objects, publish under the seqlock, close. (Named
 * brstats.h so as not to shadow common/stats.h.) */
#ifndef PGB_BROKER_BRSTATS_H
#define PGB_BROKER_BRSTATS_H

struct broker;
struct stats_health;

int stats_open(struct broker *b);
void stats_fill(struct broker *b);
void stats_publish(struct broker *b);
void stats_publish_sample(struct broker *b, struct stats_health *h);
void stats_close(struct broker *b);

#endif
