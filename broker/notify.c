/* Readiness for a service manager: with libsystemd at build time the
 * broker speaks sd_notify (the unit is Type=notify), otherwise these do
 * nothing (the unit is Type=simple). */
#include <stdio.h>
#include <time.h>

#include "broker.h"
#include "clock.h"
#include "notify.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

void notify_ready(const char *status)
{
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_reloading(void)
{
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)clock_ns() / 1000);
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}
#else
void notify_ready(const char *status)
{
	(void)status;
}

void notify_reloading(void)
{
}

void notify_stopping(void)
{
}
#endif
