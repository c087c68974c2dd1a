/* A bounded LRU cache of 2000 entries: it fills (400 inserts a second, so in 5 s) and
 * then evicts one entry per insert. Not a leak: a plateau. */
#include <stdlib.h>
#include "corpus.h"

#define CAPACITY 2000

struct node {
    long key;
    char payload[100];
    struct node *prev, *next;
};

static struct node *head, *tail;
static long size;

__attribute__((noinline)) void lru_put(long key) {
    struct node *n = malloc(sizeof *n);
    n->key = key;
    n->prev = NULL;
    n->next = head;
    if (head) head->prev = n;
    head = n;
    if (!tail) tail = n;
    if (++size > CAPACITY) {
        struct node *old = tail;
        tail = old->prev;
        tail->next = NULL;
        free(old);
        size--;
    }
}

int main(void) {
    for (long key = 0;; key++) {
        lru_put(key);
        pace(2500);
    }
}
