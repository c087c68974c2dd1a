use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::symlink},
};

use super::*;
use crate::report::folded::tests::report;

fn export() -> ExportOptions {
    ExportOptions::default()
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lt-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn places<'a>(output: Option<&'a Path>, output_dir: Option<&'a Path>) -> Places<'a> {
    Places { output, output_dir, pid: 42, started: humantime::parse_rfc3339("2026-11-27T11:42:36Z").unwrap() }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Makes `path` a symbolic link owned by `nobody`, as another user would plant it.
fn plant_link(target: &Path, path: &Path) {
    symlink(target, path).unwrap();
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; lchown changes the link, not its target.
    unsafe { libc::lchown(c.as_ptr(), 65534, 65534) };
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn several_formats_go_to_named_files_that_appear_only_when_done() {
    let s = Scratch::new("several");
    let formats = [Format::Json, Format::Folded, Format::Svg, Format::Pprof];
    let mut outputs = Outputs::open(&formats, &places(None, Some(&s.0)), export()).unwrap();
    let r = report(vec![]);
    outputs.interim(&r).unwrap();
    // Snapshots are unnamed until done: only the stream is there.
    assert_eq!(s.names(), ["leaktracer-42-20261127T114236Z.ndjson"]);
    let ndjson = s.0.join("leaktracer-42-20261127T114236Z.ndjson");
    assert_eq!(
        std::fs::read_to_string(&ndjson).unwrap().lines().count(),
        1,
        "a stream is readable as it goes"
    );
    let (written, failed) = outputs.finish(&r);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(written.len(), 4);
    assert_eq!(
        s.names(),
        [
            "leaktracer-42-20261127T114236Z.folded",
            "leaktracer-42-20261127T114236Z.ndjson",
            "leaktracer-42-20261127T114236Z.pb.gz",
            "leaktracer-42-20261127T114236Z.svg"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(ndjson).unwrap().lines().count(),
        2,
        "the interim report and the final one"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        std::fs::metadata(s.0.join("leaktracer-42-20261127T114236Z.svg")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Names planted in advance in the output directory (links to a victim, a FIFO) are
/// never written through: the files get other names, the victim is untouched, nothing
/// blocks.
#[test]
fn planted_names_in_the_output_directory_are_left_alone() {
    let s = Scratch::new("planted");
    let victim = s.0.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    for ext in ["ndjson", "svg"] {
        plant_link(&victim, &s.0.join(format!("leaktracer-42-20261127T114236Z.{ext}")));
    }
    mkfifo(&s.0.join("leaktracer-42-20261127T114236Z.txt"));
    let formats = [Format::Text, Format::Json, Format::Svg];
    let outputs = Outputs::open(&formats, &places(None, Some(&s.0)), export()).unwrap();
    let (written, failed) = outputs.finish(&report(vec![]));
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let names: Vec<String> =
        written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "leaktracer-42-20261127T114236Z-2.txt",
            "leaktracer-42-20261127T114236Z-2.ndjson",
            "leaktracer-42-20261127T114236Z-2.svg"
        ]
    );
}

/// `--output` through another user's symbolic link is refused (as root: as another user
/// the link would be ours); the victim is untouched.
///
/// Only root can make a link owned by someone else: ignored otherwise (`cargo xtask test`
/// runs it, as root).
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_foreign_link_at_the_output_is_refused() {
    assert!(is_root(), "needs root");
    let s = Scratch::new("foreign");
    let victim = s.0.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = s.0.join("out.svg");
    plant_link(&victim, &link);
    for format in [Format::Svg, Format::Text] {
        let err = Outputs::open(&[format], &places(Some(&link), None), export()).err().expect("refused");
        assert!(err.to_string().contains("symbolic link owned by user 65534"), "{err}");
    }
    // A link on the way (a directory component) is refused too.
    let dirlink = s.0.join("d");
    plant_link(&s.0, &dirlink);
    let err =
        Outputs::open(&[Format::Text], &places(Some(&dirlink.join("x.txt")), None), export()).err().unwrap();
    assert!(err.to_string().contains("symbolic link owned by user 65534"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(s.names(), ["d", "out.svg", "victim"]);
}

/// A FIFO nobody reads is refused at once; one with a reader is written in place and
/// stays a FIFO.
#[test]
fn fifos_never_block() {
    use std::os::unix::fs::FileTypeExt as _;
    let s = Scratch::new("fifo");
    let fifo = s.0.join("pipe");
    mkfifo(&fifo);
    let err = Outputs::open(&[Format::Folded], &places(Some(&fifo), None), export()).err().unwrap();
    assert!(err.to_string().contains("FIFO with no reader"), "{err}");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    // Wait until the reader has the FIFO open (a deadline, not a hang, if it never does).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let outputs = loop {
        match Outputs::open(&[Format::Folded], &places(Some(&fifo), None), export()) {
            Ok(o) => break o,
            Err(e) if std::time::Instant::now() >= deadline => {
                panic!("the reader never opened the FIFO: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    };
    let (_, failed) = outputs.finish(&report(vec![]));
    assert!(failed.is_empty());
    reader.join().unwrap();
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
    assert_eq!(s.names(), ["pipe"], "no temporary file left");
}

/// An existing regular file is replaced whole (snapshots) or rewritten (streams); our
/// own symbolic link is followed to its target.
#[test]
fn existing_files_and_own_links() {
    let s = Scratch::new("existing");
    let target = s.0.join("target.svg");
    std::fs::write(&target, "old").unwrap();
    let outputs = Outputs::open(&[Format::Svg], &places(Some(&target), None), export()).unwrap();
    outputs.finish(&report(vec![]));
    assert!(std::fs::read_to_string(&target).unwrap().starts_with("<?xml"));
    let link = s.0.join("link.txt");
    let text_target = s.0.join("t.txt");
    std::fs::write(&text_target, "old text that is longer than the report ".repeat(100)).unwrap();
    symlink(&text_target, &link).unwrap();
    let outputs = Outputs::open(&[Format::Text], &places(Some(&link), None), export()).unwrap();
    outputs.finish(&report(vec![]));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    let text = std::fs::read_to_string(&text_target).unwrap();
    assert!(text.starts_with("== leaktracer final report") && !text.contains("old text"), "{text}");
    assert_eq!(s.names(), ["link.txt", "t.txt", "target.svg"], "no temporary file left");
}

#[test]
fn refusals_before_anything_is_opened() {
    assert!(matches!(
        check(&[Format::Json, Format::Svg], Some(Path::new("x")), None),
        Err(OutputError::OutputWithSeveralFormats)
    ));
    let err = check(&[Format::Folded, Format::Svg, Format::Folded], None, None).unwrap_err();
    assert_eq!(err.to_string(), "--format names folded twice");
    let missing = Path::new("/nonexistent-dir-for-leaktracer/x.txt");
    let err = Outputs::open(&[Format::Text], &places(Some(missing), None), export()).err().unwrap();
    assert!(err.to_string().starts_with("cannot write /nonexistent-dir-for-leaktracer"), "{err}");
    let err = Outputs::open(
        &[Format::Text, Format::Json],
        &places(None, Some(Path::new("/nonexistent-dir-for-leaktracer"))),
        export(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("No such file or directory"), "{err}");
}

/// A write that fails leaves no file behind (the unnamed file vanishes).
#[test]
fn a_failed_snapshot_leaves_nothing() {
    let s = Scratch::new("failed");
    let outputs = Outputs::open(&[Format::Svg, Format::Folded], &places(None, Some(&s.0)), export()).unwrap();
    drop(outputs);
    assert!(s.names().is_empty(), "{:?}", s.names());
}
