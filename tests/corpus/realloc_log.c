/* A log buffer grown by realloc, 64 bytes every 10 ms, never trimmed: one block whose
 * size only grows. */
#include <stdlib.h>
#include <string.h>
#include "corpus.h"

static char *log_buffer;
static size_t log_size;

__attribute__((noinline)) void append_log(long n) {
    log_buffer = realloc(log_buffer, log_size + 64);
    memset(log_buffer + log_size, (int)n, 64);
    log_size += 64;
}

int main(void) {
    for (long n = 0;; n++) {
        append_log(n);
        pace(10000);
    }
}
