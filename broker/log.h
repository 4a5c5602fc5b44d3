/* log.c: the broker's log, to stderr or syslog. */
#ifndef PGB_BROKER_LOG_H
#define PGB_BROKER_LOG_H

enum { LV_ERROR = 0, LV_WARN, LV_INFO, LV_DEBUG };
extern int log_level;
/* Warnings a flood would repeat: this many per window, then a count. */
#define WARN_BURST 5
#define WARN_WINDOW_MS 10000
void log_open(int level, int use_syslog);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LV_ERROR, __VA_ARGS__)
#define log_warn(...)  do { if (log_level >= LV_WARN) log_msg(LV_WARN, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_level >= LV_INFO) log_msg(LV_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_level >= LV_DEBUG) log_msg(LV_DEBUG, __VA_ARGS__); } while (0)

#endif
