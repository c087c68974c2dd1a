//! The accuracy corpus (`tests/corpus/`): programs with known leaks and known non-leaks,
//! each traced for a fixed window; every site must get the verdict its ground truth says.
//!
//! The test runs all programs at once. With LEAKTRACER_EVAL=1 (`cargo xtask eval`) it
//! runs them one at a time, prints a table of expected and reported verdicts, times to
//! the first `leak`, precision and recall, and fails only on a wrong verdict.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::harness::*;

/// This module's tests.
pub fn tests() -> Vec<libtest_mimic::Trial> {
    trials![the_corpus_gets_its_ground_truth]
}

/// Seconds each program is traced.
const WINDOW_S: u64 = 30;

struct Case {
    name: String,
    source: String,
    /// (function, expected verdict or "notleak")
    expect: Vec<(String, String)>,
    flat_after: Option<f64>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_src().join("cases")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap().to_string();
            let source = words.next().unwrap().to_string();
            let (mut expect, mut flat_after) = (Vec::new(), None);
            for w in words {
                let (k, v) = w.split_once('=').unwrap_or_else(|| panic!("bad expectation {w}"));
                if k == "flat_after" {
                    flat_after = Some(v.parse().unwrap());
                } else {
                    expect.push((k.to_string(), v.to_string()));
                }
            }
            Case { name, source, expect, flat_after }
        })
        .collect()
}

/// A corpus program and its tracer.
struct Traced {
    program: Child,
    tracer: Tracer,
}

fn start(case: &Case) -> Traced {
    let program = Command::new(corpus_program(&case.source)).stdout(Stdio::null()).spawn().unwrap();
    thread::sleep(Duration::from_millis(500));
    let tracer = Tracer::attach(
        program.id(),
        &["--top", "0", "--interval", "1s", "--duration", &format!("{WINDOW_S}s")],
    );
    Traced { program, tracer }
}

fn finish(mut traced: Traced) -> Vec<Value> {
    let run = traced.tracer.wait();
    let _ = traced.program.kill();
    let _ = traced.program.wait();
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    run.reports()
}

/// The sites of a report whose first frame of the program's own code is `function`.
fn sites_of<'a>(report: &'a Value, source: &str, function: &str) -> Vec<&'a Value> {
    memory_sites(report)
        .filter(|s| {
            own_frames(s, source)
                .first()
                .and_then(|f| f["function"].as_str())
                .is_some_and(|n| names(n, function))
        })
        .collect()
}

#[derive(Default)]
struct Score {
    true_leak_sites: usize,
    false_leak_sites: usize,
    leaks_found: usize,
    leaks_expected: usize,
    wrong: Vec<String>,
}

/// Checks one case's reports against its ground truth; adds to the score and the table.
fn judge(case: &Case, reports: &[Value], score: &mut Score, table: &mut Vec<[String; 5]>) {
    let last = reports.last().unwrap();
    assert_eq!(last["final"], true);
    let mut leak_sites_here = 0;
    for (function, expected) in &case.expect {
        let sites = sites_of(last, &case.source, function);
        if sites.is_empty() {
            score.wrong.push(format!("{}: no site at {function}", case.name));
            continue;
        }
        for site in &sites {
            let verdict = site["verdict"].as_str().unwrap();
            let ok = match expected.as_str() {
                "notleak" => verdict != "leak",
                v => verdict == v,
            };
            if !ok {
                // How the site's verdict went, report by report, to see why.
                let history: Vec<String> = reports
                    .iter()
                    .filter_map(|r| {
                        let s = r["sites"].as_array()?.iter().find(|x| x["id"] == site["id"])?;
                        Some(format!(
                            "{}s:{}/{}/{}",
                            r["elapsed_s"], s["verdict"], s["live_count"], s["confidence"]
                        ))
                    })
                    .collect();
                score.wrong.push(format!(
                    "{}: {function} is {verdict}, expected {expected}; history {}",
                    case.name,
                    history.join(" ")
                ));
            }
            if verdict == "leak" {
                leak_sites_here += 1;
                if expected == "leak" {
                    score.true_leak_sites += 1;
                } else {
                    score.false_leak_sites += 1;
                }
            }
            let first = site["first_leak_s"].as_f64().map_or("-".to_string(), |t| format!("{t:.1}"));
            table.push([
                case.name.clone(),
                function.clone(),
                expected.clone(),
                format!("{verdict} ({:.2})", site["confidence"].as_f64().unwrap_or(0.0)),
                first,
            ]);
        }
        if expected == "leak" {
            score.leaks_expected += 1;
            if sites.iter().all(|s| s["verdict"] == "leak") {
                score.leaks_found += 1;
            }
        }
    }
    // A leak verdict anywhere else (an unlabelled site) is a false positive too.
    let all_leaks = last["sites"].as_array().unwrap().iter().filter(|s| s["verdict"] == "leak").count();
    if all_leaks > leak_sites_here {
        score.false_leak_sites += all_leaks - leak_sites_here;
        score.wrong.push(format!(
            "{}: {} unlabelled sites called leak",
            case.name,
            all_leaks - leak_sites_here
        ));
    }
    // Growth that stopped: once flat for a third of the window, never a leak again.
    if let Some(flat_after) = case.flat_after {
        let from = flat_after + WINDOW_S as f64 / 3.0;
        for report in reports.iter().filter(|r| r["elapsed_s"].as_f64().unwrap() >= from) {
            for (function, _) in &case.expect {
                for site in sites_of(report, &case.source, function) {
                    if site["verdict"] == "leak" {
                        score.wrong.push(format!(
                            "{}: {function} called leak at {} s, after being flat since {flat_after} s",
                            case.name, report["elapsed_s"]
                        ));
                    }
                }
            }
        }
    }
}

fn the_corpus_gets_its_ground_truth() {
    let cases = cases();
    assert!(cases.len() >= 10);
    let eval = std::env::var_os("LEAKTRACER_EVAL").is_some();
    let reports: Vec<Vec<Value>> = if eval {
        cases.iter().map(|c| finish(start(c))).collect()
    } else {
        let running: Vec<Traced> = cases.iter().map(start).collect();
        running.into_iter().map(finish).collect()
    };
    let mut score = Score::default();
    let mut table = Vec::new();
    for (case, reports) in cases.iter().zip(&reports) {
        judge(case, reports, &mut score, &mut table);
    }
    let precision =
        score.true_leak_sites as f64 / (score.true_leak_sites + score.false_leak_sites).max(1) as f64;
    let recall = score.leaks_found as f64 / score.leaks_expected.max(1) as f64;
    println!("\n{:<16} {:<16} {:<9} {:<16} first leak s", "case", "function", "expected", "reported");
    for row in &table {
        println!("{:<16} {:<16} {:<9} {:<16} {}", row[0], row[1], row[2], row[3], row[4]);
    }
    println!(
        "\nprecision {precision:.2} ({} of {} sites called leak are leaks), recall {recall:.2} ({} of {} leaking functions found at all their sites); window {WINDOW_S} s{}",
        score.true_leak_sites,
        score.true_leak_sites + score.false_leak_sites,
        score.leaks_found,
        score.leaks_expected,
        if eval { ", one program at a time" } else { ", all programs at once" }
    );
    assert!(score.wrong.is_empty(), "wrong verdicts:\n{}", score.wrong.join("\n"));
}
