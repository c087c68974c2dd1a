/* The soak workload (cargo xtask soak): what a long session sees from a busy service.
 * It allocates LIVE blocks (default 1,000,000) and keeps them, then churns until killed:
 * each round starts THREADS short-lived threads (default 4), each doing 2,000
 * malloc/free pairs of sizes 16..4096 through a few call paths, and joins them. Prints
 * "ready" once the live set is in place, and "threads N" every 1,000 threads. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink;

__attribute__((noinline)) static void *path_a(size_t n) { return malloc(n); }
__attribute__((noinline)) static void *path_b(size_t n) { return malloc(n + 8); }
__attribute__((noinline)) static void *path_c(size_t n) { return calloc(1, n); }

static void *work(void *arg) {
    uint64_t rng = (uintptr_t)arg * 0x9e3779b97f4a7c15u + 1;
    for (int i = 0; i < 2000; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        size_t size = 16 + rng % 4080;
        void *p = (rng >> 32) % 3 == 0 ? path_a(size) : (rng >> 32) % 3 == 1 ? path_b(size) : path_c(size);
        sink = p;
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    long live = argc > 1 ? atol(argv[1]) : 1000000;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    void **kept = malloc(sizeof(void *) * (size_t)live);
    for (long i = 0; i < live; i++) kept[i] = malloc(32);
    sink = kept;
    printf("ready\n");
    fflush(stdout);
    pthread_t t[64];
    for (uint64_t started = 0;;) {
        for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(started + i));
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
        started += threads;
        if (started % 1000 < (uint64_t)threads) {
            printf("threads %lu\n", (unsigned long)started);
            fflush(stdout);
        }
    }
}
