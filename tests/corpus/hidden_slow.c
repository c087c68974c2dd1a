/* A slow leak hidden under large stable allocations: 64 blocks of 1 MiB, one replaced
 * every 100 ms (about 64 MiB live, flat; the tracer sees the replacements fill up to 64
 * after it attaches), and 20 small event notes a second kept forever. */
#include <stdlib.h>
#include <string.h>
#include "corpus.h"

#define BLOCKS 64

static char *blocks[BLOCKS];
static void *notes[1 << 20];

__attribute__((noinline)) void refresh_block(long i) {
    free(blocks[i % BLOCKS]);
    blocks[i % BLOCKS] = malloc(1 << 20);
    memset(blocks[i % BLOCKS], 1, 4096);
}

__attribute__((noinline)) void note_event(long i) {
    notes[i % (1 << 20)] = malloc(48);
    corpus_sink = notes[i % (1 << 20)];
}

int main(void) {
    for (long i = 0; i < BLOCKS; i++) refresh_block(i);
    for (long i = 0;; i++) {
        if (i % 2 == 0) refresh_block(i / 2);
        note_event(i);
        pace(50000);
    }
}
