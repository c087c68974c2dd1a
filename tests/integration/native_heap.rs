//! Exact figures for every traced allocator function, mmap and friends, threads, C++ and
//! Rust.

use serde_json::Value;

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        every_allocator_function_and_memory_syscall_exactly,
        frees_on_another_thread_leave_nothing_outstanding,
        cpp_operator_new_and_strings,
        rust_global_allocator
    ]
}

/// The site whose first frame is `function` at the `@marker` line of `source`.
fn site_at_line<'a>(report: &'a Value, function: &str, source: &str, marker: &str) -> &'a Value {
    let line = line_of(source, marker);
    let sites: Vec<&Value> =
        sites_at(report, function).into_iter().filter(|s| s["frames"][0]["line"] == line).collect();
    assert_eq!(sites.len(), 1, "one site at {function} {source}:{line}; all sites:\n{}", pretty(report));
    let site = sites[0];
    assert_frame(site, function, source, line);
    site
}

fn no_site_at_line(report: &Value, function: &str, source: &str, marker: &str) {
    let line = line_of(source, marker);
    let found = sites_at(report, function).into_iter().any(|s| s["frames"][0]["line"] == line);
    assert!(!found, "no site may be reported at {source}:{line} ({marker})");
}

fn pretty(report: &Value) -> String {
    serde_json::to_string_pretty(&report["sites"]).unwrap()
}

/// Attaches to a fixture, lets it work, stops the tracer, returns the final report.
fn trace(source: &str) -> Value {
    let mut fixture = Fixture::start(&fixture(source));
    let tracer = Tracer::attach(fixture.pid(), &["--top", "0", "--interval", "1h"]);
    fixture.go();
    let run = tracer.stop();
    assert!(run.status.success(), "leaktracer failed: {}\n{}", run.status, run.stderr);
    fixture.finish();
    run.final_report()
}

fn every_allocator_function_and_memory_syscall_exactly() {
    let src = "alloc_family.c";
    let report = trace(src);
    let heap = |function, marker, allocator: &[&str], live_count, live_bytes, allocs, frees| {
        let site = site_at_line(&report, function, src, marker);
        assert_eq!(site["kind"], "heap");
        assert!(
            allocator.iter().any(|a| site["allocator"] == *a),
            "{function}: allocator {} not in {allocator:?}",
            site["allocator"]
        );
        assert_eq!(live(site), (live_count, live_bytes), "live figures of {function} ({marker})");
        assert_eq!(counts(site), (allocs, frees), "allocs/frees of {function} ({marker})");
    };
    heap("leak_malloc", "leak_malloc", &["malloc"], 10, 1000, 10, 0);
    heap("leak_calloc", "leak_calloc", &["calloc"], 7, 1050, 7, 0);
    // Three chains of five reallocs from NULL: glibc's realloc(NULL) calls malloc, which
    // must not be counted again; each realloc releases the block before it.
    heap("leak_realloc_chain", "leak_realloc", &["realloc"], 3, 768, 15, 12);
    heap("leak_reallocarray", "leak_reallocarray", &["reallocarray"], 4, 384, 4, 0);
    heap("leak_posix_memalign", "leak_posix_memalign", &["posix_memalign"], 5, 1000, 5, 0);
    // glibc's aligned_alloc is an alias of memalign: one probe, reported as memalign.
    heap("leak_aligned_alloc", "leak_aligned_alloc", &["aligned_alloc", "memalign"], 6, 768, 6, 0);
    heap("leak_memalign", "leak_memalign", &["memalign"], 2, 600, 2, 0);
    heap("leak_valloc", "leak_valloc", &["valloc"], 3, 3000, 3, 0);
    heap("leak_pvalloc", "leak_pvalloc", &["pvalloc"], 2, 10000, 2, 0);
    heap("balanced", "balanced", &["malloc"], 0, 0, 20, 20);

    // Failures count nothing; a failed realloc leaves its block live; realloc(p, 0)
    // frees p.
    no_site_at_line(&report, "failures", src, "failed_malloc");
    no_site_at_line(&report, "failures", src, "failed_realloc");
    no_site_at_line(&report, "failures", src, "failed_mmap");
    no_site_at_line(&report, "failures", src, "failed_posix_memalign");
    no_site_at_line(&report, "failures", src, "failed_calloc");
    no_site_at_line(&report, "failures", src, "failed_memalign");
    heap("failures", "kept_after_failed_realloc", &["malloc"], 1, 10, 1, 0);
    heap("failures", "freed_by_realloc_zero", &["malloc"], 0, 0, 1, 1);

    let mapping = |function, marker, backing, live_count, live_bytes, allocs, frees| {
        let site = site_at_line(&report, function, src, marker);
        assert_eq!(site["kind"], "mmap");
        assert_eq!(site["backing"], backing, "{function}");
        assert_eq!(live(site), (live_count, live_bytes), "live figures of {function} ({marker})");
        assert_eq!(counts(site), (allocs, frees), "allocs/frees of {function} ({marker})");
    };
    mapping("leak_mmap", "leak_mmap", "anonymous", 3, 3 * 12288, 3, 0);
    mapping("mmap_balanced", "mmap_balanced", "anonymous", 0, 0, 4, 4);
    mapping("leak_file_mmap", "leak_file_mmap", "file", 2, 8192, 2, 0);
    mapping("mmap_hole", "mmap_hole", "anonymous", 1, 3 * 4096, 1, 0);
    mapping("grow_mremap", "mremap_source", "anonymous", 0, 0, 1, 1);
    // glibc's mremap wrapper moves sp before the syscall: only unwinding with its CFI
    // finds the caller.
    mapping("grow_mremap", "leak_mremap", "anonymous", 1, 4 * 4096, 1, 0);

    // The leaking function's caller is the next frame.
    let site = site_at_line(&report, "leak_malloc", src, "leak_malloc");
    assert_eq!(site["frames"][1]["function"], "main");

    let coverage = &report["coverage"];
    for counter in
        ["lost_events", "stack_errors", "dropped", "unknown_frees", "address_reused", "decode_errors"]
    {
        assert_eq!(coverage[counter], 0, "coverage.{counter}: {coverage}");
    }
    assert!(coverage["events"].as_u64().unwrap() > 100);
}

fn frees_on_another_thread_leave_nothing_outstanding() {
    let src = "threads.c";
    let report = trace(src);
    let produce = site_at_line(&report, "produce_one", src, "produce");
    assert_eq!(live(produce), (0, 0));
    assert_eq!(counts(produce), (1000, 1000));
    // One block leaked by each thread, from two call paths (producer and consumer).
    let line = line_of(src, "thread_leak");
    let leaks = sites_at(&report, "thread_leak");
    assert_eq!(leaks.len(), 2, "{}", pretty(&report));
    for leak in leaks {
        assert_frame(leak, "thread_leak", src, line);
        assert_eq!(live(leak), (1, 64));
    }
    // unknown_frees is not zero here: at thread exit glibc frees per-thread state (the
    // tcache) that it allocated internally, where no traced function saw it.
}

fn cpp_operator_new_and_strings() {
    let report = trace("leak.cpp");
    // 12 Subscribers of 64 bytes through operator new; demangled names in the stack.
    let subscribe: Vec<_> =
        sites_through(&report, "operator new").into_iter().filter(|s| live(s) == (12, 12 * 64)).collect();
    assert_eq!(subscribe.len(), 1, "{}", pretty(&report));
    // Five std::string objects (32 bytes) and their 101-byte buffers.
    let strings = sites_through(&report, "operator new")
        .into_iter()
        .filter(|s| live(s) == (5, 5 * 32) || live(s) == (5, 5 * 101))
        .count();
    assert_eq!(strings, 2, "{}", pretty(&report));
}

fn rust_global_allocator() {
    let report = trace("leak.rs");
    let record = sites_through(&report, "leak::record");
    assert_eq!(record.len(), 1, "{}", pretty(&report));
    assert_eq!(live(record[0]), (9, 9000));
    assert_eq!(record[0]["allocator"], "malloc");
}
