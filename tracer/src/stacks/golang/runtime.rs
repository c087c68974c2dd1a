//! A Go program's runtime, as the tracer sees it: version, layout, where the probed
//! functions are (file offsets, past the stack-growth check), where its globals are in
//! the running process, and its code range for the kernel's stack walk. Built once per
//! target from its executable, read as untrusted input (`target::files`).

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Register};

use super::{
    Error, Result,
    binary::Binary,
    layout::{Layout, Source},
    pclntab::Pclntab,
    rets::ret_sites,
    symbols::{self, RuntimeSymbols},
    version::{self, GoVersion},
};

/// A function to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSite {
    pub name: &'static str,
    /// File offset of the probe (past the stack-growth check, see `probe_offset`).
    pub file_offset: u64,
}

/// The runtime functions the Go probes go on (absent ones are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Functions {
    /// Every return instruction of `runtime.newproc1`.
    pub newproc1_returns: Vec<ProbeSite>,
    /// `runtime.gdestroy` (1.22+) or `runtime.goexit0`.
    pub exit: Option<ProbeSite>,
    pub gopark: Option<ProbeSite>,
    /// `runtime.deferproc`, and `deferprocat`/`deferrangefunc` where present.
    pub defer_push: Vec<ProbeSite>,
    /// `runtime.popDefer` (1.23+, takes the g) or `runtime.freedefer` (takes the record).
    pub defer_pop: Option<ProbeSite>,
    pub profilealloc: Option<ProbeSite>,
    pub free_special: Option<ProbeSite>,
    pub gc_start: Option<ProbeSite>,
    pub gc_sweep: Option<ProbeSite>,
}

/// What the tracer knows of one Go program.
#[derive(Debug, Clone)]
pub struct GoRuntime {
    pub version: GoVersion,
    pub layout: Layout,
    pub layout_source: Source,
    /// Link-time addresses of the runtime's globals (add `bias` for the process's).
    pub symbols: RuntimeSymbols,
    pub functions: Functions,
    /// Link-time code range, and `runtime.goexit`'s (where goroutine stacks end).
    pub text: (u64, u64),
    pub goexit: Option<(u64, u64)>,
    pub stripped: bool,
    /// The executable's loadable segments, to find the load bias of a mapping.
    pub loads: Vec<super::binary::Load>,
    /// Position-independent: loaded at a bias to be found from the process's maps.
    pub pie: bool,
}

impl GoRuntime {
    /// The runtime of the Go executable in `data`; `Ok(None)` when it is not Go.
    pub fn inspect(data: &[u8]) -> Result<Option<Self>> {
        let bin = Binary::parse(data)?;
        if !version::is_go(&bin) {
            return Ok(None);
        }
        let version = version::go_version(&bin)?;
        if version.major != 1 || version.minor < 19 {
            return Err(Error::Unsupported("a Go version before 1.19"));
        }
        let tab = Pclntab::from_binary(&bin)?;
        let symbols = symbols::runtime_symbols(&bin, &tab);
        let (layout, layout_source) = Layout::of(&bin, version.minor, &symbols)?;
        let functions = functions(&bin, &tab, version.minor)?;
        let text = tab.functions().fold((u64::MAX, 0), |(lo, hi), f| (lo.min(f.entry), hi.max(f.end)));
        let goexit =
            tab.function_by_name("runtime.goexit.abi0").or_else(|| tab.function_by_name("runtime.goexit"));
        Ok(Some(Self {
            version,
            layout,
            layout_source,
            symbols,
            functions,
            text,
            goexit,
            stripped: !bin.has_symtab(),
            loads: bin.loads().to_vec(),
            pie: bin.is_pie(),
        }))
    }

    /// The load bias, given where the file offset `offset` of the executable is mapped
    /// (`start`): 0 for a fixed-address executable.
    pub fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        if !self.pie {
            return Some(0);
        }
        let load = self.loads.iter().find(|l| offset >= l.offset && offset - l.offset < l.filesz.max(1))?;
        let vaddr = load.vaddr.checked_add(offset - load.offset)?;
        start.checked_sub(vaddr & !0xfff)
    }

    /// The runtime's statuses for "waiting" and "leaked", and a wait reason's name.
    pub fn wait_reason(&self, reason: u32) -> Option<&str> {
        self.layout.wait_reasons.get(reason as usize).map(String::as_str)
    }
}

fn functions(bin: &Binary<'_>, tab: &Pclntab<'_>, minor: u32) -> Result<Functions> {
    let site = |name: &'static str| -> Option<ProbeSite> {
        let (entry, end) = tab.function_by_name(name)?;
        let skip = probe_offset(bin, entry, end);
        Some(ProbeSite { name, file_offset: bin.vaddr_to_offset(entry.checked_add(skip)?)? })
    };
    let (newproc1, end) =
        tab.function_by_name("runtime.newproc1").ok_or(Error::NotFound("runtime.newproc1"))?;
    let newproc1_returns = ret_sites(bin, newproc1, end)?
        .into_iter()
        .map(|r| ProbeSite { name: "runtime.newproc1 (return)", file_offset: r.file_offset })
        .collect();
    let exit = if minor >= 22 { site("runtime.gdestroy") } else { site("runtime.goexit0") };
    let defer_pop = if minor >= 23 { site("runtime.popDefer") } else { site("runtime.freedefer") };
    let defer_push = ["runtime.deferproc", "runtime.deferprocat", "runtime.deferrangefunc"]
        .into_iter()
        .filter_map(site)
        .collect();
    Ok(Functions {
        newproc1_returns,
        exit,
        gopark: site("runtime.gopark"),
        defer_push,
        defer_pop,
        profilealloc: site("runtime.profilealloc"),
        free_special: site("runtime.freeSpecial"),
        gc_start: site("runtime.gcStart"),
        gc_sweep: site("runtime.gcSweep"),
    })
}

/// The function a wrapper calls: `go f(x)` starts a compiler-made wrapper
/// (`main.main.gowrap1`, or a `funcN` before Go 1.22) that calls `f`; the runtime's own
/// goroutine dumps show `f`, so reports do too. `None` when `entry` is not a wrapper.
pub fn wrapped_function(bin: &Binary<'_>, tab: &Pclntab<'_>, entry: u64) -> Option<String> {
    let wrapper = tab.wrapper_func_id()?;
    let f = tab.function_at(entry)?;
    if tab.func_id_at(entry)? != wrapper && !f.name.contains(".gowrap") {
        return None;
    }
    let code = super::disasm::decode_x86_64(bin, f.entry, f.end).ok()?;
    code.iter()
        .filter(|i| i.flow_control() == FlowControl::Call && i.is_call_near())
        .filter_map(|i| tab.function_at(i.near_branch_target()))
        .map(|callee| callee.name)
        .find(|name| !name.starts_with("runtime."))
}

/// Bytes past a Go function's entry where its probe goes: after the stack-growth check
/// (`cmp rsp, [r14+16]; jbe morestack`, or through r12 for large frames). When the
/// stack must grow, the function runs from its entry a second time after
/// `runtime.morestack`; a probe at the entry would fire twice for one call. Past the
/// check, the registers and `[rsp]` are still what they were at the entry, and the
/// instruction there (`push rbp`) is one the kernel emulates. 0 when the prologue is
/// not the expected one.
fn probe_offset(bin: &Binary<'_>, entry: u64, end: u64) -> u64 {
    let len = usize::try_from(end.saturating_sub(entry).min(32)).unwrap_or(0);
    bin.bytes_at(entry, len).map_or(0, |code| prologue_skip(code, entry))
}

/// The stack check's length at the start of `code` (at `entry`), or 0.
fn prologue_skip(code: &[u8], entry: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut compared = false;
    for _ in 0..3 {
        if !decoder.can_decode() {
            return 0;
        }
        let ins = decoder.decode();
        match ins.code() {
            // lea r12, [rsp - N]: large frames compare r12 instead of rsp.
            Code::Lea_r64_m if ins.op0_register() == Register::R12 && ins.memory_base() == Register::RSP => {}
            Code::Cmp_r64_rm64 | Code::Cmp_rm64_r64
                if ins.memory_base() == Register::R14 && ins.memory_displacement64() == 16 =>
            {
                compared = true;
            }
            _ if compared && ins.flow_control() == FlowControl::ConditionalBranch => {
                return ins.next_ip().saturating_sub(entry);
            }
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_of(code: &[u8]) -> u64 {
        prologue_skip(code, 0x1000)
    }

    #[test]
    fn the_stack_check_is_recognised() {
        // cmp rsp, [r14+0x10]; jbe +0x40; push rbp
        let small = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(offset_of(&small), 6);
        // lea r12, [rsp-0x80]; cmp r12, [r14+0x10]; jbe rel32; push rbp
        let large = [0x4c, 0x8d, 0x64, 0x24, 0x80, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0, 1, 0, 0, 0x55];
        assert_eq!(offset_of(&large), 15);
        // push rbp first (a function without the check): the entry.
        assert_eq!(offset_of(&[0x55, 0x48, 0x89, 0xe5]), 0);
    }
}
