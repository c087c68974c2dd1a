//! Turning (file, offset) into function, source file and line, with inlined functions as
//! frames of their own and C++/Rust names demangled.
//!
//! blazesym's `Symbolizer` is not `Send` and keeps parsed ELF/DWARF in caches worth
//! keeping, so it lives on one thread of its own for the whole run; the session asks it
//! through a channel.

use std::{collections::HashMap, path::PathBuf, sync::Arc, sync::mpsc, thread};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer as Blaze,
    source::{Elf, Source},
};
use tokio::sync::oneshot;

use super::minidebug::MiniSymbols;
use crate::stacks::{
    StackId, StackTable,
    elf::ElfFile,
    modules::{Location, ModuleIdx},
};

/// Symbolized addresses kept at most (then forgotten all at once and looked up again).
const MAX_CACHED: usize = 1 << 20;

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

/// A frame of a stack, symbolized: one return address may give several frames (inlined
/// functions first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFrame {
    pub symbol: SymFrame,
    pub module: Option<String>,
    pub module_idx: Option<ModuleIdx>,
    /// The file offset in the module (what names a frame that has no symbol).
    pub offset: Option<u64>,
    pub addr: u64,
}

/// Symbolized frames for the whole run, by (file, offset), so every address is looked up
/// once.
pub struct Symbols {
    symbolizer: Symbolizer,
    cache: HashMap<(ModuleIdx, u64), Arc<[SymFrame]>>,
    /// Go binaries, symbolized from their pclntab.
    go: super::gosym::GoModules,
    /// MiniDebugInfo of stripped modules, read when blazesym finds no name.
    mini: HashMap<ModuleIdx, Option<MiniSymbols>>,
}

impl Symbols {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            symbolizer,
            cache: HashMap::new(),
            go: super::gosym::GoModules::default(),
            mini: HashMap::new(),
        }
    }

    /// Symbolizes what the given stacks hold that no earlier call did, one request per
    /// file. Return addresses point after the call instruction: the byte before is
    /// looked up, so the line is the call's.
    pub async fn load(&mut self, stacks: &StackTable, ids: impl Iterator<Item = StackId>) {
        let mut wanted: HashMap<ModuleIdx, Vec<u64>> = HashMap::new();
        for id in ids {
            let Some(stack) = stacks.get(id) else { continue };
            for frame in &stack.frames {
                if let Some(Location { module: Some(module), offset }) = frame.location
                    && !self.cache.contains_key(&(module, offset))
                {
                    wanted.entry(module).or_default().push(offset);
                }
            }
        }
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        for (module, mut offsets) in wanted {
            offsets.sort_unstable();
            offsets.dedup();
            let lookups: Vec<u64> = offsets.iter().map(|o| o.saturating_sub(1)).collect();
            let frames = if self.go.is_go(stacks, module) {
                self.go.symbolize(stacks, module, &lookups)
            } else {
                let path = stacks.modules.module(module).symbol_path();
                let mut frames = self.symbolizer.symbolize(path, lookups.clone()).await;
                self.name_from_minidebug(stacks, module, &lookups, &mut frames);
                frames
            };
            for (offset, frames) in offsets.into_iter().zip(frames) {
                self.cache.insert((module, offset), frames.into());
            }
        }
    }

    /// Names the frames blazesym left unnamed from the module's MiniDebugInfo, if any.
    fn name_from_minidebug(
        &mut self,
        stacks: &StackTable,
        module: ModuleIdx,
        lookups: &[u64],
        frames: &mut [Vec<SymFrame>],
    ) {
        let unnamed = |f: &Vec<SymFrame>| f.len() == 1 && f[0].function.is_none();
        if !frames.iter().any(unnamed) {
            return;
        }
        let mini = self.mini.entry(module).or_insert_with(|| {
            let elf = ElfFile::read(&mut stacks.modules.module(module).open()?).ok()?;
            MiniSymbols::from_elf(elf.data())
        });
        let Some(mini) = mini else { return };
        for (offset, f) in lookups.iter().zip(frames.iter_mut()).filter(|(_, f)| unnamed(f)) {
            f[0].function = mini.function_at(*offset).map(str::to_string);
        }
    }

    /// Whether `module` is a Go binary.
    pub fn is_go(&mut self, stacks: &StackTable, module: ModuleIdx) -> bool {
        self.go.is_go(stacks, module)
    }

    /// The function at `addr`, an exact code address (a goroutine's start function), in
    /// a Go module.
    pub fn go_function_at(&mut self, stacks: &StackTable, addr: u64) -> Option<String> {
        let location = stacks.modules.lookup(addr)?;
        let module = location.module?;
        if !self.go.is_go(stacks, module) {
            return None;
        }
        self.go.start_function(stacks, module, location.offset)
    }

    /// The frames of a stack, innermost first, as far as [`Symbols::load`] got them.
    pub fn frames(&self, stacks: &StackTable, id: StackId) -> Vec<ResolvedFrame> {
        let Some(stack) = stacks.get(id) else { return Vec::new() };
        let mut out = Vec::with_capacity(stack.frames.len());
        for frame in &stack.frames {
            let module_idx = frame.location.and_then(|l| l.module);
            let module = module_idx.map(|m| stacks.modules.module(m).path.clone());
            let offset = frame.location.filter(|l| l.module.is_some()).map(|l| l.offset);
            let symbols = frame.location.and_then(|l| self.cache.get(&(l.module?, l.offset)));
            match symbols {
                Some(symbols) => out.extend(symbols.iter().map(|symbol| ResolvedFrame {
                    symbol: symbol.clone(),
                    module: module.clone(),
                    module_idx,
                    offset,
                    addr: frame.addr,
                })),
                None => out.push(ResolvedFrame {
                    symbol: SymFrame::default(),
                    module,
                    module_idx,
                    offset,
                    addr: frame.addr,
                }),
            }
        }
        out
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
        let mut map = crate::stacks::modules::ModuleMap::new(std::process::id());
        let loc = map.locate(addr).unwrap();
        let module = map.module(loc.module.unwrap());
        let symbolizer = Symbolizer::spawn().unwrap();
        let frames = symbolizer.symbolize(module.symbol_path(), vec![loc.offset]).await;
        let frame = frames[0].last().unwrap();
        assert_eq!(frame.function.as_deref(), Some("leaktracer_symbolize_fixture"));
        assert!(frame.file.as_deref().is_some_and(|f| f.ends_with("identify/symbolize.rs")), "{frame:?}");
        assert!(frame.line.is_some());
    }

    #[tokio::test]
    async fn unreadable_files_give_unknown_frames() {
        let symbolizer = Symbolizer::spawn().unwrap();
        let frames = symbolizer.symbolize("/nonexistent".into(), vec![1, 2]).await;
        assert_eq!(frames, vec![vec![SymFrame::default()]; 2]);
    }
}
