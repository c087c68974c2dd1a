//! Programs of the eBPF object that aya already loaded, made ready for loading with an
//! expected attach type, which aya 0.14 cannot set for uprobes.
//!
//! aya creates the maps (globals included) as usual. Here the same object bytes are
//! parsed again with aya-obj, the parser aya itself uses, and prepared the way
//! `EbpfLoader::load` prepares them: BTF sanitized for this kernel and loaded, CO-RE
//! relocations applied when there are any, map references pointed at **aya's** maps,
//! subprograms linked, helpers sanitized. So a program loaded from here shares every map
//! and global with the programs aya loads.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd},
};

use aya_obj::{ProgramSection, generated::bpf_insn};

use super::{
    MultiError,
    kfunc::{self, Kfuncs},
    link::MultiKind,
    sys::{self, ProgBtf, ProgLoad, uapi},
};

/// The relocated programs of an object, and what their instructions refer to.
pub struct ObjectPrograms {
    obj: aya_obj::Object,
    /// The object's BTF, loaded: the programs' function and line records refer to it.
    btf: Option<OwnedFd>,
    /// Copies of aya's map descriptors, which the relocated instructions name: they stay
    /// open as long as programs may be loaded from here, whatever becomes of aya's.
    _maps: Vec<OwnedFd>,
}

impl ObjectPrograms {
    /// Parses `object` (the bytes `EbpfLoader::load` was given for `ebpf`) and relocates
    /// its programs against `ebpf`'s maps.
    pub fn new(ebpf: &aya::Ebpf, object: &[u8]) -> Result<Self, MultiError> {
        let mut obj = aya_obj::Object::parse(object).map_err(|e| MultiError::Object(e.to_string()))?;
        let btf = load_btf(&mut obj)?;
        if obj.has_btf_relocations() {
            let target = aya_obj::btf::Btf::from_sys_fs().map_err(|e| MultiError::Object(e.to_string()))?;
            obj.relocate_btf(&target).map_err(|e| MultiError::Object(e.to_string()))?;
        }
        let mut maps = Vec::new();
        let mut relocations: Vec<(String, RawFd, aya_obj::Map)> = Vec::new();
        for (name, map) in &obj.maps {
            let aya_map = ebpf.map(name).ok_or_else(|| MultiError::MissingMap(name.clone()))?;
            let fd = map_fd(aya_map)
                .try_clone_to_owned()
                .map_err(|cause| MultiError::Syscall { call: "dup", cause })?;
            relocations.push((name.clone(), fd.as_raw_fd(), map.clone()));
            maps.push(fd);
        }
        // As in EbpfLoader::load: every section that holds functions.
        let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        let relocate = |e: aya_obj::relocation::EbpfRelocationError| MultiError::Object(e.to_string());
        obj.relocate_maps(relocations.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)), &text)
            .map_err(relocate)?;
        obj.relocate_calls(&text).map_err(relocate)?;
        obj.sanitize_functions(aya::features());
        Ok(Self { obj, btf, _maps: maps })
    }

    /// Whether `program` is an entry or a return probe, by its section (`uprobe`,
    /// `uretprobe`); `None` for any other program.
    pub fn probe_kind(&self, program: &str) -> Option<MultiKind> {
        match self.obj.programs.get(program)?.section {
            ProgramSection::UProbe { .. } => Some(MultiKind::Entry),
            ProgramSection::URetProbe { .. } => Some(MultiKind::Return),
            _ => None,
        }
    }

    /// Loads `program` for links of `kind`, its kfunc calls resolved with `kfuncs`.
    pub fn load(&self, program: &str, kind: MultiKind, kfuncs: &Kfuncs) -> Result<OwnedFd, MultiError> {
        let missing = || MultiError::MissingProgram(program.to_string());
        let p = self.obj.programs.get(program).ok_or_else(missing)?;
        let f = self.obj.functions.get(&p.function_key()).ok_or_else(missing)?;
        let mut insns: Vec<bpf_insn> = f.instructions.clone();
        kfunc::patch(&mut insns, kfuncs)
            .map_err(|name| MultiError::Kfunc { program: program.into(), name })?;
        let (func_info, line_info) = (f.func_info.func_info_bytes(), f.line_info.line_info_bytes());
        let btf = self.btf.as_ref().map(|btf| ProgBtf {
            btf: btf.as_fd(),
            func_info: &func_info,
            func_info_rec_size: u32::try_from(f.func_info_rec_size).unwrap_or(0),
            line_info: &line_info,
            line_info_rec_size: u32::try_from(f.line_info_rec_size).unwrap_or(0),
        });
        sys::prog_load(&ProgLoad {
            name: program,
            prog_type: uapi::BPF_PROG_TYPE_KPROBE,
            expected_attach_type: kind.attach_type(),
            insns: &insns,
            license: &p.license,
            btf,
        })
        .map_err(|failure| MultiError::Load { program: program.into(), kind, failure })
    }
}

/// The object's BTF, sanitized for this kernel (as aya does), loaded into the kernel.
fn load_btf(obj: &mut aya_obj::Object) -> Result<Option<OwnedFd>, MultiError> {
    let Some(features) = aya::features().btf() else { return Ok(None) };
    let raw = match obj.fixup_and_sanitize_btf(features) {
        Ok(Some(btf)) => btf.to_bytes(),
        Ok(None) => return Ok(None),
        Err(e) => return Err(MultiError::Object(e.to_string())),
    };
    sys::btf_load(&raw).map(Some).map_err(MultiError::Btf)
}

/// The descriptor of any aya map. aya 0.14 has no accessor from `Map` to its `MapData`,
/// but every variant holds one.
fn map_fd(map: &aya::maps::Map) -> BorrowedFd<'_> {
    use aya::maps::Map as M;
    let data = match map {
        M::Array(m)
        | M::ArrayOfMaps(m)
        | M::BloomFilter(m)
        | M::CgroupArray(m)
        | M::CgroupStorage(m)
        | M::CgrpStorage(m)
        | M::CpuMap(m)
        | M::DevMap(m)
        | M::DevMapHash(m)
        | M::HashMap(m)
        | M::HashOfMaps(m)
        | M::InodeStorage(m)
        | M::LpmTrie(m)
        | M::LruHashMap(m)
        | M::PerCpuArray(m)
        | M::PerCpuCgroupStorage(m)
        | M::PerCpuHashMap(m)
        | M::PerCpuLruHashMap(m)
        | M::PerfEventArray(m)
        | M::ProgramArray(m)
        | M::Queue(m)
        | M::ReusePortSockArray(m)
        | M::RingBuf(m)
        | M::SockHash(m)
        | M::SockMap(m)
        | M::SkStorage(m)
        | M::Stack(m)
        | M::StackTraceMap(m)
        | M::Unsupported(m)
        | M::XskMap(m) => m,
    };
    data.fd().as_fd()
}
