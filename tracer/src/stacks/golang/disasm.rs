//! x86-64 decoding of one function's bytes, shared by [`super::rets`] and [`super::symbols`].
//!
//! Functions are decoded linearly from their entry: Go's amd64 code has no data islands
//! (jump tables live in `.rodata`) and pads between functions with `INT3`.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

use super::binary::Binary;
use super::{Error, Result};

/// Largest function decoded; the biggest Go runtime functions are a few tens of KiB.
pub(super) const MAX_FUNCTION_SIZE: u64 = 4 << 20;

/// Decodes every instruction in `[entry, end)` of an x86-64 binary.
pub(super) fn decode_x86_64(bin: &Binary<'_>, entry: u64, end: u64) -> Result<Vec<Instruction>> {
    let bytes = function_bytes(bin, entry, end)?;
    let mut decoder = Decoder::with_ip(64, bytes, entry, DecoderOptions::NONE);
    let mut out = Vec::with_capacity(bytes.len() / 4);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        out.push(insn);
    }
    Ok(out)
}

/// The file bytes of `[entry, end)`, which must be non-empty, bounded and file-backed.
pub(super) fn function_bytes<'data>(bin: &Binary<'data>, entry: u64, end: u64) -> Result<&'data [u8]> {
    let size = end.checked_sub(entry).filter(|&s| s > 0).ok_or(Error::Malformed("function bounds"))?;
    if size > MAX_FUNCTION_SIZE {
        return Err(Error::TooLarge { what: "function", size, limit: MAX_FUNCTION_SIZE });
    }
    let len = usize::try_from(size).map_err(|_| Error::Malformed("function size"))?;
    bin.bytes_at(entry, len).ok_or(Error::Malformed("function not in file"))
}

/// The absolute address of a RIP-relative memory operand, if the instruction has one.
pub(super) fn rip_target(insn: &Instruction) -> Option<u64> {
    insn.is_ip_rel_memory_operand().then(|| insn.ip_rel_memory_address())
}

/// Whether operand `i` is the (RIP-relative) memory operand.
fn operand_is_memory(insn: &Instruction, i: u32) -> bool {
    i < insn.op_count() && insn.op_kind(i) == OpKind::Memory
}

/// `LEA reg, [rip+X]` → X.
pub(super) fn lea_target(insn: &Instruction) -> Option<u64> {
    (insn.mnemonic() == Mnemonic::Lea).then(|| rip_target(insn)).flatten()
}

/// `MOV reg, [rip+X]` (a load) → X.
pub(super) fn load_target(insn: &Instruction) -> Option<u64> {
    let is_load = insn.mnemonic() == Mnemonic::Mov && operand_is_memory(insn, 1);
    is_load.then(|| rip_target(insn)).flatten()
}

/// `MOV qword [rip+X], reg/imm` (an 8-byte store) → X.
pub(super) fn qword_store_target(insn: &Instruction) -> Option<u64> {
    let is_store = insn.mnemonic() == Mnemonic::Mov
        && operand_is_memory(insn, 0)
        && insn.memory_size() == iced_x86::MemorySize::UInt64;
    is_store.then(|| rip_target(insn)).flatten()
}

/// A one-byte read of `[rip+X]`: `CMP byte [rip+X], imm` or `MOVZX reg, byte [rip+X]` → X.
pub(super) fn byte_read_target(insn: &Instruction) -> Option<u64> {
    let byte = insn.memory_size() == iced_x86::MemorySize::UInt8;
    let ok = match insn.mnemonic() {
        Mnemonic::Cmp => byte && operand_is_memory(insn, 0),
        Mnemonic::Movzx => byte && operand_is_memory(insn, 1),
        _ => false,
    };
    ok.then(|| rip_target(insn)).flatten()
}

/// `CMP reg, imm` → imm (used to read array bounds checks).
pub(super) fn cmp_reg_imm(insn: &Instruction) -> Option<u64> {
    let ok = insn.mnemonic() == Mnemonic::Cmp && insn.op_count() == 2 && insn.op0_kind() == OpKind::Register;
    if !ok {
        return None;
    }
    match insn.op1_kind() {
        OpKind::Immediate8 | OpKind::Immediate32 | OpKind::Immediate8to32 | OpKind::Immediate8to64 => {
            Some(insn.immediate(1))
        }
        OpKind::Immediate32to64 | OpKind::Immediate16 | OpKind::Immediate8to16 => Some(insn.immediate(1)),
        _ => None,
    }
}

/// Whether any operand of `insn` is the immediate `value`.
pub(super) fn has_immediate(insn: &Instruction, value: u64) -> bool {
    (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64
        ) && insn.immediate(i) == value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn classifies_rip_relative_operands() {
        // lea rax, [rip+0x10]
        assert_eq!(lea_target(&one(&[0x48, 0x8d, 0x05, 0x10, 0, 0, 0])), Some(0x1017));
        // mov rcx, [rip+0x10]
        assert_eq!(load_target(&one(&[0x48, 0x8b, 0x0d, 0x10, 0, 0, 0])), Some(0x1017));
        // mov qword [rip+0x10], 0
        let store = one(&[0x48, 0xc7, 0x05, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(qword_store_target(&store), Some(0x101b));
        assert_eq!(load_target(&store), None);
        // cmp byte [rip+0x10], 0
        assert_eq!(byte_read_target(&one(&[0x80, 0x3d, 0x10, 0, 0, 0, 0])), Some(0x1017));
        // movzx eax, byte [rip+0x10]
        assert_eq!(byte_read_target(&one(&[0x0f, 0xb6, 0x05, 0x10, 0, 0, 0])), Some(0x1017));
        // cmp al, 0x2f
        assert_eq!(cmp_reg_imm(&one(&[0x3c, 0x2f])), Some(0x2f));
        // mov eax, 0x80000
        assert!(has_immediate(&one(&[0xb8, 0, 0, 8, 0]), 0x80000));
    }
}
