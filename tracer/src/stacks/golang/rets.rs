//! RET instruction sites, for return probes without uretprobes.
//!
//! A uretprobe rewrites the return address on the goroutine stack, which crashes Go when the
//! stack is copied or the goroutine migrates. Instead the tracer puts plain uprobes on every
//! RET of the function. They are found by decoding the function (x86-64 with iced-x86,
//! arm64 by its fixed 4-byte encoding), never by scanning for `0xC3` bytes, which also occur
//! inside other instructions.

use iced_x86::Mnemonic;

use super::binary::Binary;
use super::disasm;
use super::{Error, Result};

/// arm64 `RET Xn`: `1101011 0 0 10 11111 000000 nnnnn 00000`.
const ARM64_RET_MASK: u32 = 0xffff_fc1f;
const ARM64_RET: u32 = 0xd65f_0000;

/// One RET instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetSite {
    /// Virtual address of the instruction.
    pub address: u64,
    /// Offset in the file (what uprobe attachment by offset wants).
    pub file_offset: u64,
}

/// Converts a virtual address to a file offset through the `PT_LOAD` segments.
pub fn vaddr_to_file_offset(bin: &Binary<'_>, vaddr: u64) -> Option<u64> {
    bin.vaddr_to_offset(vaddr)
}

/// Every RET instruction in the function `[entry, end)`.
pub fn ret_sites(bin: &Binary<'_>, entry: u64, end: u64) -> Result<Vec<RetSite>> {
    let addresses = match bin.architecture() {
        object::Architecture::X86_64 => x86_64_rets(bin, entry, end)?,
        object::Architecture::Aarch64 => arm64_rets(bin, entry, end)?,
        _ => return Err(Error::Unsupported("RET decoding for this architecture")),
    };
    addresses
        .into_iter()
        .map(|address| {
            let file_offset = bin.vaddr_to_offset(address).ok_or(Error::Malformed("RET outside file"))?;
            Ok(RetSite { address, file_offset })
        })
        .collect()
}

/// Addresses of `RET`/`RET imm16` instructions (any prefixes) in an x86-64 function.
fn x86_64_rets(bin: &Binary<'_>, entry: u64, end: u64) -> Result<Vec<u64>> {
    let code = disasm::decode_x86_64(bin, entry, end)?;
    Ok(code.iter().filter(|i| i.mnemonic() == Mnemonic::Ret).map(|i| i.ip()).collect())
}

/// Addresses of `RET Xn` instructions in an arm64 function (4-byte aligned words).
fn arm64_rets(bin: &Binary<'_>, entry: u64, end: u64) -> Result<Vec<u64>> {
    if !entry.is_multiple_of(4) {
        return Err(Error::Malformed("unaligned arm64 function"));
    }
    let bytes = disasm::function_bytes(bin, entry, end)?;
    let words = bytes.chunks_exact(4).enumerate();
    let rets = words.filter(|(_, w)| is_arm64_ret(w)).filter_map(|(i, _)| entry.checked_add(4 * i as u64));
    Ok(rets.collect())
}

/// Whether a little-endian arm64 instruction word is `RET Xn`.
fn is_arm64_ret(word: &[u8]) -> bool {
    word.try_into().map(u32::from_le_bytes).is_ok_and(|w| w & ARM64_RET_MASK == ARM64_RET)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::testutil::{Options, Section, elf64};

    #[test]
    fn x86_64_rets_are_decoded_not_scanned() {
        let code = [
            0xb8, 0xc3, 0xc3, 0xc3, 0xc3, // mov eax, 0xc3c3c3c3 (C3 bytes inside an immediate)
            0xc3, // ret
            0xf3, 0xc3, // rep ret
            0xc2, 0x08, 0x00, // ret 8
            0xcc, 0xcc, // int3 padding
        ];
        let file = elf64(&[Section::new(".text", 0x40_1000, &code, 5)], Options::default());
        let bin = Binary::parse(&file).unwrap();
        let sites = ret_sites(&bin, 0x40_1000, 0x40_100d).unwrap();
        let addrs: Vec<u64> = sites.iter().map(|s| s.address).collect();
        assert_eq!(addrs, [0x40_1005, 0x40_1006, 0x40_1008]);
        for s in &sites {
            let off = usize::try_from(s.file_offset).unwrap();
            assert!(matches!(file[off], 0xc3 | 0xf3 | 0xc2));
            assert_eq!(vaddr_to_file_offset(&bin, s.address), Some(s.file_offset));
        }
        assert!(ret_sites(&bin, 0x40_1000, 0x40_2000).is_err(), "end beyond the file bytes");
        assert!(ret_sites(&bin, 0x40_1005, 0x40_1005).is_err(), "empty range");
        assert!(ret_sites(&bin, 0x40_1005, 0x40_1000).is_err(), "reversed range");
        assert!(ret_sites(&bin, 0, u64::MAX).is_err(), "huge range");
    }

    #[test]
    fn arm64_rets_from_words() {
        let mut code = Vec::new();
        for w in [0xd503_201fu32, 0xd65f_03c0, 0xd61f_0000, 0xd65f_0360] {
            code.extend_from_slice(&w.to_le_bytes());
        }
        let opts = Options { machine: 183, ..Options::default() };
        let file = elf64(&[Section::new(".text", 0x1_0000, &code, 5)], opts);
        let bin = Binary::parse(&file).unwrap();
        let addrs: Vec<u64> =
            ret_sites(&bin, 0x1_0000, 0x1_0010).unwrap().iter().map(|s| s.address).collect();
        assert_eq!(addrs, [0x1_0004, 0x1_000c]);
        assert!(ret_sites(&bin, 0x1_0002, 0x1_0010).is_err(), "unaligned entry");
    }

    #[test]
    fn arm64_ret_encoding() {
        assert!(is_arm64_ret(&0xd65f_03c0u32.to_le_bytes()), "ret (x30)");
        assert!(is_arm64_ret(&0xd65f_0020u32.to_le_bytes()), "ret x1");
        assert!(!is_arm64_ret(&0xd61f_0000u32.to_le_bytes()), "br x0");
        assert!(!is_arm64_ret(&0xd63f_0000u32.to_le_bytes()), "blr x0");
        assert!(!is_arm64_ret(&[0xc0, 0x03]));
    }
}
