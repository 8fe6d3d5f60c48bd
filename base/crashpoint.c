/* Crash points for the crash tests (base/crashpoint.h). */
#include "base/crashpoint.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

static char armed[64];

void kms_crash_point_arm(const char *name)
{
    snprintf(armed, sizeof(armed), "%s", name != NULL ? name : "");
}

void kms_crash_point(const char *name)
{
    if (armed[0] == '\0' || strcmp(armed, name) != 0)
        return;
    kms_log_warn("TEST CRASH POINT %s reached: SIGKILL", name);
    kill(getpid(), SIGKILL);
    _exit(137); /* not reached */
}
