//! The Go runtime's function table (`.gopclntab`), Go 1.18+ formats.
//!
//! The pclntab is the one symbol source that survives `-ldflags="-s -w"`, because the
//! runtime needs it for tracebacks and GC. It gives function bounds and names (to place
//! uprobes on stripped binaries) and per-pc file/line/inline information (to symbolize
//! stacks the way `runtime.CallersFrames` does, including inlined calls).
//!
//! Layout (`runtime/symtab.go`, `cmd/link/internal/ld/pcln.go`): a `pcHeader`, then the
//! function name table, the per-CU file index table, the file name table, the pc-value
//! tables and the function table (`{entryoff, funcoff uint32}` pairs followed by `_func`
//! records). Inline trees live in `go:func.*`, addressed from `moduledata.gofunc`.

use super::binary::Binary;
use super::moduledata::{self, HeaderFacts, ModuleData};
use super::reader::{self, Endian};
use super::{Error, Result};

/// Magic of the Go 1.18–1.19 format.
pub const MAGIC_GO118: u32 = 0xffff_fff0;
/// Magic of the Go 1.20+ format.
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// `_PCDATA_InlTreeIndex`.
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `_FUNCDATA_InlTree`.
const FUNCDATA_INL_TREE: u32 = 3;

/// Cap on nested inlining depth followed by [`Pclntab::frames`] (the compiler's own limit
/// is far lower; this only stops cycles in corrupt tables).
const MAX_INLINE_DEPTH: usize = 256;
/// Cap on names read from the tables.
const MAX_NAME: usize = 64 * 1024;
/// Functions whose inline trees are sampled to validate `moduledata.gofunc`.
const GOFUNC_SAMPLE: usize = 32;
/// Cap on well-formed pclntab headers tried when scanning a file without the section.
const MAX_SCAN_CANDIDATES: usize = 16;

/// A function from the function table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    /// Entry address.
    pub entry: u64,
    /// End address (entry of the next function; includes alignment padding).
    pub end: u64,
    /// Symbol name as stored, e.g. `main.main` or `main.G[go.shape.int]`.
    pub name: String,
}

/// One logical frame at a pc, as `runtime.CallersFrames` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Function name (the inlined callee for inlined frames).
    pub function: String,
    /// Source file, or `?` when unknown.
    pub file: String,
    /// Source line, or 0 when unknown.
    pub line: u32,
    /// Whether this frame was inlined into its caller.
    pub inlined: bool,
}

/// Which `_func` / `inlinedCall` layout the table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Go 1.18–1.19 (`0xfffffff0`): 40-byte `_func`, 20-byte `inlinedCall`.
    Go118,
    /// Go 1.20+ (`0xfffffff1`): 44-byte `_func` (adds `startLine`), 16-byte `inlinedCall`.
    Go120,
}

impl Format {
    /// Size of the fixed part of `_func`.
    fn func_header(self) -> usize {
        match self {
            Format::Go118 => 40,
            Format::Go120 => 44,
        }
    }

    /// Size of one inline tree entry.
    fn inl_entry(self) -> u64 {
        match self {
            Format::Go118 => 20,
            Format::Go120 => 16,
        }
    }

    /// Offsets of `nameOff` and `parentPc` inside an inline tree entry.
    fn inl_fields(self) -> (usize, usize) {
        match self {
            Format::Go118 => (12, 16),
            Format::Go120 => (4, 8),
        }
    }
}

/// A parsed pclntab borrowing the file bytes.
#[derive(Debug, Clone)]
pub struct Pclntab<'data> {
    format: Format,
    endian: Endian,
    quantum: u8,
    nfunc: usize,
    text_start: u64,
    funcnametab: &'data [u8],
    cutab: &'data [u8],
    filetab: &'data [u8],
    pctab: &'data [u8],
    functab: &'data [u8],
    /// Bytes of `go:func.*` (from `moduledata.gofunc`), needed for inline trees.
    gofunc: Option<&'data [u8]>,
    moduledata: Option<ModuleData>,
    address: u64,
}

/// The decoded fixed header.
struct Header {
    format: Format,
    endian: Endian,
    quantum: u8,
    ptr_size: u8,
    nfunc: u64,
    text_start: u64,
    offsets: [u64; 5],
}

/// Fields of one `_func` record.
#[derive(Debug, Clone, Copy)]
struct RawFunc<'data> {
    raw: &'data [u8],
    entry: u64,
    end: u64,
    name_off: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    nfuncdata: u8,
}

impl<'data> Pclntab<'data> {
    /// Finds and parses the pclntab of `bin`: the `.gopclntab` section (`.data.rel.ro.gopclntab`
    /// in Go ≤1.25 PIE builds), else a validated header found by scanning the data segments.
    pub fn from_binary(bin: &Binary<'data>) -> Result<Self> {
        let minor = super::version::go_version(bin).ok().map(|v| v.minor);
        for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
            if let Some((addr, size)) = bin.section_range(name) {
                let data = bin.bytes_at(addr, usize::try_from(size).map_err(|_| Error::Malformed("size"))?);
                return Self::parse(bin, addr, data.ok_or(Error::Malformed(".gopclntab bounds"))?, minor);
            }
        }
        Self::scan(bin, minor).ok_or(Error::NotFound("pclntab"))
    }

    /// Searches non-executable segments for a pclntab header that parses. At most
    /// [`MAX_SCAN_CANDIDATES`] well-formed headers are tried, so a file full of magic
    /// numbers cannot make this quadratic.
    fn scan(bin: &Binary<'data>, minor: Option<u32>) -> Option<Self> {
        let align = usize::from(bin.ptr_size());
        let mut tried = 0;
        for load in bin.loads().iter().filter(|l| !l.is_exec()) {
            let Some(bytes) = bin.bytes_from(load.vaddr) else { continue };
            for pos in (0..bytes.len()).step_by(align) {
                let Some(data) = bytes.get(pos..).filter(|d| detect_magic(d).is_some()) else { continue };
                if Self::decode(data).is_err() {
                    continue;
                }
                let addr = load.vaddr.checked_add(pos as u64)?;
                if let Ok(tab) = Self::parse(bin, addr, data, minor) {
                    return Some(tab);
                }
                tried += 1;
                if tried >= MAX_SCAN_CANDIDATES {
                    return None;
                }
            }
        }
        None
    }

    /// Parses a pclntab whose header is at `addr` with bytes `data`, then locates the module
    /// data (for the text start of Go 1.26+ and for inline trees). `minor` is the Go minor
    /// version if known; it selects the module data layout.
    pub fn parse(bin: &Binary<'data>, addr: u64, data: &'data [u8], minor: Option<u32>) -> Result<Self> {
        let (mut tab, header) = Self::decode(data)?;
        tab.address = addr;
        tab.attach_moduledata(bin, &header, addr, minor);
        if tab.text_start == 0 {
            return Err(Error::NotFound("text start (pclntab header and moduledata)"));
        }
        Ok(tab)
    }

    /// Parses a standalone pclntab blob without module data: the text start comes from the
    /// header (0 in Go 1.26+, where [`Pclntab::parse`] must be used) and inline trees are not
    /// expanded.
    pub fn from_bytes(data: &'data [u8]) -> Result<Self> {
        Ok(Self::decode(data)?.0)
    }

    /// Decodes the header and slices the sub-tables.
    fn decode(data: &'data [u8]) -> Result<(Self, Header)> {
        let header = parse_header(data)?;
        let sub = |i: usize| -> Result<&'data [u8]> {
            let off = usize::try_from(header.offsets[i]).map_err(|_| Error::Malformed("pclntab offset"))?;
            data.get(off..).ok_or(Error::Malformed("pclntab offset"))
        };
        let functab = sub(4)?;
        let nfunc = usize::try_from(header.nfunc).map_err(|_| Error::Malformed("nfunc"))?;
        if nfunc.checked_add(1).and_then(|n| n.checked_mul(8)).is_none_or(|n| n > functab.len()) {
            return Err(Error::Malformed("pclntab function table"));
        }
        let tab = Pclntab {
            format: header.format,
            endian: header.endian,
            quantum: header.quantum,
            nfunc,
            text_start: header.text_start,
            funcnametab: sub(0)?,
            cutab: sub(1)?,
            filetab: sub(2)?,
            pctab: sub(3)?,
            functab,
            gofunc: None,
            moduledata: None,
            address: 0,
        };
        Ok((tab, header))
    }

    /// Supplies the `go:func.*` bytes (from `moduledata.gofunc`) directly, enabling inline
    /// expansion for a table made with [`Pclntab::from_bytes`].
    pub fn with_gofunc(mut self, gofunc: &'data [u8]) -> Self {
        self.gofunc = Some(gofunc);
        self
    }

    /// Looks up the module data to fill in the text start (Go 1.26+) and `gofunc`.
    fn attach_moduledata(&mut self, bin: &Binary<'data>, header: &Header, addr: u64, minor: Option<u32>) {
        if header.ptr_size != bin.ptr_size() {
            return;
        }
        let facts = HeaderFacts {
            addr,
            funcname_offset: header.offsets[0],
            pcln_offset: header.offsets[4],
            nfunc: header.nfunc,
            first_entry_off: self.ftab_entry(0).map_or(0, u64::from),
            go118: header.format == Format::Go118,
        };
        let Some(mut md) = moduledata::find(bin, &facts, minor) else { return };
        if self.text_start == 0 {
            self.text_start = md.text;
        }
        let candidates = moduledata::gofunc_candidates(bin, md.address, facts.go118, minor);
        let plausible = |&a: &u64| bin.bytes_from(a).filter(|g| self.gofunc_plausible(g)).map(|g| (a, g));
        let found = candidates.iter().find_map(plausible);
        md.gofunc = found.map(|f| f.0);
        self.gofunc = found.map(|f| f.1);
        self.moduledata = Some(md);
    }

    /// The table format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Address of the pclntab header.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Base address of function entry offsets (`moduledata.text`).
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// Whether the table has no functions.
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// The validated module data, if it was found.
    pub fn moduledata(&self) -> Option<&ModuleData> {
        self.moduledata.as_ref()
    }

    /// Whether inline trees can be decoded (requires `moduledata.gofunc`).
    pub fn has_inline_info(&self) -> bool {
        self.gofunc.is_some()
    }

    /// `ftab[i].entryoff`.
    fn ftab_entry(&self, i: usize) -> Option<u32> {
        reader::u32_at(self.functab, i.checked_mul(8)?, self.endian)
    }

    /// `ftab[i].funcoff`.
    fn ftab_funcoff(&self, i: usize) -> Option<u32> {
        reader::u32_at(self.functab, i.checked_mul(8)?.checked_add(4)?, self.endian)
    }

    /// Index of the function containing `pc` (binary search over the function table).
    fn find_index(&self, pc: u64) -> Option<usize> {
        let off = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ftab_entry(mid)? <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        (off < self.ftab_entry(i.checked_add(1)?)?).then_some(i)
    }

    /// Decodes the `_func` record of function `i`.
    fn raw_func(&self, i: usize) -> Option<RawFunc<'data>> {
        let raw = self.functab.get(usize::try_from(self.ftab_funcoff(i)?).ok()?..)?;
        let u32f = |n: usize| reader::u32_at(raw, n * 4, self.endian);
        let entry_off = self.ftab_entry(i)?;
        if u32f(0)? != entry_off {
            return None;
        }
        let nfuncdata = reader::u8_at(raw, self.format.func_header() - 1)?;
        Some(RawFunc {
            raw,
            entry: self.text_start.checked_add(u64::from(entry_off))?,
            end: self.text_start.checked_add(u64::from(self.ftab_entry(i.checked_add(1)?)?))?,
            name_off: u32f(1)?,
            pcfile: u32f(5)?,
            pcln: u32f(6)?,
            npcdata: u32f(7)?,
            cu_offset: u32f(8)?,
            nfuncdata,
        })
    }

    /// A NUL-terminated name from the function name table.
    fn name(&self, off: u32) -> Option<&'data str> {
        reader::cstr_at(self.funcnametab, usize::try_from(off).ok()?, MAX_NAME)
    }

    /// The function containing `pc`.
    pub fn function_at(&self, pc: u64) -> Option<Func> {
        let f = self.raw_func(self.find_index(pc)?)?;
        Some(Func { entry: f.entry, end: f.end, name: self.name(f.name_off)?.to_owned() })
    }

    /// The `funcID` of the function containing `pc` (the runtime's kind of function:
    /// normal, a wrapper, ...; the numbering is version-specific).
    pub fn func_id_at(&self, pc: u64) -> Option<u8> {
        let f = self.raw_func(self.find_index(pc)?)?;
        reader::u8_at(f.raw, self.format.func_header() - 4)
    }

    /// The funcID the compiler gives wrappers (`FuncIDWrapper`), learnt from the ABI
    /// wrapper every Go binary has: the autogenerated twin of `runtime.goexit1`.
    pub fn wrapper_func_id(&self) -> Option<u8> {
        let (entry, _) =
            self.functions_named("runtime.goexit1").find(|&(entry, _)| self.is_autogenerated(entry))?;
        self.func_id_at(entry)
    }

    /// `(entry, end)` of the function named exactly `name`.
    ///
    /// Some names occur twice because ABI wrappers carry the name of the function they
    /// wrap: `runtime.goexit1` (Go) has an ABI0 wrapper for its assembly caller, and the
    /// assembly `runtime.reflectcall` has an ABIInternal wrapper. The wrapper's code is
    /// attributed to `<autogenerated>`, so the function whose entry is not is preferred;
    /// [`Pclntab::functions_named`] lists all of them.
    pub fn function_by_name(&self, name: &str) -> Option<(u64, u64)> {
        let mut all = self.functions_named(name).peekable();
        let first = *all.peek()?;
        Some(all.find(|&(entry, _)| !self.is_autogenerated(entry)).unwrap_or(first))
    }

    /// Whether the code at `pc` is attributed to the `<autogenerated>` pseudo-file.
    fn is_autogenerated(&self, pc: u64) -> bool {
        self.frames(pc).first().is_some_and(|f| f.file == "<autogenerated>")
    }

    /// `(entry, end)` of every function named exactly `name`, in address order.
    pub fn functions_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (u64, u64)> + 'a {
        (0..self.nfunc)
            .filter_map(|i| self.raw_func(i))
            .filter(move |f| self.name(f.name_off) == Some(name))
            .map(|f| (f.entry, f.end))
    }

    /// All functions in table order.
    pub fn functions(&self) -> impl Iterator<Item = Func> + '_ {
        (0..self.nfunc).filter_map(|i| {
            let f = self.raw_func(i)?;
            Some(Func { entry: f.entry, end: f.end, name: self.name(f.name_off)?.to_owned() })
        })
    }

    /// The frames at `pc`, innermost first, with inlined calls expanded like
    /// `runtime.CallersFrames`. Pass the pc to look up exactly: for return addresses that
    /// is `retaddr - 1`. Empty when `pc` is not in any function.
    pub fn frames(&self, pc: u64) -> Vec<Frame> {
        let Some(f) = self.find_index(pc).and_then(|i| self.raw_func(i)) else { return Vec::new() };
        let mut out = Vec::new();
        let mut pc = pc;
        while out.len() < MAX_INLINE_DEPTH {
            let (file, line) = self.file_line(&f, pc);
            match self.inlined_call(&f, pc) {
                Some((name, parent_pc)) => {
                    out.push(Frame { function: name.to_owned(), file, line, inlined: true });
                    pc = parent_pc;
                }
                None => {
                    let function = self.name(f.name_off).unwrap_or("?").to_owned();
                    out.push(Frame { function, file, line, inlined: false });
                    return out;
                }
            }
        }
        out
    }

    /// `(callee name, parent pc)` of the innermost inlined call at `pc`, if any.
    fn inlined_call(&self, f: &RawFunc<'data>, pc: u64) -> Option<(&'data str, u64)> {
        let gofunc = self.gofunc?;
        let ix = self.pcdata_value(f, PCDATA_INL_TREE_INDEX, pc)?;
        self.inline_entry(gofunc, f, u64::try_from(ix).ok()?)
    }

    /// `(callee name, parent pc)` of entry `ix` of `f`'s inline tree in `gofunc`.
    fn inline_entry(&self, gofunc: &[u8], f: &RawFunc<'data>, ix: u64) -> Option<(&'data str, u64)> {
        let tree_off = self.funcdata(f, FUNCDATA_INL_TREE)?;
        let entry_off = u64::from(tree_off).checked_add(ix.checked_mul(self.format.inl_entry())?)?;
        let entry = gofunc.get(usize::try_from(entry_off).ok()?..)?;
        let (name_at, parent_at) = self.format.inl_fields();
        let name = self.name(reader::u32_at(entry, name_at, self.endian)?).filter(|n| !n.is_empty())?;
        let parent_pc = f.entry.checked_add(u64::from(reader::u32_at(entry, parent_at, self.endian)?))?;
        (parent_pc < f.end).then_some((name, parent_pc))
    }

    /// Whether `gofunc` looks right: the first inline tree entry of up to
    /// [`GOFUNC_SAMPLE`] functions must name a function and point inside its caller. A
    /// wrong module data layout would fail this instead of producing wrong frame names.
    fn gofunc_plausible(&self, gofunc: &[u8]) -> bool {
        let with_tree = (0..self.nfunc)
            .filter_map(|i| self.raw_func(i))
            .filter(|f| self.funcdata(f, FUNCDATA_INL_TREE).is_some())
            .take(GOFUNC_SAMPLE);
        let mut checked = 0;
        for f in with_tree {
            if self.inline_entry(gofunc, &f, 0).is_none() {
                return false;
            }
            checked += 1;
        }
        checked > 0 || self.nfunc == 0
    }

    /// `funcdata[i]` (an offset from `gofunc`), or `None` if absent.
    fn funcdata(&self, f: &RawFunc<'data>, i: u32) -> Option<u32> {
        if i >= u32::from(f.nfuncdata) {
            return None;
        }
        let idx = usize::try_from(f.npcdata.checked_add(i)?).ok()?;
        let off = self.format.func_header().checked_add(idx.checked_mul(4)?)?;
        reader::u32_at(f.raw, off, self.endian).filter(|&v| v != u32::MAX)
    }

    /// Value of PCDATA table `i` at `pc`, or `None` if the table is absent.
    fn pcdata_value(&self, f: &RawFunc<'data>, i: u32, pc: u64) -> Option<i32> {
        if i >= f.npcdata {
            return None;
        }
        let off = self.format.func_header().checked_add(usize::try_from(i).ok()?.checked_mul(4)?)?;
        self.pcvalue(reader::u32_at(f.raw, off, self.endian)?, f.entry, pc)
    }

    /// Source file and line at `pc` in function `f` (`("?", 0)` when unknown).
    fn file_line(&self, f: &RawFunc<'data>, pc: u64) -> (String, u32) {
        let file = self.pcvalue(f.pcfile, f.entry, pc).and_then(|v| self.file_name(f.cu_offset, v));
        let line = self.pcvalue(f.pcln, f.entry, pc).and_then(|v| u32::try_from(v).ok());
        (file.unwrap_or("?").to_owned(), line.unwrap_or(0))
    }

    /// Resolves a per-CU file index through `cutab` and `filetab`.
    fn file_name(&self, cu_offset: u32, index: i32) -> Option<&'data str> {
        let slot = cu_offset.checked_add(u32::try_from(index).ok()?)?;
        let off = reader::u32_at(self.cutab, usize::try_from(slot).ok()?.checked_mul(4)?, self.endian)?;
        if off == u32::MAX {
            return None;
        }
        reader::cstr_at(self.filetab, usize::try_from(off).ok()?, MAX_NAME)
    }

    /// Evaluates the pc-value table at `off` for `target` (the runtime's `pcvalue`).
    /// Offset 0 means "no table".
    fn pcvalue(&self, off: u32, entry: u64, target: u64) -> Option<i32> {
        if off == 0 || target < entry {
            return None;
        }
        let mut pos = usize::try_from(off).ok()?;
        let (mut pc, mut val, mut first) = (entry, -1i32, true);
        loop {
            let uvdelta = u32::try_from(reader::uvarint(self.pctab, &mut pos)?).ok()?;
            if uvdelta == 0 && !first {
                return None;
            }
            val = val.wrapping_add((0u32.wrapping_sub(uvdelta & 1) ^ (uvdelta >> 1)) as i32);
            let pcdelta = reader::uvarint(self.pctab, &mut pos)?;
            pc = pc.checked_add(pcdelta.checked_mul(u64::from(self.quantum))?)?;
            if target < pc {
                return Some(val);
            }
            first = false;
        }
    }
}

/// Decodes and sanity-checks the `pcHeader`.
fn parse_header(data: &[u8]) -> Result<Header> {
    let bad = Error::Malformed("pclntab header");
    let (format, endian) = detect_magic(data).ok_or(Error::Unsupported("pclntab magic (need Go 1.18+)"))?;
    let pads_ok = reader::u8_at(data, 4) == Some(0) && reader::u8_at(data, 5) == Some(0);
    let quantum = reader::u8_at(data, 6).ok_or(Error::Malformed("pclntab header"))?;
    let ptr_size = reader::u8_at(data, 7).ok_or(Error::Malformed("pclntab header"))?;
    if !pads_ok || !matches!(quantum, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
        return Err(bad);
    }
    let word = |i: usize| reader::word_at(data, 8 + i * usize::from(ptr_size), ptr_size, endian);
    let nfunc = word(0).ok_or(Error::Malformed("pclntab header"))?;
    let text_start = word(2).ok_or(Error::Malformed("pclntab header"))?;
    let mut offsets = [0u64; 5];
    for (i, slot) in offsets.iter_mut().enumerate() {
        *slot = word(3 + i).ok_or(Error::Malformed("pclntab header"))?;
    }
    Ok(Header { format, endian, quantum, ptr_size, nfunc, text_start, offsets })
}

/// Recognizes the 1.18 and 1.20 magics in either byte order.
fn detect_magic(data: &[u8]) -> Option<(Format, Endian)> {
    [Endian::Little, Endian::Big].into_iter().find_map(|e| match reader::u32_at(data, 0, e)? {
        MAGIC_GO118 => Some((Format::Go118, e)),
        MAGIC_GO120 => Some((Format::Go120, e)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: u64 = 0x40_1000;

    fn u32s(v: &mut Vec<u8>, xs: &[u32]) {
        for x in xs {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// Two functions: `main.outer` [0, 0x20) with `main.inner` inlined at [0x10, 0x18), and
    /// `main.inner` [0x20, 0x30). Returns (pclntab, gofunc).
    fn synthetic(format: Format) -> (Vec<u8>, Vec<u8>) {
        let names = b"\0main.outer\0main.inner\0".to_vec();
        let mut cutab = Vec::new();
        u32s(&mut cutab, &[0, 5]);
        let files = b"a.go\0b.go\0".to_vec();
        // Offset 0 of pctab means "no table", so start with a pad byte.
        let tables: [&[u8]; 5] = [
            &[2, 0x10, 2, 0x08, 1, 0x08, 0],    // outer pcfile: 0, 1, 0
            &[22, 0x10, 20, 0x08, 17, 0x08, 0], // outer pcln: 10, 20, 11
            &[0, 0x10, 2, 0x08, 1, 0x08, 0],    // outer inline index: -1, 0, -1
            &[4, 0x10, 0],                      // inner pcfile: 1
            &[62, 0x10, 0],                     // inner pcln: 30
        ];
        let mut pctab = vec![0u8];
        let mut table_off = Vec::new();
        for t in tables {
            table_off.push(pctab.len() as u32);
            pctab.extend_from_slice(t);
        }
        let functab = functab(format, &table_off);
        let header_len = 8 + 8 * 8;
        let offs = [header_len, header_len + names.len(), 0, 0, 0];
        let offs = [
            offs[0],
            offs[1],
            offs[1] + cutab.len(),
            offs[1] + cutab.len() + files.len(),
            offs[1] + cutab.len() + files.len() + pctab.len(),
        ];
        let magic = if format == Format::Go118 { MAGIC_GO118 } else { MAGIC_GO120 };
        let mut out = Vec::new();
        u32s(&mut out, &[magic]);
        out.extend_from_slice(&[0, 0, 1, 8]);
        for w in [2u64, 2, TEXT].into_iter().chain(offs.iter().map(|&o| o as u64)) {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for part in [names, cutab, files, pctab, functab] {
            out.extend_from_slice(&part);
        }
        (out, inline_tree(format))
    }

    /// The function table and the two `_func` records.
    fn functab(format: Format, t: &[u32]) -> Vec<u8> {
        let start_line: &[u32] = if format == Format::Go118 { &[] } else { &[9] };
        let func_len = format.func_header() as u32;
        let outer_len = func_len + 3 * 4 + 4 * 4;
        let mut v = Vec::new();
        u32s(&mut v, &[0, 24, 0x20, 24 + outer_len, 0x30, 0]);
        u32s(&mut v, &[0, 1, 0, 0, 0, t[0], t[1], 3, 0]);
        u32s(&mut v, start_line);
        v.extend_from_slice(&[0, 0, 0, 4]);
        u32s(&mut v, &[0, 0, t[2], u32::MAX, u32::MAX, u32::MAX, 0]);
        u32s(&mut v, &[0x20, 12, 0, 0, 0, t[3], t[4], 0, 0]);
        u32s(&mut v, start_line);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v
    }

    /// One inline tree entry: `main.inner` called from outer's pc offset 4.
    fn inline_tree(format: Format) -> Vec<u8> {
        let mut v = Vec::new();
        match format {
            Format::Go118 => {
                v.extend_from_slice(&[0xff, 0xff, 0, 0]);
                u32s(&mut v, &[0, 10, 12, 4]);
            }
            Format::Go120 => u32s(&mut v, &[0, 12, 4, 29]),
        }
        v
    }

    fn frame(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
        Frame { function: function.into(), file: file.into(), line, inlined }
    }

    #[test]
    fn lookups_in_both_formats() {
        for format in [Format::Go118, Format::Go120] {
            let (blob, gofunc) = synthetic(format);
            let tab = Pclntab::from_bytes(&blob).unwrap();
            assert_eq!(tab.format(), format);
            assert_eq!(tab.len(), 2);
            let outer = tab.function_at(TEXT + 0x1f).unwrap();
            assert_eq!((outer.entry, outer.end, outer.name.as_str()), (TEXT, TEXT + 0x20, "main.outer"));
            assert_eq!(tab.function_at(TEXT + 0x20).unwrap().name, "main.inner");
            assert_eq!(tab.function_at(TEXT + 0x30), None);
            assert_eq!(tab.function_at(TEXT - 1), None);
            assert_eq!(tab.function_by_name("main.inner"), Some((TEXT + 0x20, TEXT + 0x30)));
            assert_eq!(tab.function_by_name("main"), None);
            assert_eq!(tab.functions().count(), 2);
            // Without go:func.* the inline tree cannot be read: physical frame only.
            assert_eq!(tab.frames(TEXT + 0x12), vec![frame("main.outer", "b.go", 20, false)]);
            let tab = tab.with_gofunc(&gofunc);
            let want = vec![frame("main.inner", "b.go", 20, true), frame("main.outer", "a.go", 10, false)];
            assert_eq!(tab.frames(TEXT + 0x12), want, "{format:?}");
            assert_eq!(tab.frames(TEXT + 0x1a), vec![frame("main.outer", "a.go", 11, false)]);
            assert_eq!(tab.frames(TEXT + 0x2f), vec![frame("main.inner", "b.go", 30, false)]);
            assert!(tab.frames(TEXT + 0x30).is_empty());
        }
    }

    #[test]
    fn every_truncation_and_byte_flip_is_safe() {
        for format in [Format::Go118, Format::Go120] {
            let (blob, gofunc) = synthetic(format);
            for len in 0..blob.len() {
                exercise(&blob[..len], &gofunc);
            }
            for i in 0..blob.len() {
                for x in [0x01, 0x80, 0xff] {
                    let mut m = blob.clone();
                    m[i] ^= x;
                    exercise(&m, &gofunc);
                }
            }
            for i in 0..gofunc.len() {
                let mut g = gofunc.clone();
                g[i] ^= 0xff;
                exercise(&blob, &g[..i]);
                exercise(&blob, &g);
            }
        }
    }

    /// Runs every lookup; only panics matter.
    fn exercise(blob: &[u8], gofunc: &[u8]) {
        let Ok(tab) = Pclntab::from_bytes(blob) else { return };
        let tab = tab.with_gofunc(gofunc);
        for pc in (TEXT - 2..TEXT + 0x34).step_by(3) {
            let _ = tab.frames(pc);
            let _ = tab.function_at(pc);
        }
        let _ = tab.functions().count();
        let _ = tab.function_by_name("main.inner");
    }

    #[test]
    fn header_validation() {
        assert!(matches!(parse_header(&[]), Err(Error::Unsupported(_))));
        let mut h = vec![0xfa, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        assert!(matches!(parse_header(&h), Err(Error::Unsupported(_))), "Go 1.16 magic");
        h[0] = 0xf1;
        h[6] = 3;
        assert!(matches!(parse_header(&h), Err(Error::Malformed(_))), "bad quantum");
        let (mut blob, _) = synthetic(Format::Go120);
        blob[8] = 0xff; // nfunc far beyond the function table
        assert!(Pclntab::from_bytes(&blob).is_err());
        let mut be = synthetic(Format::Go120).0;
        be[..4].copy_from_slice(&MAGIC_GO120.to_be_bytes());
        assert!(Pclntab::from_bytes(&be).is_err() || Pclntab::from_bytes(&be).unwrap().len() != 2);
    }
}
