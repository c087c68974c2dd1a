//! Where reports go. Text and NDJSON are streams: a report every interval and a final one.
//! Folded stacks, SVG and pprof are snapshots of the final report. One format goes to
//! standard output or `--output`; several (or `--output-dir`) go to one file each, named
//! `leaktracer-<pid>-<UTC start time>.<ext>`. Streams are written to their file as they
//! go (`tail -f` works); snapshot files are written under a temporary name and renamed
//! when complete, so a reader never sees half a file. A destination that is not a regular
//! file (`/dev/null`, a FIFO, a terminal) is always written in place: renaming over it
//! would replace a device with a file.

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal as _, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{folded::folded, model::Report, pprof::pprof, svg::svg, text};
use crate::cli::{ExportOptions, Format};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("--output takes a single format; for several, use --output-dir")]
    OutputWithSeveralFormats,
    #[error("pprof output is binary: write it to a file with --output or --output-dir")]
    BinaryToTerminal,
    #[error("cannot write {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Json => "ndjson",
            Format::Folded => "folded",
            Format::Svg => "svg",
            Format::Pprof => "pb.gz",
        }
    }

    /// Text and NDJSON have a report every interval; the others only the final one.
    fn streams(self) -> bool {
        matches!(self, Format::Text | Format::Json)
    }
}

/// Renders one report in one format.
pub fn render(
    report: &Report,
    format: Format,
    export: &ExportOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Text => text::render(report, export.all, out),
        Format::Json => {
            serde_json::to_writer(&mut *out, report)?;
            out.write_all(b"\n")
        }
        Format::Folded => out.write_all(folded(report, export.weight, export.only_leaks).as_bytes()),
        Format::Svg => out.write_all(&svg(report, export.weight, export.only_leaks)?),
        Format::Pprof => out.write_all(&pprof(report, export.only_leaks)?),
    }
}

/// A file that appears under its name only once complete.
struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
}

impl AtomicFile {
    fn create(path: PathBuf) -> Result<Self, OutputError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(|source| OutputError::Create { path: path.clone(), source })?;
        Ok(Self { path, tmp, out: BufWriter::new(file) })
    }

    fn commit(mut self) -> io::Result<PathBuf> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        Ok(self.path)
    }
}

/// Where a file destination is written: in place, or through a temporary name.
fn open_file(path: &Path, format: Format) -> Result<Destination, OutputError> {
    let create = |source| OutputError::Create { path: path.to_path_buf(), source };
    let existing = std::fs::metadata(path).ok();
    if format.streams() || existing.as_ref().is_some_and(|m| !m.is_file()) {
        let file = File::create(path).map_err(create)?;
        return Ok(Destination::InPlace { path: path.to_path_buf(), out: BufWriter::new(file) });
    }
    // Through a symbolic link, the link stays and its target is replaced.
    let path = match existing {
        Some(_) => std::fs::canonicalize(path).map_err(create)?,
        None => path.to_path_buf(),
    };
    Ok(Destination::Atomic(AtomicFile::create(path)?))
}

enum Destination {
    Stdout,
    InPlace { path: PathBuf, out: BufWriter<File> },
    Atomic(AtomicFile),
}

struct Sink {
    format: Format,
    to: Destination,
}

pub struct Outputs {
    sinks: Vec<Sink>,
    export: ExportOptions,
}

/// Refuses combinations that cannot work, before anything is started.
pub fn check(
    formats: &[Format],
    output: Option<&Path>,
    output_dir: Option<&Path>,
) -> Result<(), OutputError> {
    let mut distinct = formats.to_vec();
    distinct.dedup();
    if output.is_some() && (distinct.len() > 1 || output_dir.is_some()) {
        return Err(OutputError::OutputWithSeveralFormats);
    }
    if distinct.len() == 1
        && distinct[0] == Format::Pprof
        && output.is_none()
        && output_dir.is_none()
        && io::stdout().is_terminal()
    {
        return Err(OutputError::BinaryToTerminal);
    }
    if let Some(dir) = output_dir
        && !dir.is_dir()
    {
        return Err(OutputError::Create {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        });
    }
    Ok(())
}

impl Outputs {
    /// Opens the destinations: stdout or `output` for a single format without
    /// `output_dir`; one file per format in `output_dir` (default: here) otherwise.
    pub fn open(
        formats: &[Format],
        output: Option<&Path>,
        output_dir: Option<&Path>,
        pid: u32,
        started: SystemTime,
        export: ExportOptions,
    ) -> Result<Self, OutputError> {
        check(formats, output, output_dir)?;
        let mut formats = formats.to_vec();
        formats.dedup();
        let several = formats.len() > 1 || output_dir.is_some();
        let stamp: String = humantime::format_rfc3339_seconds(started)
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let mut sinks = Vec::new();
        for format in formats {
            let to = if several {
                let dir = output_dir.unwrap_or(Path::new("."));
                let name = format!("leaktracer-{pid}-{stamp}.{}", format.extension());
                open_file(&dir.join(name), format)?
            } else if let Some(path) = output {
                open_file(path, format)?
            } else {
                Destination::Stdout
            };
            sinks.push(Sink { format, to });
        }
        Ok(Self { sinks, export })
    }

    /// An interim report: to the streams.
    pub fn interim(&mut self, report: &Report) -> io::Result<()> {
        for sink in self.sinks.iter_mut().filter(|s| s.format.streams()) {
            write_to(sink, report, &self.export)?;
        }
        Ok(())
    }

    /// The final report: to every destination; snapshot files are then renamed into
    /// place. Returns the files written.
    pub fn finish(mut self, report: &Report) -> io::Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for mut sink in self.sinks.drain(..) {
            write_to(&mut sink, report, &self.export)?;
            match sink.to {
                Destination::Stdout => {}
                Destination::InPlace { path, .. } => written.push(path),
                Destination::Atomic(file) => written.push(file.commit()?),
            }
        }
        Ok(written)
    }
}

fn write_to(sink: &mut Sink, report: &Report, export: &ExportOptions) -> io::Result<()> {
    match &mut sink.to {
        Destination::Stdout => {
            let mut out = io::stdout().lock();
            render(report, sink.format, export, &mut out)?;
            out.flush()
        }
        // Flushed whole, so a reader following the file sees complete reports.
        Destination::InPlace { out, .. } => {
            render(report, sink.format, export, out)?;
            out.flush()
        }
        Destination::Atomic(file) => render(report, sink.format, export, &mut file.out),
    }
}

impl Drop for Outputs {
    /// Files not finished (leaktracer failed) are not left half-written under their name.
    fn drop(&mut self) {
        for sink in &self.sinks {
            if let Destination::Atomic(file) = &sink.to {
                let _ = std::fs::remove_file(&file.tmp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cli::Weight, report::folded::tests::report};

    fn export() -> ExportOptions {
        ExportOptions { all: false, weight: Weight::Bytes, only_leaks: false }
    }

    #[test]
    fn several_formats_go_to_named_files_that_appear_only_when_done() {
        let dir = std::env::temp_dir().join(format!("lt-outputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let started = humantime::parse_rfc3339("2026-11-27T11:42:36Z").unwrap();
        let formats = [Format::Json, Format::Folded, Format::Svg, Format::Pprof];
        let mut outputs = Outputs::open(&formats, None, Some(&dir), 42, started, export()).unwrap();
        let r = report(vec![]);
        outputs.interim(&r).unwrap();
        let names = |dir: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let pending = names(&dir);
        assert_eq!(
            pending.iter().filter(|n| n.starts_with('.') && n.ends_with(".tmp")).count(),
            3,
            "{pending:?}"
        );
        let ndjson = dir.join("leaktracer-42-20261127T114236Z.ndjson");
        assert_eq!(
            std::fs::read_to_string(&ndjson).unwrap().lines().count(),
            1,
            "a stream is readable as it goes"
        );
        let written = outputs.finish(&r).unwrap();
        assert_eq!(written.len(), 4);
        assert_eq!(
            names(&dir),
            [
                "leaktracer-42-20261127T114236Z.folded",
                "leaktracer-42-20261127T114236Z.ndjson",
                "leaktracer-42-20261127T114236Z.pb.gz",
                "leaktracer-42-20261127T114236Z.svg"
            ]
        );
        let ndjson = std::fs::read_to_string(ndjson).unwrap();
        assert_eq!(ndjson.lines().count(), 2, "the interim report and the final one");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lt-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `--output /dev/null` once replaced /dev/null with a regular file: a FIFO stands in
    /// for the device here, so a regression cannot break the machine running the test.
    #[test]
    fn a_destination_that_is_not_a_file_is_written_in_place() {
        use std::{ffi::CString, os::unix::ffi::OsStrExt as _, os::unix::fs::FileTypeExt as _};
        let dir = scratch("fifo");
        let fifo = dir.join("pipe");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let outputs =
            Outputs::open(&[Format::Folded], Some(&fifo), None, 1, SystemTime::now(), export()).unwrap();
        outputs.finish(&report(vec![])).unwrap();
        reader.join().unwrap();
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symbolic_link_stays_and_its_target_is_written() {
        let dir = scratch("link");
        let target = dir.join("target.svg");
        std::fs::write(&target, "old").unwrap();
        let link = dir.join("link.svg");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let outputs =
            Outputs::open(&[Format::Svg], Some(&link), None, 1, SystemTime::now(), export()).unwrap();
        outputs.finish(&report(vec![])).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(&target).unwrap().starts_with("<?xml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn output_takes_one_format() {
        let err = Outputs::open(
            &[Format::Json, Format::Svg],
            Some(Path::new("/tmp/x")),
            None,
            1,
            SystemTime::now(),
            export(),
        );
        assert!(matches!(err, Err(OutputError::OutputWithSeveralFormats)));
    }
}
