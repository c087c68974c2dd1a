//! One fact about the running kernel from its own type information
//! (`/sys/kernel/btf/vmlinux`): where `exit_code` is in `struct task_struct`, which the
//! exit tracepoint reads (its record has no exit status). aya does not expose struct
//! members, and BTF is simple enough to walk here: a header, types, strings.

const KIND_STRUCT: u32 = 4;

/// The byte offset of `exit_code` in `struct task_struct`.
pub fn task_exit_code_offset() -> Option<u32> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    member_offset(&data, "task_struct", "exit_code")
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The byte offset of `member` in the struct named `strukt`, from raw BTF.
fn member_offset(data: &[u8], strukt: &str, member: &str) -> Option<u32> {
    if data.get(..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr_len = u32_at(data, 4)? as usize;
    let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
    let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
    let types =
        data.get(hdr_len.checked_add(type_off)?..hdr_len.checked_add(type_off)?.checked_add(type_len)?)?;
    let strings =
        data.get(hdr_len.checked_add(str_off)?..hdr_len.checked_add(str_off)?.checked_add(str_len)?)?;
    let name = |off: u32| -> Option<&[u8]> {
        let rest = strings.get(off as usize..)?;
        rest.get(..rest.iter().position(|b| *b == 0)?)
    };
    let mut at = 0usize;
    while at < types.len() {
        let (name_off, info) = (u32_at(types, at)?, u32_at(types, at + 4)?);
        let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        let body = at.checked_add(12)?;
        if kind == KIND_STRUCT && name(name_off)? == strukt.as_bytes() {
            return (0..vlen).find_map(|i| {
                let m = body + i * 12;
                (name(u32_at(types, m)?)? == member.as_bytes()).then_some(())?;
                let offset = u32_at(types, m + 8)?;
                let bits = if kind_flag != 0 { offset & 0xff_ffff } else { offset };
                Some(bits / 8)
            });
        }
        at = body.checked_add(extra_bytes(kind, vlen)?)?;
    }
    None
}

/// Bytes after the 12-byte common part, by BTF kind.
fn extra_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // int, var, decl tag
        3 => 12,                      // array
        4 | 5 | 15 | 19 => vlen * 12, // struct, union, datasec, enum64
        6 | 13 => vlen * 8,           // enum, func proto
        2 | 7..=12 | 16 | 18 => 0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_says_where_exit_code_is() {
        // leaktracer requires a kernel with BTF (README), so this one must have it.
        let offset = task_exit_code_offset().expect("task_struct.exit_code in BTF");
        assert!(offset > 0 && offset < 16384, "{offset}");
    }

    #[test]
    fn garbage_is_not_a_struct() {
        assert_eq!(member_offset(&[], "a", "b"), None);
        assert_eq!(member_offset(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0], "a", "b"), None);
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert_eq!(member_offset(&noise, "task_struct", "exit_code"), None);
    }
}
