/* A small "service" with a classic leak, bundled for `cargo xtask demo`.
 *
 * Every request creates a session and stores it in a cache that nothing ever evicts
 * (the leak), and uses a scratch buffer that it frees (no leak). About 200 requests a
 * second; it runs until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct session {
    char token[64];
    char user[32];
    long last_seen;
    struct session *next;
};

#define BUCKETS 1024
static struct session *cache[BUCKETS];

__attribute__((noinline)) static struct session *open_session(long request) {
    struct session *s = malloc(sizeof *s);
    snprintf(s->token, sizeof s->token, "tok-%08lx-%ld", (unsigned long)random(), request);
    snprintf(s->user, sizeof s->user, "user%ld", request % 977);
    s->last_seen = time(NULL);
    return s;
}

/* The bug: sessions go in, nothing ever takes them out. */
__attribute__((noinline)) static void cache_session(struct session *s, long request) {
    struct session **bucket = &cache[request % BUCKETS];
    s->next = *bucket;
    *bucket = s;
}

__attribute__((noinline)) static size_t render_page(long request) {
    char *scratch = malloc(16384);
    int n = snprintf(scratch, 16384, "<html>request %ld</html>", request);
    size_t len = strlen(scratch) + (size_t)n;
    free(scratch);
    return len;
}

static void handle(long request) {
    cache_session(open_session(request), request);
    render_page(request);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("session_cache: pid %d serving requests\n", getpid());
    for (long request = 0;; request++) {
        handle(request);
        if (request % 1000 == 0 && request > 0) printf("session_cache: %ld requests served\n", request);
        usleep(5000);
    }
}
