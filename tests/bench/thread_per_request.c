/* A server that starts one thread per request (cargo xtask realworld): each thread
 * allocates and frees a little, then exits; the main thread joins it. Runs N requests
 * (default 5,000) and exits 0. Every block the program allocates is freed. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

static void *handle(void *arg) {
    char *request = malloc(512);
    memset(request, (int)(long)arg, 512);
    char *reply = malloc(2048);
    memcpy(reply, request, 512);
    sink = reply;
    free(request);
    free(reply);
    return NULL;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5000;
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, handle, (void *)i) != 0) return 1;
        pthread_join(t, NULL);
    }
    return 0;
}
