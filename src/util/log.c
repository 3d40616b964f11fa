#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int current_level = -1;

static LogLevel level_from_env(void)
{
    const char *s = getenv("BLOCKJOBD_LOG");
    if (!s) {
        return LOG_LEVEL_WARN;
    }
    if (!strcmp(s, "error")) {
        return LOG_LEVEL_ERROR;
    } else if (!strcmp(s, "info")) {
        return LOG_LEVEL_INFO;
    } else if (!strcmp(s, "debug")) {
        return LOG_LEVEL_DEBUG;
    }
    return LOG_LEVEL_WARN;
}

void log_set_level(LogLevel level)
{
    current_level = level;
}

static LogLevel log_get_level(void)
{
    int l = current_level;
    if (l < 0) {
        l = level_from_env();
        current_level = l;
    }
    return (LogLevel)l;
}

void log_msg(LogLevel level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    if (level > log_get_level()) {
        return;
    }
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "blockjobd: %s: %s\n", names[level], buf);
}
