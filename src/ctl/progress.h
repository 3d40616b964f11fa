/*
 * Progress display for a job bjctl waits on: a bar redrawn in place with
 * percent, rate and time left when stderr is a terminal, plain lines at
 * most once a second otherwise (logs and pipes get no control codes).
 */
#ifndef BJ_CTL_PROGRESS_H
#define BJ_CTL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct Progress {
    const char *id;
    bool tty;
    bool drawn;               /* a bar is on screen, needs a newline */
    int64_t last_line_ms;     /* when the last plain line was printed */
    int64_t prev_ms, prev_cur;
    double rate;              /* bytes/s, smoothed */
    bool final;               /* the last update: print it in any case */
} Progress;

void progress_init(Progress *p, const char *id);
/* How often the caller should sample progress, in ms. */
int progress_interval_ms(const Progress *p);
void progress_update(Progress *p, const char *status, int64_t cur,
                     int64_t total);
/* Ends the bar's line so later output starts on a fresh line. */
void progress_finish(Progress *p);

#endif
