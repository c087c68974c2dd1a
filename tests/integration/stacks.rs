//! Right stacks with and without frame pointers: every allocation is charged to the
//! function of the program that really made it, through frameless library code
//! (strdup, fopen, operator new, std::string, Rust's allocator shims).

use serde_json::Value;

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![
        c_through_strdup_and_fopen_with_frame_pointers,
        c_through_strdup_and_fopen_without_frame_pointers,
        frame_pointers_alone_lose_the_caller_of_frameless_code,
        cpp_new_string_vector_make_unique_with_frame_pointers,
        cpp_new_string_vector_make_unique_without_frame_pointers,
        rust_vec_string_format_with_frame_pointers,
        rust_vec_string_format_without_frame_pointers,
        omitted_frame_pointers_give_complete_stacks,
        stripped_binaries_are_named_by_minidebuginfo_or_module_and_offset
    ]
}

/// Traces a fixture built `build`, and checks each `expect FUNCTION COUNT BYTES` line it
/// printed: the sites whose first frame of the program's own code is FUNCTION, at its
/// `@FUNCTION` line, with CALLER (`@FUNCTION` → caller from `callers`) the next own frame,
/// hold exactly COUNT blocks and BYTES bytes.
fn check(source: &str, build: Build, callers: &[(&str, &str)], unwind: &str) -> Value {
    let mut fixture = Fixture::start(&fixture_built(source, build));
    let tracer = Tracer::attach(fixture.pid(), &["--top", "0", "--interval", "1h", "--unwind", unwind]);
    fixture.go();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let expected = expectations(&fixture.finish());
    assert_eq!(expected.len(), callers.len(), "expectations printed by {source}");
    let report = run.final_report();
    let sites: Vec<&Value> = memory_sites(&report).collect();
    for (function, count, bytes) in &expected {
        let caller = callers
            .iter()
            .find(|(f, _)| f == function)
            .unwrap_or_else(|| panic!("no caller for {function}"))
            .1;
        let line = line_of(source, function);
        let mine: Vec<&Value> = sites
            .iter()
            .copied()
            .filter(|s| {
                own_frames(s, source)
                    .first()
                    .is_some_and(|f| f["function"].as_str().is_some_and(|n| names(n, function)))
            })
            .collect();
        let total = mine.iter().fold((0, 0), |(c, b), s| (c + live(s).0, b + live(s).1));
        assert_eq!(
            total,
            (*count, *bytes),
            "{source} ({build:?}, --unwind {unwind}): live at {function}; sites:\n{}",
            serde_json::to_string_pretty(&sites).unwrap()
        );
        for site in mine.iter().filter(|s| live(s).0 > 0) {
            let own = own_frames(site, source);
            assert_eq!(own[0]["line"], line, "{function}'s line in {site}");
            let next = own.get(1).and_then(|f| f["function"].as_str()).unwrap_or("(none)");
            assert!(
                names(next, caller),
                "{source} ({build:?}): the caller of {function} is {caller}, not {next}; {site}"
            );
        }
    }
    report
}

const C_CALLERS: &[(&str, &str)] = &[("intern", "intern_all")];
const CPP_CALLERS: &[(&str, &str)] =
    &[("subscribe", "main"), ("keep_name", "main"), ("grow_history", "main"), ("make_widget", "main")];
const RS_CALLERS: &[(&str, &str)] = &[("record", "main"), ("name", "main"), ("describe", "main")];

/// fopen's FILE: glibc 2.36 allocates a 472-byte `struct locked_FILE` and nothing more
/// until the first read. (Another glibc may differ: said plainly rather than failed on.)
fn check_fopen(report: &Value) {
    // SAFETY: returns a static string.
    let glibc = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy();
    assert_eq!(glibc, "2.36", "this check knows glibc 2.36's FILE (472 bytes); teach it glibc {glibc}'s");
    let sites: Vec<&Value> = memory_sites(report).collect();
    let logs: Vec<&Value> = sites
        .iter()
        .copied()
        .filter(|s| own_frames(s, "frames.c").first().is_some_and(|f| f["function"] == "open_log"))
        .collect();
    assert_eq!(logs.len(), 1, "{}", serde_json::to_string_pretty(&sites).unwrap());
    assert_eq!(live(logs[0]), (3, 3 * 472));
    let own = own_frames(logs[0], "frames.c");
    assert_eq!(own[0]["line"], line_of("frames.c", "open_log"));
    assert_eq!(own[1]["function"], "main");
    assert!(
        logs[0]["frames"][0]["function"].as_str().unwrap().contains("fopen"),
        "fopen is the innermost frame"
    );
}

fn c_through_strdup_and_fopen_with_frame_pointers() {
    let report = check("frames.c", Build::FramePointers, C_CALLERS, "eh-frame");
    check_fopen(&report);
}

fn c_through_strdup_and_fopen_without_frame_pointers() {
    let report = check("frames.c", Build::NoFramePointers, C_CALLERS, "eh-frame");
    check_fopen(&report);
}

/// The same program walked by frame pointers alone loses the function that called
/// strdup: what the eh_frame walk fixes (and proof the checks above can fail).
fn frame_pointers_alone_lose_the_caller_of_frameless_code() {
    let mut fixture = Fixture::start(&fixture_built("frames.c", Build::NoFramePointers));
    let tracer =
        Tracer::attach(fixture.pid(), &["--top", "0", "--interval", "1h", "--unwind", "frame-pointers"]);
    fixture.go();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let expected = expectations(&fixture.finish());
    let report = run.final_report();
    // The blocks are all there, with their figures: only their stack is wrong.
    let (_, count, bytes) =
        expected.iter().find(|(f, _, _)| f == "intern").expect("intern's figures").clone();
    let interned: Vec<&Value> = memory_sites(&report).filter(|s| live(s) == (count, bytes)).collect();
    assert_eq!(interned.len(), 1, "one site holds strdup's {count} blocks of intern: {interned:#?}");
    let right = memory_sites(&report)
        .filter(|s| own_frames(s, "frames.c").first().is_some_and(|f| f["function"] == "intern"))
        .filter(|s| own_frames(s, "frames.c").get(1).is_some_and(|f| f["function"] == "intern_all"))
        .count();
    assert_eq!(right, 0, "a frame-pointer walk cannot see intern -> intern_all through strdup");
}

fn cpp_new_string_vector_make_unique_with_frame_pointers() {
    check("frames.cpp", Build::FramePointers, CPP_CALLERS, "eh-frame");
}

fn cpp_new_string_vector_make_unique_without_frame_pointers() {
    check("frames.cpp", Build::NoFramePointers, CPP_CALLERS, "eh-frame");
}

fn rust_vec_string_format_with_frame_pointers() {
    check("frames.rs", Build::FramePointers, RS_CALLERS, "eh-frame");
}

fn rust_vec_string_format_without_frame_pointers() {
    check("frames.rs", Build::NoFramePointers, RS_CALLERS, "eh-frame");
}

/// A program built with -fomit-frame-pointer throughout: the whole chain, down to main
/// and the C runtime's entry, and nothing cut short.
fn omitted_frame_pointers_give_complete_stacks() {
    let report = check("omit.c", Build::NoFramePointers, &[("level_d", "level_c")], "eh-frame");
    let site = memory_sites(&report)
        .find(|s| own_frames(s, "omit.c").first().is_some_and(|f| f["function"] == "level_d"))
        .unwrap();
    let functions: Vec<&str> =
        site["frames"].as_array().unwrap().iter().filter_map(|f| f["function"].as_str()).collect();
    let own: Vec<&str> = own_frames(site, "omit.c").iter().filter_map(|f| f["function"].as_str()).collect();
    assert_eq!(own, ["level_d", "level_c", "level_b", "level_a", "main"], "{functions:?}");
    assert_eq!(functions.last(), Some(&"_start"), "{functions:?}");
    assert_eq!(site["stack_truncated"], false);
}

/// `unseen.c` built, then stripped two ways: with MiniDebugInfo (`.gnu_debugdata`, the
/// function symbols xz-compressed, made as Fedora's tools make it) and bare.
fn stripped_builds() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = scratch("minidebuginfo");
    let sh = |script: &str| {
        let out = std::process::Command::new("sh").arg("-ec").arg(script).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let full = fixture("unseen.c");
    sh(&format!(
        "cp {} full
         nm -D full --format=posix --defined-only | awk '{{print $1}}' | sort > dynsyms
         nm full --format=posix --defined-only | awk '$2 ~ /[Tt]/ {{print $1}}' | sort > funcsyms
         comm -13 dynsyms funcsyms > keep
         objcopy --only-keep-debug full mini.debug
         objcopy -S --remove-section .gdb_index --remove-section .comment --keep-symbols=keep mini.debug mini
         xz -f mini
         strip --strip-all -R .comment full -o bare
         objcopy --add-section .gnu_debugdata=mini.xz bare mini-stripped",
        full.display()
    ));
    (dir.join("mini-stripped"), dir.join("bare"))
}

fn stripped_binaries_are_named_by_minidebuginfo_or_module_and_offset() {
    let (mini, bare) = stripped_builds();
    let trace = |exe: &std::path::Path| {
        let mut fixture = Fixture::start(exe);
        let tracer = Tracer::attach(fixture.pid(), &["--top", "0", "--interval", "1h"]);
        fixture.go();
        let run = tracer.stop();
        assert!(run.status.success(), "{}: {}", run.status, run.stderr);
        fixture.finish();
        run.final_report()
    };
    // With MiniDebugInfo: function names (no files or lines: it has none).
    let report = trace(&mini);
    let site = site_at(&report, "remember_session");
    assert_eq!(live(site), (40, 40 * 44));
    assert_eq!(site["frames"][0]["function"], "remember_session");
    assert!(site["frames"][0]["file"].is_null());
    // Bare: module and file offset, which addr2line on an unstripped build resolves.
    let report = trace(&bare);
    let own: Vec<&Value> = memory_sites(&report)
        .flat_map(|s| s["frames"].as_array().unwrap())
        .filter(|f| f["module"].as_str().is_some_and(|m| m.ends_with("/bare")))
        .collect();
    assert!(!own.is_empty(), "frames in the stripped executable");
    for frame in own {
        assert!(frame["function"].is_null() || frame["function"] == "main" || frame["function"] == "_start");
        let offset = frame["offset"].as_str().unwrap_or_else(|| panic!("{frame}"));
        assert!(offset.starts_with("0x"), "{frame}");
    }
}
