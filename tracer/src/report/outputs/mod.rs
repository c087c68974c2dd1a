//! Where reports go. Text and NDJSON are streams: a report every interval and a final
//! one. Folded stacks, SVG and pprof are snapshots of the final report. One format goes
//! to standard output or `--output`; several (or `--output-dir`) go to one file each,
//! named `leaktracer-<pid>-<UTC start time>.<ext>`.
//!
//! Every destination is opened before tracing starts, so a bad one costs nothing.
//! Streams grow as they go (`tail -f` works); snapshots are written unnamed and appear
//! under their name only once complete. A destination that is not a regular file (a
//! terminal, `/dev/null`, a FIFO with a reader) is written in place. Files are created
//! safely as root (`create`): never through another user's symbolic link, never an open
//! that can block, new files 0600. In `--output-dir`, a name already taken is never
//! overwritten: the file gets a numbered name instead.

mod create;

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal as _, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use self::create::{CreateError, Dir, Entry};
use super::{
    folded::folded,
    model::Report,
    pprof::{ProfileKind, pprof, profile},
    svg::svg,
    text,
};
use crate::config::{ExportOptions, Format};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("--output takes a single format; for several, use --output-dir")]
    OutputWithSeveralFormats,
    #[error("--format names {0} twice")]
    DuplicateFormat(&'static str),
    #[error("pprof output is binary: write it to a file with --output or --output-dir")]
    BinaryToTerminal,
    /// (Not a `#[source]`: the message already says it, and an error chain would say
    /// it twice.)
    #[error("cannot write {0}")]
    Create(CreateError),
    #[error("cannot write {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
}

impl OutputError {
    /// Options that cannot work together (not a failure to write).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::OutputWithSeveralFormats | Self::DuplicateFormat(_) | Self::BinaryToTerminal)
    }
}

impl From<CreateError> for OutputError {
    fn from(e: CreateError) -> Self {
        OutputError::Create(e)
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
        Format::Folded => out.write_all(folded(report, export).as_bytes()),
        Format::Svg => out.write_all(&svg(report, export)?),
        Format::Pprof => out.write_all(&pprof(report, export.only_leaks)?),
    }
}

/// Refuses combinations that cannot work, before anything is opened.
pub fn check(
    formats: &[Format],
    output: Option<&Path>,
    output_dir: Option<&Path>,
) -> Result<(), OutputError> {
    for (i, f) in formats.iter().enumerate() {
        if formats[..i].contains(f) {
            return Err(OutputError::DuplicateFormat(f.name()));
        }
    }
    if output.is_some() && (formats.len() > 1 || output_dir.is_some()) {
        return Err(OutputError::OutputWithSeveralFormats);
    }
    if formats == [Format::Pprof] && output.is_none() && output_dir.is_none() && io::stdout().is_terminal() {
        return Err(OutputError::BinaryToTerminal);
    }
    Ok(())
}

/// A snapshot file being written: unnamed until committed.
struct Snapshot {
    dir: Dir,
    name: String,
    out: BufWriter<File>,
    /// `--output`: replace what is at the name. `--output-dir`: never; take another.
    replace: bool,
}

impl Snapshot {
    fn commit(mut self) -> io::Result<PathBuf> {
        self.out.flush()?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if self.replace {
            let tmp = loop {
                let tmp = create::temp_name(&self.name);
                if self.dir.link(&file, &tmp)? {
                    break tmp;
                }
            };
            if let Err(e) = self.dir.rename(&tmp, &self.name) {
                self.dir.remove(&tmp);
                return Err(e);
            }
            return Ok(self.dir.path.join(&self.name));
        }
        for name in numbered(&self.name) {
            if self.dir.link(&file, &name)? {
                return Ok(self.dir.path.join(name));
            }
        }
        Err(io::Error::from(io::ErrorKind::AlreadyExists))
    }
}

/// `name`, then `name` with a number before its extension: `x.svg`, `x-2.svg`, ...
fn numbered(name: &str) -> impl Iterator<Item = String> + '_ {
    let (stem, ext) = name.split_once('.').unwrap_or((name, ""));
    std::iter::once(name.to_string()).chain(
        (2..100)
            .map(move |n| if ext.is_empty() { format!("{stem}-{n}") } else { format!("{stem}-{n}.{ext}") }),
    )
}

enum Destination {
    Stdout,
    /// A file written as reports come (streams), or any non-regular destination.
    InPlace {
        path: PathBuf,
        out: BufWriter<File>,
    },
    Snapshot(Snapshot),
}

struct Sink {
    format: Format,
    to: Destination,
}

/// Where one session's reports go.
pub struct Outputs {
    sinks: Vec<Sink>,
    export: ExportOptions,
}

/// Where the destinations are.
#[derive(Debug, Clone, Copy)]
pub struct Places<'a> {
    pub output: Option<&'a Path>,
    pub output_dir: Option<&'a Path>,
    pub pid: u32,
    pub started: SystemTime,
}

impl Outputs {
    /// Opens every destination: stdout or `output` for a single format without
    /// `output_dir`; one file per format in `output_dir` (default: here) otherwise.
    pub fn open(formats: &[Format], places: &Places<'_>, export: ExportOptions) -> Result<Self, OutputError> {
        check(formats, places.output, places.output_dir)?;
        let several = formats.len() > 1 || places.output_dir.is_some();
        let mut sinks = Vec::new();
        for &format in formats {
            let to = if several {
                let dir = Dir::open(places.output_dir.unwrap_or(Path::new(".")))?;
                in_dir(dir, &file_name(places, format), format)?
            } else if let Some(path) = places.output {
                at_path(path, format, 0)?
            } else {
                Destination::Stdout
            };
            sinks.push(Sink { format, to });
        }
        Ok(Self { sinks, export })
    }

    /// An interim report: to the streams.
    pub fn interim(&mut self, report: &Report) -> Result<(), OutputError> {
        for sink in self.sinks.iter_mut().filter(|s| s.format.streams()) {
            write_to(sink, report, &self.export)?;
        }
        Ok(())
    }

    /// The final report: to every destination (a failure on one does not stop the
    /// others); snapshot files then go into place. Returns the files written and the
    /// failures.
    pub fn finish(mut self, report: &Report) -> (Vec<PathBuf>, Vec<OutputError>) {
        let (mut written, mut failed) = (Vec::new(), Vec::new());
        for mut sink in self.sinks.drain(..) {
            if let Err(e) = write_to(&mut sink, report, &self.export) {
                failed.push(e);
                continue;
            }
            match sink.to {
                Destination::Stdout => {}
                Destination::InPlace { path, .. } => written.push(path),
                Destination::Snapshot(s) => {
                    let go = if sink.format == Format::Pprof && report.target.runtime == "go" {
                        go_profiles(&s, report, &self.export)
                    } else {
                        Vec::new()
                    };
                    for snapshot in std::iter::once(Ok(s)).chain(go) {
                        let committed = snapshot.and_then(|s| {
                            let path = s.dir.path.join(&s.name);
                            s.commit().map_err(|cause| OutputError::Write { path, cause })
                        });
                        match committed {
                            Ok(path) => written.push(path),
                            Err(e) => failed.push(e),
                        }
                    }
                }
            }
        }
        (written, failed)
    }
}

/// The goroutine and Go heap profiles of a Go program, beside its memory profile `main`:
/// `x.pb.gz` gets `x.goroutine.pb.gz` and `x.goheap.pb.gz`.
fn go_profiles(
    main: &Snapshot,
    report: &Report,
    export: &ExportOptions,
) -> Vec<Result<Snapshot, OutputError>> {
    let stem = main.name.strip_suffix(".pb.gz").unwrap_or(&main.name);
    ProfileKind::GO
        .into_iter()
        .map(|kind| {
            let name = format!("{stem}.{}.pb.gz", kind.infix());
            let write = || -> io::Result<Snapshot> {
                let dir = main.dir.try_clone()?;
                let mut out = BufWriter::new(dir.unnamed()?);
                out.write_all(&profile(report, kind, export.only_leaks)?)?;
                Ok(Snapshot { dir, name: name.clone(), out, replace: main.replace })
            };
            write().map_err(|cause| OutputError::Write { path: main.dir.path.join(&name), cause })
        })
        .collect()
}

fn file_name(places: &Places<'_>, format: Format) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(places.started)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("leaktracer-{}-{stamp}.{}", places.pid, format.extension())
}

/// A destination in `--output-dir`: a new file, never one that is there already.
fn in_dir(dir: Dir, name: &str, format: Format) -> Result<Destination, OutputError> {
    if !format.streams() {
        let out = dir.unnamed().map_err(|cause| OutputError::Write { path: dir.path.join(name), cause })?;
        return Ok(Destination::Snapshot(Snapshot {
            dir,
            name: name.to_string(),
            out: BufWriter::new(out),
            replace: false,
        }));
    }
    for name in numbered(name) {
        if let Some(file) = dir.create_new(&name)? {
            return Ok(Destination::InPlace { path: dir.path.join(name), out: BufWriter::new(file) });
        }
    }
    Err(OutputError::Write {
        path: dir.path.join(name),
        cause: io::Error::from(io::ErrorKind::AlreadyExists),
    })
}

/// The destination `--output PATH`.
fn at_path(path: &Path, format: Format, depth: u32) -> Result<Destination, OutputError> {
    let (dir, name) = create::split(path);
    let dir = Dir::open(&dir)?;
    let in_place = |file: File, path: PathBuf| Destination::InPlace { path, out: BufWriter::new(file) };
    match dir.inspect(&name)? {
        Entry::OwnLink(target) if depth < 16 => return at_path(&target, format, depth + 1),
        Entry::OwnLink(_) => return Err(CreateError::Loop { path: path.to_path_buf() }.into()),
        Entry::Stream => {
            let (file, _) =
                dir.open_existing(&name)?.ok_or(CreateError::Unwritable { path: path.to_path_buf() })?;
            return Ok(in_place(file, dir.path.join(&name)));
        }
        Entry::Regular if format.streams() => {
            let (file, _) =
                dir.open_existing(&name)?.ok_or(CreateError::Unwritable { path: path.to_path_buf() })?;
            return Ok(in_place(file, dir.path.join(&name)));
        }
        Entry::Missing if format.streams() => {
            if let Some(file) = dir.create_new(&name)? {
                return Ok(in_place(file, dir.path.join(&name)));
            }
            // Created by someone else meanwhile: look again.
            return at_path(path, format, depth + 1);
        }
        Entry::Regular | Entry::Missing => {}
    }
    let out = dir.unnamed().map_err(|cause| OutputError::Write { path: path.to_path_buf(), cause })?;
    Ok(Destination::Snapshot(Snapshot { dir, name, out: BufWriter::new(out), replace: true }))
}

fn write_to(sink: &mut Sink, report: &Report, export: &ExportOptions) -> Result<(), OutputError> {
    let (path, result) = match &mut sink.to {
        Destination::Stdout => {
            let mut out = io::stdout().lock();
            (
                PathBuf::from("standard output"),
                render(report, sink.format, export, &mut out).and_then(|()| out.flush()),
            )
        }
        // Flushed whole, so a reader following the file sees complete reports.
        Destination::InPlace { path, out } => {
            (path.clone(), render(report, sink.format, export, out).and_then(|()| out.flush()))
        }
        Destination::Snapshot(s) => {
            (s.dir.path.join(&s.name), render(report, sink.format, export, &mut s.out))
        }
    };
    result.map_err(|cause| OutputError::Write { path, cause })
}

#[cfg(test)]
mod tests;
