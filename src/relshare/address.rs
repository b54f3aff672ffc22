//! Stable addresses: where an object goes when relocations are shared.
//!
//! Owns: an object's identity (device, inode, size, modification and
//! change times), the per-boot, per-user secret kept in the cache
//! directory, and the address derived from both. Must never: use an
//! address outside [`WINDOW`], or let the address be guessed without the
//! secret (it is keyed SipHash-2-4 of the secret, the user and the file).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::trust;

/// The address window stable placements use: 32 TiB to 80 TiB. On x86-64
/// with 47-bit user addresses the kernel's normal (top-down) `mmap`
/// placement starts just below the stack, near 128 TiB, and would need 48
/// TiB of mappings to reach 80 TiB; PIE executables and their heap sit at
/// about 85 TiB (0x5555_5555_xxxx), non-PIE ones below 4 GiB. So nothing a
/// process maps normally lands here, and `MAP_FIXED_NOREPLACE` catches
/// the rare exception.
pub const WINDOW: (u64, u64) = (0x2000_0000_0000, 0x5000_0000_0000);

/// Stable placements are aligned to 2 MiB (or the object's own larger
/// `p_align`), which spreads them over 24 million slots of the window.
const SLOT_ALIGN: u64 = 2 << 20;

/// Which file an object came from, as far as its bytes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u64,
    /// Inode change time, nanoseconds: no user can set it back, so a file
    /// rewritten and given its old mtime still differs.
    pub ctime_ns: u64,
}

impl Identity {
    pub fn of_path(path: &Path) -> std::io::Result<Identity> {
        Ok(Self::of_metadata(&std::fs::metadata(path)?))
    }

    pub fn of_metadata(m: &std::fs::Metadata) -> Identity {
        let ns = |s: i64, n: i64| {
            (s as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(n as u64)
        };
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The secret of this boot and user: 32 random bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

const SECRET_MAGIC: &[u8; 8] = b"MMLDSEC1";
const SECRET_FILE: &str = "secret";
const BOOT_ID_LEN: usize = 36;
const SECRET_LEN: usize = 8 + BOOT_ID_LEN + 32;

/// The secret kept in `dir` for the current boot, created (mode 0600,
/// `O_EXCL`) when the directory has none or one of an earlier boot. The
/// directory must already have passed [`trust::check_dir`].
pub fn secret(dir: &Path) -> Result<Secret, String> {
    let boot = boot_id()?;
    let path = dir.join(SECRET_FILE);
    match trust::open_file(&path) {
        Ok(Some((mut f, _))) => {
            let mut buf = Vec::with_capacity(SECRET_LEN);
            Read::by_ref(&mut f)
                .take(SECRET_LEN as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            if let Some(s) = parse_secret(&buf, &boot) {
                return Ok(s);
            }
            // Another boot's (or a damaged) secret: replace it.
            create_secret(dir, &boot, true)
        }
        Ok(None) => create_secret(dir, &boot, false),
        Err(why) => Err(why),
    }
}

fn parse_secret(buf: &[u8], boot: &[u8; BOOT_ID_LEN]) -> Option<Secret> {
    if buf.len() != SECRET_LEN
        || buf.get(..8)? != SECRET_MAGIC
        || buf.get(8..8 + BOOT_ID_LEN)? != boot
    {
        return None;
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(buf.get(8 + BOOT_ID_LEN..)?);
    Some(Secret(s))
}

fn create_secret(dir: &Path, boot: &[u8; BOOT_ID_LEN], replace: bool) -> Result<Secret, String> {
    let mut s = [0u8; 32];
    random_bytes(&mut s)?;
    let mut content = Vec::with_capacity(SECRET_LEN);
    content.extend_from_slice(SECRET_MAGIC);
    content.extend_from_slice(boot);
    content.extend_from_slice(&s);
    let tmp = trust::temp_name(dir, SECRET_FILE);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let written = f.write_all(&content);
    drop(f);
    let path = dir.join(SECRET_FILE);
    let placed = written.and_then(|()| {
        if replace {
            std::fs::rename(&tmp, &path)
        } else {
            // Two processes creating the first secret at once: the first
            // link wins and the other reads it, so both use one secret.
            std::fs::hard_link(&tmp, &path)
        }
    });
    let _ = std::fs::remove_file(&tmp);
    match placed {
        Ok(()) => Ok(Secret(s)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut buf = Vec::new();
            let (mut f, _) =
                trust::open_file(&path)?.ok_or_else(|| format!("{} vanished", path.display()))?;
            Read::by_ref(&mut f)
                .take(SECRET_LEN as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            parse_secret(&buf, boot).ok_or_else(|| format!("{} is damaged", path.display()))
        }
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, a UUID).
fn boot_id() -> Result<[u8; BOOT_ID_LEN], String> {
    // One read: procfs hands the whole 37-byte line to the first read
    // (`fs::read` would add an `fstat` and two more reads to every load).
    let mut text = [0u8; 64];
    let n = std::fs::File::open("/proc/sys/kernel/random/boot_id")
        .and_then(|mut f| f.read(&mut text))
        .map_err(|e| format!("reading the boot id: {e}"))?;
    let mut id = [0u8; BOOT_ID_LEN];
    let src = text
        .get(..n.min(BOOT_ID_LEN))
        .filter(|t| t.len() == BOOT_ID_LEN)
        .ok_or_else(|| "the boot id is too short".to_string())?;
    id.copy_from_slice(src);
    Ok(id)
}

fn random_bytes(out: &mut [u8]) -> Result<(), String> {
    let mut filled = 0;
    while filled < out.len() {
        let rest = out.get_mut(filled..).unwrap_or_default();
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("getrandom: {e}"));
        }
        filled += n as usize;
    }
    Ok(())
}

/// The stable address of an object with this identity, `span` bytes long
/// and aligned to `align`, for user `euid` under `secret`; `None` when it
/// cannot fit the window. The address depends on the file (device and
/// inode), not on its contents: a file rewritten in place keeps its
/// address, so its old cache entry is found, seen to be stale, and
/// replaced.
pub fn stable_address(
    secret: &Secret,
    euid: u32,
    id: &Identity,
    span: u64,
    align: u64,
) -> Option<u64> {
    let align = align.max(SLOT_ALIGN);
    if !align.is_power_of_two() || align > 1 << 30 {
        return None;
    }
    let room = (WINDOW.1 - WINDOW.0).checked_sub(span.checked_next_multiple_of(align)?)?;
    let slots = room / align;
    if slots == 0 {
        return None;
    }
    // SipHash takes a 128-bit key: the secret's other half goes into the
    // message, so all 256 bits count.
    let mut message = [0u8; 40];
    message[..16].copy_from_slice(&secret.0[16..]);
    message[16..24].copy_from_slice(&u64::from(euid).to_le_bytes());
    message[24..32].copy_from_slice(&id.dev.to_le_bytes());
    message[32..].copy_from_slice(&id.ino.to_le_bytes());
    let h = siphash24(secret_key(secret), &message);
    Some(WINDOW.0 + (h % slots) * align)
}

fn secret_key(secret: &Secret) -> (u64, u64) {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&secret.0[i..i + 8]);
        u64::from_le_bytes(w)
    };
    (word(0), word(8))
}

/// SipHash-2-4 (Aumasson and Bernstein), keyed with `(k0, k1)`: a keyed
/// hash whose output cannot be predicted without the key.
pub fn siphash24((k0, k1): (u64, u64), data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let m = u64::from_le_bytes(w);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let tail = chunks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The paper's test vector: key 00..0f, message 00..0e.
        let key = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(key, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn address_is_stable_for_the_same_identity_and_secret() {
        let s = Secret([7; 32]);
        let id = Identity {
            dev: 2049,
            ino: 1234,
            size: 99,
            ..Default::default()
        };
        let a = stable_address(&s, 0, &id, 0x10_0000, 0x1000).unwrap();
        assert_eq!(Some(a), stable_address(&s, 0, &id, 0x10_0000, 0x1000));
        assert!(a >= WINDOW.0 && a + 0x10_0000 <= WINDOW.1);
        assert_eq!(a % SLOT_ALIGN, 0);
    }

    #[test]
    fn address_differs_for_another_file_user_or_secret() {
        let s = Secret([7; 32]);
        let id = Identity {
            dev: 2049,
            ino: 1234,
            ..Default::default()
        };
        let a = stable_address(&s, 0, &id, 0x10_0000, 0x1000);
        let other_file = Identity { ino: 1235, ..id };
        assert_ne!(a, stable_address(&s, 0, &other_file, 0x10_0000, 0x1000));
        assert_ne!(a, stable_address(&s, 1000, &id, 0x10_0000, 0x1000));
        assert_ne!(
            a,
            stable_address(&Secret([8; 32]), 0, &id, 0x10_0000, 0x1000)
        );
    }

    #[test]
    fn address_honours_a_large_alignment_and_refuses_a_huge_span() {
        let s = Secret([1; 32]);
        let id = Identity::default();
        let a = stable_address(&s, 0, &id, 0x1000, 1 << 30).unwrap();
        assert_eq!(a % (1 << 30), 0);
        assert_eq!(stable_address(&s, 0, &id, WINDOW.1, 0x1000), None);
    }
}
