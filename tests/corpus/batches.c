/* Batch accumulate-and-release: 300 items collected over 1.5 s, then all freed at once.
 * A sawtooth, not a leak. */
#include <stdlib.h>
#include "corpus.h"

#define BATCH 300

static void *items[BATCH];

__attribute__((noinline)) void *collect_item(long i) {
    char *item = malloc(200);
    item[0] = (char)i;
    return item;
}

__attribute__((noinline)) void flush_batch(void) {
    for (int i = 0; i < BATCH; i++) free(items[i]);
}

int main(void) {
    for (long n = 0;; n++) {
        items[n % BATCH] = collect_item(n);
        if (n % BATCH == BATCH - 1) flush_batch();
        pace(5000);
    }
}
