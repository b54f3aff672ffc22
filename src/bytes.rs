//! Word-at-a-time helpers over the bytes of symbol names.
//!
//! Owns: comparing, copying and scanning short byte strings eight bytes at
//! a time (names are short, and a `memcmp` or `memchr` call costs as much as
//! the rest of a lookup). Used by the scope index, the public lookup API and
//! error values, so it sits below all of them. Must never: allocate, know
//! about symbol tables, or index a slice without a check.

pub(crate) fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.wrapping_add(8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Any zero byte among the eight bytes of `w`?
fn zero_byte_in(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    w.wrapping_sub(ONES) & !w & HIGHS != 0
}

/// Does `bytes` hold a zero byte? Eight bytes at a time, the last word
/// overlapping: a failed lookup checks its name for an inner NUL, and a
/// byte search call would cost more than the lookup.
pub fn has_nul(bytes: &[u8]) -> bool {
    let zero_in = zero_byte_in;
    let len = bytes.len();
    if len < 8 {
        return bytes.contains(&0);
    }
    let mut at = 0;
    while at + 8 < len {
        if zero_in(word(bytes, at)) {
            return true;
        }
        at += 8;
    }
    zero_in(word(bytes, len - 8))
}

/// Copy `from` into the start of `to` (which must be at least as long),
/// eight bytes at a time with the last word overlapping.
pub fn copy_name(to: &mut [u8], from: &[u8]) {
    let len = from.len();
    if len < 8 {
        if let Some(head) = to.get_mut(..len) {
            head.copy_from_slice(from);
        }
        return;
    }
    let mut put = |at: usize| {
        if let (Some(d), Some(s)) = (to.get_mut(at..at + 8), from.get(at..at + 8)) {
            d.copy_from_slice(s);
        }
    };
    let mut at = 0;
    while at + 8 < len {
        put(at);
        at += 8;
    }
    put(len - 8);
}

/// `a == b` for two slices of equal length, eight bytes at a time with the
/// last word overlapping: names are short, and a `memcmp` call costs as
/// much as the rest of a lookup.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if len < 8 {
        return a == b;
    }
    let mut at = 0;
    while at + 8 < len {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, len - 8) == word(b, len - 8)
}

#[cfg(test)]
mod tests {
    use super::{copy_name, has_nul, same_bytes};

    #[test]
    fn word_helpers_match_byte_loops() {
        let a = b"abcdefghijklmnopqrstuvwxyz0123456789".to_vec();
        for len in 0..a.len() {
            assert!(!has_nul(&a[..len]));
            for i in 0..len {
                let mut b = a[..len].to_vec();
                b[i] = 0;
                assert!(has_nul(&b), "len {len}, byte {i}");
            }
            let mut to = [0xffu8; 40];
            copy_name(&mut to, &a[..len]);
            assert_eq!(&to[..len], &a[..len]);
            assert!(to[len..].iter().all(|&b| b == 0xff));
        }
    }

    #[test]
    fn same_bytes_matches_slice_equality() {
        let a = b"abcdefghijklmnopqrstuvwxyz0123456789".to_vec();
        for len in 0..a.len() {
            assert!(same_bytes(&a[..len], &a[..len]));
            for i in 0..len {
                let mut b = a[..len].to_vec();
                b[i] ^= 0x20;
                assert!(!same_bytes(&a[..len], &b), "len {len}, byte {i}");
            }
            if len > 0 {
                assert!(!same_bytes(&a[..len], &a[..len - 1]));
            }
        }
    }
}
