/* An unbounded per-key cache: every request brings a new key, nothing is evicted
 * (200 inserts a second). The lookup's scratch buffer is freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "corpus.h"

struct entry {
    char key[48];
    long value;
    struct entry *next;
};

static struct entry *buckets[4096];

__attribute__((noinline)) void cache_insert(long key) {
    struct entry *e = malloc(sizeof *e);
    snprintf(e->key, sizeof e->key, "user:%ld", key);
    e->value = key * 7;
    e->next = buckets[key % 4096];
    buckets[key % 4096] = e;
}

__attribute__((noinline)) long handle_lookup(long key) {
    char *scratch = malloc(256);
    snprintf(scratch, 256, "user:%ld", key);
    corpus_sink = scratch;
    long found = 0;
    for (struct entry *e = buckets[key % 4096]; e; e = e->next)
        if (strcmp(e->key, scratch) == 0) found = e->value;
    free(scratch);
    return found;
}

int main(void) {
    for (long key = 0;; key++) {
        handle_lookup(key);
        cache_insert(key);
        pace(5000);
    }
}
