/*
 * Progress display (see progress.h).
 */
#include "ctl/progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl/qmpc.h"
#include "ctl/units.h"

enum { BAR_WIDTH = 30 };

void progress_init(Progress *p, const char *id)
{
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->tty = isatty(STDERR_FILENO);
    p->prev_ms = -1;
}

int progress_interval_ms(const Progress *p)
{
    return p->tty ? 200 : 1000;
}

void progress_update(Progress *p, const char *status, int64_t cur,
                     int64_t total)
{
    int64_t now = qmpc_now_ms();
    double pct = total > 0 ? 100.0 * cur / total : 0;
    char rate[32], eta[32], done[32], all[32];

    if (p->prev_ms >= 0 && now > p->prev_ms) {
        double r = (cur - p->prev_cur) * 1000.0 / (now - p->prev_ms);

        if (r < 0) {
            r = 0;             /* a mirror's total grows with new writes */
        }
        /* Smooth over roughly the last few samples. */
        p->rate = p->rate > 0 ? 0.7 * p->rate + 0.3 * r : r;
    }
    p->prev_ms = now;
    p->prev_cur = cur;

    units_format_size(rate, sizeof(rate), p->rate);
    units_format_duration(eta, sizeof(eta),
                          p->rate > 0 ? (total - cur) / p->rate : -1);
    if (cur >= total && total > 0) {
        snprintf(eta, sizeof(eta), "0s");
    }
    if (p->tty) {
        char bar[BAR_WIDTH + 1];
        int fill = total > 0 ? (int)(BAR_WIDTH * (double)cur / total) : 0;

        if (fill > BAR_WIDTH) {
            fill = BAR_WIDTH;
        }
        memset(bar, '#', fill);
        memset(bar + fill, '.', BAR_WIDTH - fill);
        bar[BAR_WIDTH] = '\0';
        fprintf(stderr, "\r%s [%s] %5.1f%% %10s/s ETA %-8s %-8s\033[K",
                p->id, bar, pct, rate, eta, status);
        p->drawn = true;
        fflush(stderr);
        return;
    }
    if (!p->final && p->last_line_ms && now - p->last_line_ms < 1000) {
        return;
    }
    p->last_line_ms = now;
    units_format_size(done, sizeof(done), cur);
    units_format_size(all, sizeof(all), total);
    fprintf(stderr, "%s: %s %.1f%% (%s of %s), %s/s, ETA %s\n", p->id,
            status, pct, done, all, rate, eta);
    fflush(stderr);
}

void progress_finish(Progress *p)
{
    if (p->drawn) {
        fputc('\n', stderr);
        fflush(stderr);
        p->drawn = false;
    }
}
