//! Addresses of runtime global variables, with or without `.symtab`.
//!
//! The tracer reads these globals from process memory (goroutine list, wait reason names,
//! GC pacer state, heap profiling rate). `.symtab` gives them directly; `-s` builds drop it,
//! so the addresses are then recovered from the x86-64 code of small runtime functions
//! (found through the pclntab) that reference them RIP-relatively. Every code-derived
//! address must be confirmed by a second, independent function or by the data it points
//! to; otherwise the field is `None`. A wrong address is worse than none.
//!
//! Addresses are link-time virtual addresses: for PIE binaries add the load bias.

use super::binary::Binary;
use super::disasm;
use super::pclntab::Pclntab;

/// Most wait reasons accepted (Go 1.27 has 47).
const MAX_WAIT_REASONS: u64 = 1024;
/// Longest wait reason string accepted.
const MAX_WAIT_REASON_LEN: u64 = 256;
/// Default `MemProfileRate` (512 KiB), used to confirm the variable.
const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;
/// How many instructions after the `disableMemoryProfiling` read the rate store may be.
const MEMPROFILE_WINDOW: usize = 8;

/// `runtime.waitReasonStrings`: a `[count]string` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReasonTable {
    /// Address of the array.
    pub address: u64,
    /// Number of entries.
    pub count: u64,
}

/// Addresses of the runtime globals the tracer reads. `None` when not found reliably.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSymbols {
    /// `runtime.allgs` (`[]*g`: pointer, len, cap).
    pub allgs: Option<u64>,
    /// `runtime.allglen` (`uintptr`, read atomically by the runtime).
    pub allglen: Option<u64>,
    /// `runtime.waitReasonStrings`.
    pub wait_reason_strings: Option<WaitReasonTable>,
    /// `runtime.gcController` (`gcControllerState`).
    pub gc_controller: Option<u64>,
    /// `runtime.MemProfileRate` (`int`).
    pub mem_profile_rate: Option<u64>,
    /// `runtime.disableMemoryProfiling` (`bool`).
    pub disable_memory_profiling: Option<u64>,
    /// `runtime.firstmoduledata`.
    pub firstmoduledata: Option<u64>,
}

/// All runtime globals: from `.symtab` when present, the rest from code analysis.
pub fn runtime_symbols(bin: &Binary<'_>, tab: &Pclntab<'_>) -> RuntimeSymbols {
    let s = from_symtab(bin);
    if s.is_complete() {
        return s;
    }
    let c = from_code(bin, tab);
    RuntimeSymbols {
        allgs: s.allgs.or(c.allgs),
        allglen: s.allglen.or(c.allglen),
        wait_reason_strings: s.wait_reason_strings.or(c.wait_reason_strings),
        gc_controller: s.gc_controller.or(c.gc_controller),
        mem_profile_rate: s.mem_profile_rate.or(c.mem_profile_rate),
        disable_memory_profiling: s.disable_memory_profiling.or(c.disable_memory_profiling),
        firstmoduledata: s.firstmoduledata.or(c.firstmoduledata),
    }
}

impl RuntimeSymbols {
    /// Whether every field was found.
    pub fn is_complete(&self) -> bool {
        let addrs = [
            self.allgs,
            self.allglen,
            self.gc_controller,
            self.mem_profile_rate,
            self.disable_memory_profiling,
            self.firstmoduledata,
        ];
        addrs.iter().all(Option::is_some) && self.wait_reason_strings.is_some()
    }
}

/// The globals as listed in `.symtab` (all `None` for `-s` builds).
pub fn from_symtab(bin: &Binary<'_>) -> RuntimeSymbols {
    let addr = |name: &str| bin.symbol(name).map(|s| s.address);
    let string_size = 2 * u64::from(bin.ptr_size());
    let wait = bin.symbol("runtime.waitReasonStrings").and_then(|s| {
        let count = s.size / string_size;
        (count > 0).then_some(WaitReasonTable { address: s.address, count })
    });
    RuntimeSymbols {
        allgs: addr("runtime.allgs"),
        allglen: addr("runtime.allglen"),
        wait_reason_strings: wait,
        gc_controller: addr("runtime.gcController"),
        mem_profile_rate: addr("runtime.MemProfileRate"),
        disable_memory_profiling: addr("runtime.disableMemoryProfiling"),
        firstmoduledata: addr("runtime.firstmoduledata"),
    }
}

/// The globals recovered without `.symtab`, from code and data only (x86-64; other
/// architectures only get `firstmoduledata`).
pub fn from_code(bin: &Binary<'_>, tab: &Pclntab<'_>) -> RuntimeSymbols {
    let firstmoduledata = tab.moduledata().map(|m| m.address);
    if bin.architecture() != object::Architecture::X86_64 {
        return RuntimeSymbols { firstmoduledata, ..RuntimeSymbols::default() };
    }
    let allg = find_allg(bin, tab);
    let memprof = find_memprofile(bin, tab);
    RuntimeSymbols {
        allgs: allg.map(|a| a.0),
        allglen: allg.map(|a| a.1),
        wait_reason_strings: find_wait_reasons(bin, tab),
        gc_controller: find_gc_controller(bin, tab),
        mem_profile_rate: memprof.map(|m| m.1),
        disable_memory_profiling: memprof.map(|m| m.0),
        firstmoduledata,
    }
}

/// Reads the wait reason strings from the file image (pointers are taken through the PIE
/// relocations, so this works on the file; the process's copy is identical).
pub fn read_wait_reasons(bin: &Binary<'_>, table: WaitReasonTable) -> Option<Vec<String>> {
    if table.count == 0 || table.count > MAX_WAIT_REASONS {
        return None;
    }
    let ptr = u64::from(bin.ptr_size());
    (0..table.count)
        .map(|i| read_go_string(bin, table.address.checked_add(i.checked_mul(2 * ptr)?)?))
        .collect()
}

/// Reads a Go string header `{ptr, len}` at `addr` and its bytes.
fn read_go_string(bin: &Binary<'_>, addr: u64) -> Option<String> {
    let data = bin.read_ptr(addr)?;
    let len = bin.read_ptr(addr.checked_add(u64::from(bin.ptr_size()))?)?;
    if len == 0 {
        return Some(String::new());
    }
    if len > MAX_WAIT_REASON_LEN {
        return None;
    }
    let bytes = bin.bytes_at(data, usize::try_from(len).ok()?)?;
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// Decodes a runtime function found by name in the pclntab.
fn decode(bin: &Binary<'_>, tab: &Pclntab<'_>, name: &str) -> Option<Vec<iced_x86::Instruction>> {
    let (entry, end) = tab.function_by_name(name)?;
    disasm::decode_x86_64(bin, entry, end).ok()
}

/// Whether `addr` is in a writable segment (where Go places mutable globals).
fn is_writable(bin: &Binary<'_>, addr: u64) -> bool {
    bin.load_containing(addr).is_some_and(|l| l.is_writable())
}

/// `(allgs, allglen)`. `forEachGRace` loads `allglen` then `allgptr`; `forEachG` loads
/// `allgs.ptr` and `allgs.len` (adjacent words); `allgadd` must reference all three.
fn find_allg(bin: &Binary<'_>, tab: &Pclntab<'_>) -> Option<(u64, u64)> {
    let race: Vec<u64> =
        decode(bin, tab, "runtime.forEachGRace")?.iter().filter_map(disasm::load_target).collect();
    let (allglen, allgptr) = (*race.first()?, *race.get(1)?);
    let loads: Vec<u64> =
        decode(bin, tab, "runtime.forEachG")?.iter().filter_map(disasm::load_target).collect();
    let word = u64::from(bin.ptr_size());
    let allgs = *loads.iter().find(|&&a| a.checked_add(word).is_some_and(|b| loads.contains(&b)))?;
    let add: Vec<u64> = decode(bin, tab, "runtime.allgadd")?.iter().filter_map(disasm::rip_target).collect();
    let all = [allgs, allglen, allgptr];
    let consistent = all.iter().all(|a| add.contains(a) && is_writable(bin, *a)) && allglen != allgptr;
    consistent.then_some((allgs, allglen))
}

/// `waitReason.String` is `if w >= len(waitReasonStrings) {…}; return waitReasonStrings[w]`:
/// the bound comes from its `CMP`, the array from its `LEA`, and the array is accepted only
/// if it decodes to strings starting with `""` and containing `"chan receive"`.
fn find_wait_reasons(bin: &Binary<'_>, tab: &Pclntab<'_>) -> Option<WaitReasonTable> {
    let code = decode(bin, tab, "runtime.waitReason.String")?;
    let count = code.iter().find_map(disasm::cmp_reg_imm)?;
    code.iter().filter_map(disasm::lea_target).filter(|&a| is_writable(bin, a)).find_map(|address| {
        let table = WaitReasonTable { address, count };
        let names = read_wait_reasons(bin, table)?;
        let plausible = names.first()?.is_empty() && names.iter().any(|n| n == "chan receive");
        plausible.then_some(table)
    })
}

/// `gcController` is the receiver `LEA`'d in both `gcControllerCommit` and
/// `gcTrigger.test`; exactly one writable address may be common to both.
fn find_gc_controller(bin: &Binary<'_>, tab: &Pclntab<'_>) -> Option<u64> {
    let commit: Vec<u64> =
        decode(bin, tab, "runtime.gcControllerCommit")?.iter().filter_map(disasm::lea_target).collect();
    let test = decode(bin, tab, "runtime.gcTrigger.test")?;
    let mut common: Vec<u64> = test
        .iter()
        .filter_map(disasm::lea_target)
        .filter(|a| commit.contains(a) && is_writable(bin, *a))
        .collect();
    common.sort_unstable();
    common.dedup();
    match common.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// `(disableMemoryProfiling, MemProfileRate)` from the code that zeroes the rate when
/// profiling is disabled: a byte read of the flag followed closely by a qword store to the
/// rate. In Go 1.20+ this is in `schedinit` and the rate is initialized data holding
/// 524288; in 1.19 it is in the package initializer (`runtime.init`), which also loads the
/// immediate 0x80000.
fn find_memprofile(bin: &Binary<'_>, tab: &Pclntab<'_>) -> Option<(u64, u64)> {
    ["runtime.schedinit", "runtime.init"].iter().find_map(|name| {
        let code = decode(bin, tab, name)?;
        code.iter()
            .enumerate()
            .find_map(|(i, insn)| memprofile_at(bin, &code, i, disasm::byte_read_target(insn)?))
    })
}

/// Checks the instructions after a byte read of `flag` (at index `i`) for the rate store.
fn memprofile_at(
    bin: &Binary<'_>,
    code: &[iced_x86::Instruction],
    i: usize,
    flag: u64,
) -> Option<(u64, u64)> {
    let window = code.get(i.checked_add(1)?..)?.iter().take(MEMPROFILE_WINDOW);
    let mut saw_default = false;
    for insn in window {
        saw_default |= disasm::has_immediate(insn, DEFAULT_MEM_PROFILE_RATE);
        let Some(rate) = disasm::qword_store_target(insn) else { continue };
        let initialized = bin.read_u64(rate) == Some(DEFAULT_MEM_PROFILE_RATE);
        let flag_ok = bin.read_u8(flag).is_none_or(|v| v <= 1);
        let ok = (initialized || saw_default) && flag_ok && rate != flag;
        return ok.then_some((flag, rate));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Options, Section, elf64, rela_relative};
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    const CODE: u64 = 0x40_1000;
    const DATA: u64 = 0x60_0000;

    /// Appends an instruction `prefix [rip+disp32] suffix` whose operand targets `target`.
    fn rip_insn(code: &mut Vec<u8>, prefix: &[u8], target: u64, suffix: &[u8]) {
        let end = CODE + (code.len() + prefix.len() + 4 + suffix.len()) as u64;
        let disp = i32::try_from(target.wrapping_sub(end) as i64).unwrap();
        code.extend_from_slice(prefix);
        code.extend_from_slice(&disp.to_le_bytes());
        code.extend_from_slice(suffix);
    }

    fn decode(code: &[u8]) -> Vec<iced_x86::Instruction> {
        Decoder::with_ip(64, code, CODE, DecoderOptions::NONE).into_iter().collect()
    }

    fn binary_with(data: &[u8], f: impl FnOnce(&Binary<'_>)) {
        let sections =
            [Section::new(".text", CODE, &[0xcc; 16], 5), Section::new(".noptrdata", DATA, data, 6)];
        let file = elf64(&sections, Options::default());
        f(&Binary::parse(&file).unwrap());
    }

    #[test]
    fn memprofile_pattern_go121() {
        let (flag, rate) = (DATA + 0x10, DATA + 0x18);
        let mut code = Vec::new();
        rip_insn(&mut code, &[0x80, 0x3d], flag, &[0]); // cmp byte [rip+flag], 0
        code.extend_from_slice(&[0x74, 0x0b]); // je
        rip_insn(&mut code, &[0x48, 0xc7, 0x05], rate, &[0, 0, 0, 0]); // mov qword [rip+rate], 0
        let mut data = vec![0u8; 0x20];
        data[0x18..].copy_from_slice(&DEFAULT_MEM_PROFILE_RATE.to_le_bytes());
        let insns = decode(&code);
        binary_with(&data, |bin| assert_eq!(memprofile_at(bin, &insns, 0, flag), Some((flag, rate))));
        data[0x18..].copy_from_slice(&7u64.to_le_bytes());
        binary_with(&data, |bin| assert_eq!(memprofile_at(bin, &insns, 0, flag), None, "rate not 512 KiB"));
    }

    #[test]
    fn memprofile_pattern_go119() {
        let (flag, rate) = (DATA + 0x100, DATA + 0x108); // beyond the file bytes: .bss
        let mut code = Vec::new();
        rip_insn(&mut code, &[0x0f, 0xb6, 0x05], flag, &[]); // movzx eax, byte [rip+flag]
        code.extend_from_slice(&[0x48, 0x85, 0xc0]); // test rax, rax
        code.extend_from_slice(&[0xb8, 0x00, 0x00, 0x08, 0x00]); // mov eax, 0x80000
        code.extend_from_slice(&[0x48, 0x0f, 0x45, 0xc1]); // cmovne rax, rcx
        rip_insn(&mut code, &[0x48, 0x89, 0x05], rate, &[]); // mov [rip+rate], rax
        let insns = decode(&code);
        binary_with(&[0u8; 0x20], |bin| assert_eq!(memprofile_at(bin, &insns, 0, flag), Some((flag, rate))));
        let without_default: Vec<_> =
            insns.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, x)| *x).collect();
        binary_with(&[0u8; 0x20], |bin| assert_eq!(memprofile_at(bin, &without_default, 0, flag), None));
    }

    /// A `[3]string` table with its strings, at `DATA`.
    fn wait_table(lens: [u64; 3]) -> Vec<u8> {
        let mut d = vec![0u8; 0x80];
        let strs: [&[u8]; 3] = [b"", b"chan receive", b"select"];
        let mut at = 0x40;
        for (i, s) in strs.iter().enumerate() {
            d[i * 16..i * 16 + 8].copy_from_slice(&(DATA + at as u64).to_le_bytes());
            d[i * 16 + 8..i * 16 + 16].copy_from_slice(&lens[i].to_le_bytes());
            d[at..at + s.len()].copy_from_slice(s);
            at += 16;
        }
        d
    }

    #[test]
    fn wait_reason_strings_from_file_image() {
        let table = WaitReasonTable { address: DATA, count: 3 };
        binary_with(&wait_table([0, 12, 6]), |bin| {
            assert_eq!(read_wait_reasons(bin, table).unwrap(), ["", "chan receive", "select"]);
            assert_eq!(read_wait_reasons(bin, WaitReasonTable { count: 0, ..table }), None);
            assert_eq!(read_wait_reasons(bin, WaitReasonTable { count: 5000, ..table }), None);
            assert_eq!(
                read_wait_reasons(bin, WaitReasonTable { count: 9, ..table }),
                None,
                "runs off the data"
            );
        });
        binary_with(&wait_table([0, 1 << 40, 6]), |bin| assert_eq!(read_wait_reasons(bin, table), None));
    }

    #[test]
    fn wait_reason_strings_through_pie_relocations() {
        let mut d = wait_table([0, 12, 6]);
        let mut rela = Vec::new();
        for i in 0..3u64 {
            let slot = usize::try_from(i * 16).unwrap();
            let ptr = u64::from_le_bytes(d[slot..slot + 8].try_into().unwrap());
            d[slot..slot + 8].fill(0);
            rela.extend(rela_relative(DATA + i * 16, ptr));
        }
        let sections = [
            Section::new(".data", DATA, &d, 6),
            Section { kind: 4, ..Section::new(".rela.dyn", 0, &rela, 4) },
        ];
        let file = elf64(&sections, Options { e_type: 3, ..Options::default() });
        let bin = Binary::parse(&file).unwrap();
        let names = read_wait_reasons(&bin, WaitReasonTable { address: DATA, count: 3 }).unwrap();
        assert_eq!(names, ["", "chan receive", "select"]);
    }
}
