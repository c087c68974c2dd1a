//! Kernel function (kfunc) calls: the programs call each kfunc through a placeholder
//! helper number (`tracer_ebpf::kfunc`); before loading, each such `call imm` becomes a
//! kfunc call by the function's BTF id in the running kernel.

use aya_obj::generated::bpf_insn;
use tracer_ebpf::kfunc::ALL;

use super::sys::uapi;
use crate::probe::btf;

/// BTF ids of the kfuncs this kernel has, by placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kfuncs(Vec<(i32, u32)>);

impl Kfuncs {
    /// Every kfunc of `tracer_ebpf::kfunc::ALL` found in the kernel's BTF.
    pub fn resolve(vmlinux: &[u8]) -> Self {
        Self(
            ALL.iter()
                .filter_map(|&(placeholder, name)| Some((placeholder, btf::func_id(vmlinux, name)?)))
                .collect(),
        )
    }

    /// The BTF id of the kfunc `placeholder` stands for, if the kernel has it.
    pub fn id(&self, placeholder: i32) -> Option<u32> {
        self.0.iter().find(|(p, _)| *p == placeholder).map(|(_, id)| *id)
    }

    #[cfg(test)]
    pub fn from_ids(ids: &[(i32, u32)]) -> Self {
        Self(ids.to_vec())
    }
}

/// Turns every placeholder call in `insns` into the call of its kfunc: `src_reg`
/// BPF_PSEUDO_KFUNC_CALL, `imm` the BTF id, `off` 0 (vmlinux). Other calls (helpers,
/// subprograms) and other instructions are left alone. Returns how many calls it
/// rewrote, or the name of a kfunc called but missing from `kfuncs`.
pub fn patch(insns: &mut [bpf_insn], kfuncs: &Kfuncs) -> Result<usize, &'static str> {
    let mut patched = 0;
    for insn in insns.iter_mut().filter(|i| i.code == uapi::BPF_CALL && i.src_reg() == 0) {
        let Some(&(placeholder, name)) = ALL.iter().find(|(p, _)| *p == insn.imm) else { continue };
        let id = kfuncs.id(placeholder).ok_or(name)?;
        insn.set_src_reg(uapi::BPF_PSEUDO_KFUNC_CALL);
        insn.imm = i32::try_from(id).map_err(|_| name)?;
        insn.off = 0;
        patched += 1;
    }
    Ok(patched)
}

/// An instruction, for tests and the feature probes.
pub(super) fn insn(code: u8, dst: u8, src: u8, imm: i32) -> bpf_insn {
    bpf_insn { code, _bitfield_align_1: [], _bitfield_1: bpf_insn::new_bitfield_1(dst, src), off: 0, imm }
}

#[cfg(test)]
mod tests {
    use tracer_ebpf::kfunc::SESSION_IS_RETURN;

    use super::*;

    const EXIT: u8 = 0x95;
    const LD_IMM64: u8 = 0x18;

    #[test]
    fn only_placeholder_calls_are_rewritten() {
        let mut insns = vec![
            insn(uapi::BPF_CALL, 0, 0, SESSION_IS_RETURN), // the placeholder
            insn(uapi::BPF_CALL, 0, 0, 14),                // a helper (bpf_get_current_pid_tgid)
            insn(uapi::BPF_CALL, 0, 1, SESSION_IS_RETURN), // a subprogram call: not touched
            insn(LD_IMM64, 1, 0, SESSION_IS_RETURN),       // the same number as data
            insn(0, 0, 0, 0),
            insn(EXIT, 0, 0, 0),
        ];
        let kfuncs = Kfuncs::from_ids(&[(SESSION_IS_RETURN, 65575)]);
        assert_eq!(patch(&mut insns, &kfuncs), Ok(1));
        assert_eq!((insns[0].src_reg(), insns[0].imm, insns[0].off), (uapi::BPF_PSEUDO_KFUNC_CALL, 65575, 0));
        assert_eq!((insns[1].src_reg(), insns[1].imm), (0, 14));
        assert_eq!((insns[2].src_reg(), insns[2].imm), (1, SESSION_IS_RETURN));
        assert_eq!(insns[3].imm, SESSION_IS_RETURN);
        // Patched once, nothing is left to patch.
        assert_eq!(patch(&mut insns, &kfuncs), Ok(0));
    }

    #[test]
    fn a_kfunc_the_kernel_lacks_is_named() {
        let mut insns = vec![insn(uapi::BPF_CALL, 0, 0, SESSION_IS_RETURN), insn(EXIT, 0, 0, 0)];
        assert_eq!(patch(&mut insns, &Kfuncs::default()), Err("bpf_session_is_return"));
        // No placeholder call, nothing needed.
        assert_eq!(patch(&mut insns[1..], &Kfuncs::default()), Ok(0));
    }

    #[test]
    fn kfuncs_are_found_in_btf() {
        let kfuncs = Kfuncs::resolve(&btf::tests::blob());
        assert_eq!(kfuncs.id(SESSION_IS_RETURN), Some(4));
        assert_eq!(Kfuncs::resolve(&[]), Kfuncs::default());
    }
}
