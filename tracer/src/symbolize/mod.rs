//! Turning (file, offset) into function, source file and line, with inlined functions as
//! frames of their own and C++/Rust names demangled.
//!
//! blazesym's `Symbolizer` is not `Send` and keeps parsed ELF/DWARF in caches worth
//! keeping, so it lives on one thread of its own for the whole run; the session asks it
//! through a channel.

pub mod modules;

use std::{path::PathBuf, sync::mpsc, thread};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer as Blaze,
    source::{Elf, Source},
};
use tokio::sync::oneshot;

/// One symbolized frame. Unknown parts are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

struct Request {
    path: PathBuf,
    offsets: Vec<u64>,
    reply: oneshot::Sender<Vec<Vec<SymFrame>>>,
}

/// Handle to the symbolizer thread. Dropping it stops the thread.
pub struct Symbolizer {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Symbolizer {
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = thread::Builder::new().name("symbolizer".into()).spawn(move || serve(&rx))?;
        Ok(Self { tx: Some(tx), thread: Some(thread) })
    }

    /// Symbolizes file offsets of `path`. Each offset gives its frames innermost first:
    /// inlined functions, then the function they were inlined into. An offset that
    /// cannot be symbolized gives one frame with nothing known.
    pub async fn symbolize(&self, path: PathBuf, offsets: Vec<u64>) -> Vec<Vec<SymFrame>> {
        let n = offsets.len();
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Request { path, offsets, reply }).is_ok());
        let frames = if sent { answer.await.ok() } else { None };
        frames.unwrap_or_else(|| vec![vec![SymFrame::default()]; n])
    }
}

impl Drop for Symbolizer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(rx: &mpsc::Receiver<Request>) {
    let blaze =
        Blaze::builder().enable_code_info(true).enable_inlined_fns(true).enable_demangling(true).build();
    for request in rx {
        let frames = symbolize(&blaze, &request.path, &request.offsets);
        let _ = request.reply.send(frames);
    }
}

fn symbolize(blaze: &Blaze, path: &std::path::Path, offsets: &[u64]) -> Vec<Vec<SymFrame>> {
    let source = Source::Elf(Elf::new(path));
    let results = match blaze.symbolize(&source, Input::FileOffset(offsets)) {
        Ok(results) => results,
        Err(e) => {
            log::debug!("cannot symbolize {}: {e}", path.display());
            return vec![vec![SymFrame::default()]; offsets.len()];
        }
    };
    results
        .into_iter()
        .map(|result| match result {
            Symbolized::Sym(sym) => {
                let code = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
                    let file = info.map(|c| c.to_path().display().to_string());
                    (file, info.and_then(|c| c.line))
                };
                let mut frames = Vec::with_capacity(1 + sym.inlined.len());
                for inlined in sym.inlined.iter().rev() {
                    let (file, line) = code(inlined.code_info.as_ref());
                    frames.push(SymFrame { function: Some(inlined.name.to_string()), file, line });
                }
                let (file, line) = code(sym.code_info.as_deref());
                frames.push(SymFrame { function: Some(sym.name.to_string()), file, line });
                frames
            }
            Symbolized::Unknown(_) => vec![SymFrame::default()],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    #[unsafe(no_mangle)]
    extern "C" fn leaktracer_symbolize_fixture() -> u64 {
        std::hint::black_box(42)
    }

    #[tokio::test]
    async fn symbolizes_a_function_of_this_test_binary_with_its_source_line() {
        let addr = leaktracer_symbolize_fixture as *const () as u64;
        let mut map = modules::ModuleMap::new(std::process::id());
        let loc = map.locate(addr).unwrap();
        let module = map.module(loc.module.unwrap());
        let symbolizer = Symbolizer::spawn().unwrap();
        let frames = symbolizer.symbolize(module.symbol_path(), vec![loc.offset]).await;
        let frame = frames[0].last().unwrap();
        assert_eq!(frame.function.as_deref(), Some("leaktracer_symbolize_fixture"));
        assert!(frame.file.as_deref().is_some_and(|f| f.ends_with("symbolize/mod.rs")), "{frame:?}");
        assert!(frame.line.is_some());
    }

    #[tokio::test]
    async fn unreadable_files_give_unknown_frames() {
        let symbolizer = Symbolizer::spawn().unwrap();
        let frames = symbolizer.symbolize("/nonexistent".into(), vec![1, 2]).await;
        assert_eq!(frames, vec![vec![SymFrame::default()]; 2]);
    }
}
