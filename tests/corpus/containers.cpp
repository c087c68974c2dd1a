// C++ containers that keep growing: a std::map of strings that only gets inserts (200 a
// second). An index vector built from scratch and dropped each time is not a leak.
#include <map>
#include <string>
#include <vector>
#include "corpus.h"

static std::map<long, std::string> *seen;

__attribute__((noinline)) void remember(long id) {
    (*seen)[id] = std::string(60, static_cast<char>('a' + id % 26));
}

__attribute__((noinline)) long rebuild_index(long id) {
    std::vector<long> index;
    for (long i = 0; i < 100; i++) index.push_back(id + i);
    corpus_sink = index.data();
    return index.back();
}

int main() {
    seen = new std::map<long, std::string>();
    for (long id = 0;; id++) {
        remember(id);
        rebuild_index(id);
        pace(5000);
    }
}
