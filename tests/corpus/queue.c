/* Producer/consumer with cross-thread frees: every block is freed by the other thread;
 * the queue holds up to 64. Stable, not a leak. */
#include <pthread.h>
#include <stdlib.h>
#include "corpus.h"

#define SLOTS 64

static void *ring[SLOTS];
static int head, tail, count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;

__attribute__((noinline)) void *produce(long i) {
    long *item = malloc(128);
    *item = i;
    return item;
}

static void *consumer(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (count == 0) pthread_cond_wait(&changed, &lock);
        void *item = ring[head];
        head = (head + 1) % SLOTS;
        count--;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
        free(item);
    }
    return NULL;
}

int main(void) {
    pthread_t c;
    pthread_create(&c, NULL, consumer, NULL);
    for (long i = 0;; i++) {
        void *item = produce(i);
        pthread_mutex_lock(&lock);
        while (count == SLOTS) pthread_cond_wait(&changed, &lock);
        ring[tail] = item;
        tail = (tail + 1) % SLOTS;
        count++;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
        if (i % 10 == 9) pace(1000);
    }
}
