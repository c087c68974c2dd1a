/* A cache that warms up, then stays flat: 800 entries over the first 8 seconds, then
 * only lookups. Not a leak. */
#include <stdlib.h>
#include "corpus.h"

static void *cache[800];

__attribute__((noinline)) void warm_insert(long i) {
    cache[i] = malloc(512);
}

int main(void) {
    for (long i = 0;; i++) {
        if (i < 800) warm_insert(i);
        else corpus_sink = cache[i % 800];
        pace(10000);
    }
}
