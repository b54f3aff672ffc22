//! glibc's own `dl*` entry points, found without asking the dynamic linker.
//!
//! Owns: the addresses of glibc's `dlopen`, `dlsym`, `dlvsym`, `dlclose`,
//! `dlerror`, `dladdr`, `dladdr1`, `dlinfo`, `dlmopen`, `dl_iterate_phdr`
//! and `_dl_find_object`, read from libc.so.6's own symbol table. Must
//! never: call any of those functions by their names.
//!
//! Why: once `libmmld.so` (the C ABI drop-in, `capi/`) is preloaded, the
//! names `dlopen`, `dlsym`, `dl_iterate_phdr`, ... resolve to the drop-in for
//! the whole process, mmld's own calls included. mmld asks glibc about host
//! objects through these functions (`RTLD_NOLOAD` references, host symbols,
//! the host scope); through the drop-in they would recurse or answer with
//! mmld's own objects. So the real functions are found the way ld.so finds
//! symbols, without any interposable lookup: the auxiliary vector gives
//! ld.so's load address (`AT_BASE`), ld.so's GNU hash table gives its
//! `_r_debug`, whose link map chain gives libc.so.6, and libc's GNU hash
//! table gives each function (its default, non-hidden version). Both
//! objects are the running C library and loader, which is why their tables
//! are read in place without the bounds checks used on untrusted files.
//! When that fails (no `AT_BASE`: a statically started process), the
//! functions bound at link time are used, which is right whenever the
//! drop-in is not loaded.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

type DlOpen = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
type DlSym = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
type DlVSym = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> *mut c_void;
type DlClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type DlError = unsafe extern "C" fn() -> *mut c_char;
type DlAddr = unsafe extern "C" fn(*const c_void, *mut libc::Dl_info) -> c_int;
type DlAddr1 =
    unsafe extern "C" fn(*const c_void, *mut libc::Dl_info, *mut *mut c_void, c_int) -> c_int;
type DlInfo = unsafe extern "C" fn(*mut c_void, c_int, *mut c_void) -> c_int;
type DlMOpen = unsafe extern "C" fn(libc::Lmid_t, *const c_char, c_int) -> *mut c_void;
/// `dl_iterate_phdr`'s callback type.
pub type PhdrCallback =
    Option<unsafe extern "C" fn(*mut libc::dl_phdr_info, usize, *mut c_void) -> c_int>;
type DlIteratePhdr = unsafe extern "C" fn(PhdrCallback, *mut c_void) -> c_int;
type DlFindObject = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;

/// glibc's real entry points.
pub struct RealDl {
    pub dlopen: DlOpen,
    pub dlsym: DlSym,
    pub dlvsym: DlVSym,
    pub dlclose: DlClose,
    pub dlerror: DlError,
    pub dladdr: DlAddr,
    pub dladdr1: DlAddr1,
    pub dlinfo: DlInfo,
    pub dlmopen: DlMOpen,
    pub dl_iterate_phdr: DlIteratePhdr,
    /// glibc 2.35 and later.
    pub dl_find_object: Option<DlFindObject>,
    /// Found in libc's own table (false: the link-time bindings).
    pub from_libc_tables: bool,
}

unsafe extern "C" {
    fn _dl_find_object(pc: *mut c_void, result: *mut c_void) -> c_int;
}

/// The real functions, resolved once per process.
pub fn real() -> &'static RealDl {
    static REAL: OnceLock<RealDl> = OnceLock::new();
    REAL.get_or_init(|| {
        // SAFETY: reads the running loader's and C library's tables, which
        // stay mapped for the life of the process (see the module comment).
        unsafe { from_libc() }.unwrap_or_else(linked)
    })
}

fn linked() -> RealDl {
    RealDl {
        dlopen: libc::dlopen,
        dlsym: libc::dlsym,
        dlvsym: libc::dlvsym,
        dlclose: libc::dlclose,
        dlerror: libc::dlerror,
        dladdr: libc::dladdr,
        dladdr1: libc::dladdr1,
        dlinfo: libc::dlinfo,
        dlmopen: libc::dlmopen,
        dl_iterate_phdr: libc::dl_iterate_phdr,
        dl_find_object: Some(_dl_find_object),
        from_libc_tables: false,
    }
}

/// One loaded object's dynamic symbol tables, read in place.
struct Tables {
    bias: usize,
    symtab: *const libc::Elf64_Sym,
    strtab: *const u8,
    gnu_hash: *const u32,
    versym: *const u16,
}

impl Tables {
    /// # Safety
    /// `dynamic` is the `PT_DYNAMIC` of an object loaded at `bias`.
    unsafe fn read(bias: usize, dynamic: *const Dyn) -> Option<Tables> {
        // glibc rewrites most objects' address entries to absolute addresses.
        let abs = |v: u64| {
            let v = v as usize;
            if v >= bias { v } else { bias + v }
        };
        let (mut symtab, mut strtab, mut gnu_hash, mut versym) = (0, 0, 0, 0);
        let mut d = dynamic;
        // SAFETY: the dynamic section ends with DT_NULL (caller's contract).
        unsafe {
            while (*d).d_tag != 0 {
                let v = (*d).d_un;
                match (*d).d_tag as u64 {
                    goblin::elf::dynamic::DT_SYMTAB => symtab = abs(v),
                    goblin::elf::dynamic::DT_STRTAB => strtab = abs(v),
                    goblin::elf::dynamic::DT_GNU_HASH => gnu_hash = abs(v),
                    goblin::elf::dynamic::DT_VERSYM => versym = abs(v),
                    _ => {}
                }
                d = d.add(1);
            }
        }
        (symtab != 0 && strtab != 0 && gnu_hash != 0).then_some(Tables {
            bias,
            symtab: symtab as *const _,
            strtab: strtab as *const _,
            gnu_hash: gnu_hash as *const _,
            versym: versym as *const _,
        })
    }

    /// The default (non-hidden) definition of `name`.
    ///
    /// # Safety
    /// The tables belong to a loaded, well-formed object.
    unsafe fn lookup(&self, name: &[u8]) -> Option<usize> {
        let hash = name.iter().fold(5381u32, |h, &c| {
            h.wrapping_mul(33).wrapping_add(u32::from(c))
        });
        // SAFETY: the GNU hash layout of the psABI: header, Bloom words,
        // buckets, then the chain; indices come from the table itself.
        unsafe {
            let h = self.gnu_hash;
            let (nbuckets, symoffset, bloom_words) = (*h, *h.add(1), *h.add(2));
            if nbuckets == 0 {
                return None;
            }
            let buckets = h.add(4 + 2 * bloom_words as usize);
            let chain = buckets.add(nbuckets as usize);
            let mut index = *buckets.add((hash % nbuckets) as usize);
            if index < symoffset {
                return None;
            }
            loop {
                let entry = *chain.add((index - symoffset) as usize);
                if entry | 1 == hash | 1 && self.matches(index, name) {
                    let sym = &*self.symtab.add(index as usize);
                    return Some(self.bias + sym.st_value as usize);
                }
                if entry & 1 != 0 {
                    return None;
                }
                index += 1;
            }
        }
    }

    /// # Safety
    /// As for `lookup`; `index` is a symbol index from the hash chain.
    unsafe fn matches(&self, index: u32, name: &[u8]) -> bool {
        // SAFETY: symbol and string offsets come from the object's tables.
        unsafe {
            let sym = &*self.symtab.add(index as usize);
            if sym.st_shndx == 0 || sym.st_value == 0 {
                return false;
            }
            if !self.versym.is_null() && *self.versym.add(index as usize) & 0x8000 != 0 {
                return false;
            }
            let s = std::ffi::CStr::from_ptr(self.strtab.add(sym.st_name as usize).cast());
            s.to_bytes() == name
        }
    }
}

/// `Elf64_Dyn`.
#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_un: u64,
}

/// The public head of glibc's `struct link_map` and `struct r_debug`.
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *const Dyn,
    l_next: *const LinkMap,
}

#[repr(C)]
struct RDebug {
    r_version: c_int,
    r_map: *const LinkMap,
}

/// # Safety
/// Reads the running ld.so's and libc's memory (see the module comment).
unsafe fn from_libc() -> Option<RealDl> {
    // SAFETY: getauxval has no preconditions.
    let ldso = unsafe { libc::getauxval(libc::AT_BASE) } as usize;
    if ldso == 0 {
        return None;
    }
    // SAFETY: AT_BASE is where the kernel mapped ld.so, ELF header first;
    // its program headers lie in its first segment.
    let ld_tables = unsafe {
        let ehdr = &*(ldso as *const libc::Elf64_Ehdr);
        let phdrs = std::slice::from_raw_parts(
            (ldso + ehdr.e_phoff as usize) as *const libc::Elf64_Phdr,
            usize::from(ehdr.e_phnum),
        );
        let dynamic = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
        Tables::read(ldso, (ldso + dynamic.p_vaddr as usize) as *const _)?
    };
    // SAFETY: `_r_debug` is ld.so's exported `struct r_debug`; its link map
    // chain holds every object of the base namespace, libc among them.
    let libc_tables = unsafe {
        let r_debug = ld_tables.lookup(b"_r_debug")? as *const RDebug;
        let mut map = (*r_debug).r_map;
        loop {
            if map.is_null() {
                return None;
            }
            let name = (*map).l_name;
            if !name.is_null()
                && std::ffi::CStr::from_ptr(name)
                    .to_bytes()
                    .ends_with(b"/libc.so.6")
            {
                break Tables::read((*map).l_addr, (*map).l_ld)?;
            }
            map = (*map).l_next;
        }
    };
    // SAFETY: each address is libc's definition of that function, whose
    // type is the one glibc's headers declare.
    unsafe {
        let f = |name: &[u8]| libc_tables.lookup(name);
        Some(RealDl {
            dlopen: std::mem::transmute::<usize, DlOpen>(f(b"dlopen")?),
            dlsym: std::mem::transmute::<usize, DlSym>(f(b"dlsym")?),
            dlvsym: std::mem::transmute::<usize, DlVSym>(f(b"dlvsym")?),
            dlclose: std::mem::transmute::<usize, DlClose>(f(b"dlclose")?),
            dlerror: std::mem::transmute::<usize, DlError>(f(b"dlerror")?),
            dladdr: std::mem::transmute::<usize, DlAddr>(f(b"dladdr")?),
            dladdr1: std::mem::transmute::<usize, DlAddr1>(f(b"dladdr1")?),
            dlinfo: std::mem::transmute::<usize, DlInfo>(f(b"dlinfo")?),
            dlmopen: std::mem::transmute::<usize, DlMOpen>(f(b"dlmopen")?),
            dl_iterate_phdr: std::mem::transmute::<usize, DlIteratePhdr>(f(b"dl_iterate_phdr")?),
            dl_find_object: f(b"_dl_find_object")
                .map(|a| std::mem::transmute::<usize, DlFindObject>(a)),
            from_libc_tables: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_functions_glibc_binds() {
        let r = real();
        assert!(r.from_libc_tables);
        // Not preloaded here: the link-time bindings are glibc's own.
        assert_eq!(r.dlopen as usize, libc::dlopen as *const () as usize);
        assert_eq!(r.dlsym as usize, libc::dlsym as *const () as usize);
        assert_eq!(
            r.dl_iterate_phdr as usize,
            libc::dl_iterate_phdr as *const () as usize
        );
        assert_eq!(r.dlerror as usize, libc::dlerror as *const () as usize);
        assert_eq!(
            r.dl_find_object.map(|f| f as usize),
            Some(_dl_find_object as *const () as usize)
        );
    }
}
