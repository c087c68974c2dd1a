//! Profiling-session outputs, checked with the tools that read them: go tool pprof for
//! pprof, inferno for folded stacks, an XML parser for the SVG; `render` must reproduce
//! from the saved JSON exactly what was written live.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    let mut tests = trials![a_session_leaves_files_the_usual_tools_open, weights_and_only_leaks];
    tests.push(plain_trial(
        concat!(module_path!(), "::render_refuses_what_is_not_a_report"),
        render_refuses_what_is_not_a_report,
    ));
    tests
}

/// Traces the unseen fixture, writing every format into a fresh directory; returns the
/// directory and the files by extension.
fn session(dir_name: &str, extra: &[&str]) -> (PathBuf, Vec<PathBuf>) {
    let dir = scratch(dir_name);
    let mut fixture = Fixture::start(&fixture("unseen.c"));
    let mut args =
        vec!["--format", "text,json,folded,svg,pprof", "--top", "0", "--interval", "1h", "--output-dir"];
    let dir_text = dir.to_str().unwrap().to_string();
    args.push(&dir_text);
    args.extend_from_slice(extra);
    let mut cmd = Command::new(LEAKTRACER);
    cmd.args(["attach", "--pid", &fixture.pid().to_string()]).args(&args);
    let tracer = Tracer::start(cmd);
    fixture.go();
    let run = tracer.stop();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    fixture.finish();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    (dir, files)
}

fn with_ext<'a>(files: &'a [PathBuf], ext: &str) -> &'a Path {
    files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(ext))
        .unwrap_or_else(|| panic!("no .{ext} in {files:?}"))
}

fn a_session_leaves_files_the_usual_tools_open() {
    let (_dir, files) = session("formats", &[]);
    let names: Vec<String> =
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for (name, ext) in names.iter().zip(["folded", "ndjson", "pb.gz", "svg", "txt"]) {
        assert!(name.starts_with("leaktracer-") && name.ends_with(&format!(".{ext}")), "{name}");
    }

    // pprof: both readers, and the top entry is the largest leak with its bytes.
    let pprof = with_ext(&files, "pb.gz").to_str().unwrap();
    let raw = go_pprof(&["-raw", pprof]);
    assert!(raw.contains("inuse_space/bytes[dflt]"), "{raw}");
    let top = go_pprof(&["-top", "-unit=B", "-symbolize=none", pprof]);
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("{top}"));
    // calloc(n % 4 + 1, 24) for 40 rounds: 2400 bytes at index_terms.
    assert!(first.contains("index_terms"), "{top}");
    assert!(first.trim_start().starts_with("2400B"), "{top}");
    let objects = go_pprof(&["-top", "-inuse_objects", "-symbolize=none", pprof]);
    let line =
        |name: &str| objects.lines().find(|l| l.ends_with(name)).unwrap_or_else(|| panic!("{objects}"));
    assert!(line(" remember_session").trim_start().starts_with("40 "), "{objects}");
    assert!(line(" index_terms").trim_start().starts_with("40 "), "{objects}");

    // Folded: the figures the fixture's arithmetic gives (40 sessions of 44 bytes; 40
    // term lists of calloc(n % 4 + 1, 24)), below the C runtime's own frames (which
    // depend on the libc).
    let folded = std::fs::read_to_string(with_ext(&files, "folded")).unwrap();
    let mut own: Vec<String> = folded
        .lines()
        .map(|l| l.split_once(";main;").map_or(l.to_string(), |(_, rest)| format!("main;{rest}")))
        .collect();
    own.sort();
    assert_eq!(own, ["main;index_terms 2400", "main;remember_session 1760"], "{folded}");
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut inferno::flamegraph::Options::default(), folded.lines(), &mut svg)
        .unwrap();

    // SVG: well-formed XML, each leaking function with its bytes.
    let svg = std::fs::read_to_string(with_ext(&files, "svg")).unwrap();
    assert!(
        svg.contains("remember_session (1,760 bytes") && svg.contains("index_terms (2,400 bytes"),
        "{svg}"
    );
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_)) => elements += 1,
            Ok(_) => {}
            Err(e) => panic!("the SVG is not well-formed XML: {e}"),
        }
    }
    assert!(elements > 10);

    // render reproduces the live files from the saved JSON, byte for byte.
    let ndjson = with_ext(&files, "ndjson");
    for (format, ext) in [("folded", "folded"), ("pprof", "pb.gz"), ("svg", "svg"), ("text", "txt")] {
        let out = scratch("rendered").join(format!("rendered.{ext}"));
        let status = Command::new(LEAKTRACER)
            .args(["render", ndjson.to_str().unwrap(), "--format", format, "--output", out.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let live = std::fs::read(with_ext(&files, ext)).unwrap();
        let rendered = std::fs::read(&out).unwrap();
        if format == "text" {
            // The text file has the interim reports too; the rendered one is the last.
            let header = b"== leaktracer final report";
            assert!(rendered.starts_with(header), "{}", String::from_utf8_lossy(&rendered));
            let last =
                live.windows(header.len()).rposition(|w| w == header).expect("a final report in the file");
            assert_eq!(&live[last..], &rendered[..], "rendered text is the final report");
        } else {
            assert_eq!(rendered, live, "render --format {format} reproduces the live file");
        }
    }
}

fn weights_and_only_leaks() {
    let (_dir, files) = session("formats-count", &["--weight", "count"]);
    let folded = std::fs::read_to_string(with_ext(&files, "folded")).unwrap();
    let values: Vec<u64> = folded.lines().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
    assert_eq!(values.iter().sum::<u64>(), 80, "40 sessions and 40 term lists:\n{folded}");
    // Nothing is judged a leak in a run this short: --only-leaks leaves nothing.
    let ndjson = with_ext(&files, "ndjson");
    let out = Command::new(LEAKTRACER)
        .args(["render", ndjson.to_str().unwrap(), "--format", "folded", "--only-leaks"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
}

fn render_refuses_what_is_not_a_report() {
    let path = scratch("not-a-report").join("not-a-report.ndjson");
    std::fs::write(&path, "hello\n").unwrap();
    let out = Command::new(LEAKTRACER).args(["render", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no leaktracer JSON report"), "{stderr}");
}
