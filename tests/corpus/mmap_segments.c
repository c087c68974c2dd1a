/* An mmap leak beside a scratch mapping: 10 segments of 64 KiB mapped a second and never
 * unmapped; a 256 KiB scratch mapping made and unmapped each time. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "corpus.h"

__attribute__((noinline)) void *map_segment(void) {
    char *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p[0] = 1;
    return p;
}

__attribute__((noinline)) void scratch_mapping(void) {
    char *p = mmap(NULL, 262144, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 1, 4096);
    munmap(p, 262144);
}

int main(void) {
    for (;;) {
        corpus_sink = map_segment();
        scratch_mapping();
        pace(100000);
    }
}
