/* High churn: 20,000 messages a second parsed and freed, with a few hundred in flight;
 * one in 2,000 is kept forever (10 a second) by the same function. */
#include <stdlib.h>
#include <string.h>
#include "corpus.h"

#define IN_FLIGHT 400

static void *flight[IN_FLIGHT];
static void *kept[1 << 20];
static long kept_count;

__attribute__((noinline)) void *parse_message(long n) {
    char *m = malloc(64 + n % 64);
    memset(m, 0, 16);
    if (n % 2000 == 0) kept[kept_count++ % (1 << 20)] = m; /* the bug: kept, never freed */
    return m;
}

int main(void) {
    for (long n = 0;; n++) {
        void *m = parse_message(n);
        int slot = (int)(n % IN_FLIGHT);
        if (flight[slot] && (long)(n - IN_FLIGHT) % 2000 != 0) free(flight[slot]);
        flight[slot] = m;
        if (n % 100 == 99) pace(5000);
    }
}
