/* Shared by the corpus programs: pacing. Each program runs until killed. */
#ifndef CORPUS_H
#define CORPUS_H
#include <time.h>

static void *volatile corpus_sink;

/* Sleeps until `period_us` after the previous call: a steady rate. */
static void pace(long period_us) {
    static struct timespec next;
    if (next.tv_sec == 0) clock_gettime(CLOCK_MONOTONIC, &next);
    next.tv_nsec += period_us * 1000;
    while (next.tv_nsec >= 1000000000) {
        next.tv_nsec -= 1000000000;
        next.tv_sec++;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
}
#endif
