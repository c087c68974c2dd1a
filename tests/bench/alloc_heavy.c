/* The allocation-heavy benchmark workload: fixed work, timed from inside so that only
 * the allocator calls are measured (not start-up, attach or detach).
 *
 * ITERATIONS rounds over a live set of SLOTS blocks: each round frees a block and
 * allocates another through malloc, calloc or realloc, of a size between 16 and 4096
 * bytes; one block in LEAK_EVERY is never freed (a small deliberate leak). Calls come
 * through a few levels of functions, as in real code. Prints one line:
 * "calls N elapsed_ns T".
 *
 * Other modes, for the other benchmarks: "ITER hold N" allocates N blocks of 32 bytes,
 * keeps them and exits; "ITER threads N" starts N threads that sleep, prints "ready" and
 * sleeps until killed. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 4096
#define LEAK_EVERY 1000

static void *slots[SLOTS];
static void *volatile sink;
static uint64_t calls;
static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

__attribute__((noinline)) static void *make(size_t size, unsigned how, void *old) {
    calls++;
    switch (how) {
    case 0: return calloc(1, size);
    case 1: return realloc(old, size);
    default: return malloc(size);
    }
}

__attribute__((noinline)) static void churn_one(unsigned i) {
    uint64_t r = next();
    size_t size = 16 + (r % 4081);
    unsigned how = (r >> 20) % 4;
    void *old = slots[i];
    if (how == 1) {
        slots[i] = make(size, 1, old);
        return;
    }
    if (old != NULL && (r >> 40) % LEAK_EVERY != 0) {
        free(old);
        calls++;
    }
    slots[i] = make(size, how, NULL);
}

__attribute__((noinline)) static void round_of(unsigned n) {
    for (unsigned k = 0; k < n; k++) churn_one((unsigned)(next() % SLOTS));
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    unsigned long iterations = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    if (argc > 3 && strcmp(argv[2], "hold") == 0) {
        unsigned long n = strtoul(argv[3], NULL, 10);
        void **held = calloc(n + 1, sizeof *held);
        for (unsigned long i = 0; i < n; i++) held[i] = malloc(32);
        sink = held;
        printf("calls %lu elapsed_ns 0\n", n + 1);
        return 0;
    }
    if (argc > 3 && strcmp(argv[2], "threads") == 0) {
        unsigned long n = strtoul(argv[3], NULL, 10);
        for (unsigned long i = 0; i < n; i++) {
            pthread_t t;
            pthread_create(&t, NULL, sleeper, NULL);
        }
        printf("ready\n");
        fflush(stdout);
        for (;;) pause();
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (unsigned long i = 0; i < iterations; i += 1000) round_of(1000);
    clock_gettime(CLOCK_MONOTONIC, &b);
    sink = slots[0];
    uint64_t ns = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)(b.tv_nsec - a.tv_nsec);
    printf("calls %llu elapsed_ns %llu\n", (unsigned long long)calls, (unsigned long long)ns);
    return 0;
}
