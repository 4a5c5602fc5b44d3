/* notify.c: service manager readiness (sd_notify), a no-op without it. */
#ifndef PGB_BROKER_NOTIFY_H
#define PGB_BROKER_NOTIFY_H

void notify_ready(const char *status);
void notify_reloading(void);
void notify_stopping(void);

#endif
