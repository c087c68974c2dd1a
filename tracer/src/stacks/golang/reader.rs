//! Bounds-checked primitive reads shared by the parsers.
//!
//! Every function returns `None` instead of panicking when the requested bytes are not
//! there, so callers can parse hostile data with `?`.

/// Byte order of the data being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endian {
    Little,
    Big,
}

/// Returns `data[off..off + N]` as an array, or `None` when out of range.
fn array_at<const N: usize>(data: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    data.get(off..end)?.try_into().ok()
}

/// Reads one byte.
pub(super) fn u8_at(data: &[u8], off: usize) -> Option<u8> {
    data.get(off).copied()
}

/// Reads a `u32` in the given byte order.
pub(super) fn u32_at(data: &[u8], off: usize, endian: Endian) -> Option<u32> {
    let b = array_at::<4>(data, off)?;
    Some(match endian {
        Endian::Little => u32::from_le_bytes(b),
        Endian::Big => u32::from_be_bytes(b),
    })
}

/// Reads a `u64` in the given byte order.
pub(super) fn u64_at(data: &[u8], off: usize, endian: Endian) -> Option<u64> {
    let b = array_at::<8>(data, off)?;
    Some(match endian {
        Endian::Little => u64::from_le_bytes(b),
        Endian::Big => u64::from_be_bytes(b),
    })
}

/// Reads a 4- or 8-byte unsigned word; other sizes are rejected.
pub(super) fn word_at(data: &[u8], off: usize, size: u8, endian: Endian) -> Option<u64> {
    match size {
        4 => u32_at(data, off, endian).map(u64::from),
        8 => u64_at(data, off, endian),
        _ => None,
    }
}

/// Reads the NUL-terminated UTF-8 string starting at `off`, at most `max` bytes long.
pub(super) fn cstr_at(data: &[u8], off: usize, max: usize) -> Option<&str> {
    let rest = data.get(off..)?;
    let window = rest.get(..max.min(rest.len()))?;
    let len = window.iter().position(|&b| b == 0)?;
    std::str::from_utf8(window.get(..len)?).ok()
}

/// Decodes a little-endian base-128 varint at `*pos` (Go's `binary.Uvarint`), advancing
/// `*pos`. Rejects encodings longer than 10 bytes or overflowing 64 bits.
pub(super) fn uvarint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10u32 {
        let byte = *data.get(*pos)?;
        *pos = pos.checked_add(1)?;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let d = [1u8, 2, 3, 4, 5];
        assert_eq!(u32_at(&d, 0, Endian::Little), Some(0x0403_0201));
        assert_eq!(u32_at(&d, 0, Endian::Big), Some(0x0102_0304));
        assert_eq!(u32_at(&d, 2, Endian::Little), None);
        assert_eq!(u64_at(&d, 0, Endian::Little), None);
        assert_eq!(u32_at(&d, usize::MAX, Endian::Little), None);
        assert_eq!(word_at(&d, 0, 3, Endian::Little), None);
    }

    #[test]
    fn cstr_needs_terminator_within_limit() {
        let d = b"abc\0def";
        assert_eq!(cstr_at(d, 0, 10), Some("abc"));
        assert_eq!(cstr_at(d, 0, 3), None);
        assert_eq!(cstr_at(d, 4, 10), None);
        assert_eq!(cstr_at(d, 100, 10), None);
    }

    #[test]
    fn uvarint_matches_go() {
        let mut pos = 0;
        assert_eq!(uvarint(&[0xac, 0x02], &mut pos), Some(300));
        assert_eq!(pos, 2);
        let mut pos = 0;
        assert_eq!(uvarint(&[0x80, 0x80], &mut pos), None);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let mut pos = 0;
        assert_eq!(uvarint(&max, &mut pos), Some(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        let mut pos = 0;
        assert_eq!(uvarint(&over, &mut pos), None);
    }
}
