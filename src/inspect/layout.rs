//! Where an object lies in a process and what each of its pages is for.
//!
//! Owns: [`ObjectLayout`] (an object's span, load bias, `PT_LOAD`s and sealed
//! RELRO range, in process addresses) and the painting of that span into
//! [`Role`] ranges; finding the ELF objects in another process's maps.
//! Must never: look at page contents; roles come from program headers and
//! addresses alone.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::elf::{ElfFacts, LoadSegment};
use super::proc::Vma;
use super::{Error, Pid, Result, page_down, page_up};

/// What part of an object a page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// An executable segment.
    Text,
    /// A read-only, non-executable segment (headers, symbol tables,
    /// `.rodata`, `.eh_frame`).
    Rodata,
    /// Writable pages made read-only after relocation (`PT_GNU_RELRO`:
    /// `.init_array`, `.data.rel.ro`, `.dynamic`, `.got`).
    Relro,
    /// Writable pages backed by the file (`.data`, and the start of `.bss`
    /// when it shares the last file page).
    Data,
    /// Writable pages past the end of the file's bytes: anonymous, zero-filled.
    Bss,
    /// Address space between segments, inaccessible.
    Gap,
}

impl Role {
    /// The short name used in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Role::Text => "text",
            Role::Rodata => "rodata",
            Role::Relro => "RELRO",
            Role::Data => "data",
            Role::Bss => ".bss",
            Role::Gap => "gap",
        }
    }

    /// The role named by `label` (its inverse), if any.
    pub fn from_label(s: &str) -> Option<Role> {
        [
            Role::Text,
            Role::Rodata,
            Role::Relro,
            Role::Data,
            Role::Bss,
            Role::Gap,
        ]
        .into_iter()
        .find(|r| r.label() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A page-aligned range of process addresses with one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRange {
    /// First process address.
    pub start: u64,
    /// End process address (exclusive).
    pub end: u64,
    /// What this part of the object is.
    pub role: Role,
}

/// Who mapped an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappedBy {
    /// mmld.
    Mmld {
        /// Whether the segments were copied into anonymous memory (the
        /// read strategy) rather than mapped from the file.
        copied: bool,
    },
    /// Anyone else (glibc's `ld.so`, the kernel for the executable), as
    /// found in a process's maps.
    Other,
}

/// An object as it lies in one process.
///
/// With the `serde` feature it is `Serialize` and `Deserialize`, as the
/// compact form `mmld share`'s workers send: segments as
/// `[vaddr, memsz, filesz, offset, flags]`, `relro` as `[start, end]`, and
/// `copied` for who mapped it (a deserialized layout is mmld's).
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "LayoutJson", try_from = "LayoutJson")
)]
pub struct ObjectLayout {
    /// Soname or file name.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The object's span in process addresses, page-aligned.
    pub start: u64,
    /// End of the span (exclusive).
    pub end: u64,
    /// Process address minus file virtual address.
    pub bias: u64,
    /// The `PT_LOAD` segments, file addresses.
    pub loads: Vec<LoadSegment>,
    /// The sealed (read-only after relocation) page range, process addresses.
    pub relro: Option<(u64, u64)>,
    /// Who mapped it.
    pub mapped_by: MappedBy,
}

impl ObjectLayout {
    /// The layout of an object mmld mapped in this process.
    pub fn from_view(v: &crate::ObjectView, copied: bool) -> ObjectLayout {
        ObjectLayout {
            name: v.name.clone(),
            path: v.path.clone(),
            start: v.base,
            end: v.base.saturating_add(v.size),
            bias: v.bias,
            loads: v
                .segments
                .iter()
                .map(|s| LoadSegment {
                    vaddr: s.vaddr,
                    memsz: s.memsz,
                    filesz: s.filesz,
                    offset: s.offset,
                    flags: s.flags,
                })
                .collect(),
            relro: v.relro,
            mapped_by: MappedBy::Mmld { copied },
        }
    }

    /// The layout of every object `lib` mapped (itself and its mmld-mapped
    /// dependencies).
    pub fn of_library(lib: &crate::Library, copied: bool) -> Vec<ObjectLayout> {
        lib.objects()
            .iter()
            .map(|v| ObjectLayout::from_view(v, copied))
            .collect()
    }

    /// Page-aligned ranges covering the whole span, each with its role.
    /// Segments are painted in program-header order (a later `MAP_FIXED`
    /// mapping replaces an earlier one on a shared page, as in the kernel),
    /// then the sealed RELRO range over writable pages; what is left is gap.
    pub fn roles(&self) -> Vec<RoleRange> {
        let mut ranges = vec![RoleRange {
            start: self.start,
            end: self.end,
            role: Role::Gap,
        }];
        for seg in &self.loads {
            if seg.memsz == 0 {
                continue;
            }
            let vstart = self.bias.wrapping_add(seg.vaddr);
            let start = page_down(vstart);
            let end = page_up(vstart.saturating_add(seg.memsz));
            if seg.executable() {
                paint(&mut ranges, start, end, Role::Text, |_| true);
            } else if !seg.writable() {
                paint(&mut ranges, start, end, Role::Rodata, |_| true);
            } else {
                let file_end = if seg.filesz > 0 {
                    page_up(vstart.saturating_add(seg.filesz)).min(end)
                } else {
                    start
                };
                paint(&mut ranges, start, file_end, Role::Data, |_| true);
                paint(&mut ranges, file_end, end, Role::Bss, |_| true);
            }
        }
        if let Some((s, e)) = self.relro {
            paint(&mut ranges, s, e, Role::Relro, |r| {
                matches!(r, Role::Data | Role::Bss)
            });
        }
        ranges
    }

    /// The span's role at process address `addr`.
    pub fn role_at(&self, addr: u64) -> Option<Role> {
        self.roles()
            .into_iter()
            .find(|r| r.start <= addr && addr < r.end)
            .map(|r| r.role)
    }
}

/// The JSON form of an [`ObjectLayout`], for the worker protocol of `mmld
/// share`: compact arrays for the segments, and only what a layout holds
/// (`copied` stands for [`MappedBy`]: a layout a worker sends is mmld's).
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct LayoutJson {
    name: String,
    path: String,
    start: u64,
    end: u64,
    bias: u64,
    relro: Option<[u64; 2]>,
    #[serde(default)]
    copied: bool,
    /// `[vaddr, memsz, filesz, offset, flags]` per `PT_LOAD`.
    loads: Vec<[u64; 5]>,
}

#[cfg(feature = "serde")]
impl From<ObjectLayout> for LayoutJson {
    fn from(l: ObjectLayout) -> LayoutJson {
        LayoutJson {
            path: l.path.to_string_lossy().into_owned(),
            name: l.name,
            start: l.start,
            end: l.end,
            bias: l.bias,
            relro: l.relro.map(|(s, e)| [s, e]),
            copied: matches!(l.mapped_by, MappedBy::Mmld { copied: true }),
            loads: l
                .loads
                .iter()
                .map(|s| [s.vaddr, s.memsz, s.filesz, s.offset, u64::from(s.flags)])
                .collect(),
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<LayoutJson> for ObjectLayout {
    type Error = Error;

    fn try_from(j: LayoutJson) -> Result<ObjectLayout> {
        let bad = |what: &str| Error::Layout(format!("object description: {what}"));
        if j.end < j.start {
            return Err(bad("span ends before it starts"));
        }
        let loads = j
            .loads
            .into_iter()
            .map(|[vaddr, memsz, filesz, offset, flags]| {
                Ok(LoadSegment {
                    vaddr,
                    memsz,
                    filesz,
                    offset,
                    flags: u32::try_from(flags).map_err(|_| bad("loads"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ObjectLayout {
            name: j.name,
            path: PathBuf::from(j.path),
            start: j.start,
            end: j.end,
            bias: j.bias,
            loads,
            relro: j.relro.map(|[s, e]| (s, e)),
            mapped_by: MappedBy::Mmld { copied: j.copied },
        })
    }
}

/// Paint `role` over `start..end` where `allowed(old role)` says so.
fn paint(
    ranges: &mut Vec<RoleRange>,
    start: u64,
    end: u64,
    role: Role,
    allowed: impl Fn(Role) -> bool,
) {
    if end <= start {
        return;
    }
    let mut out = Vec::with_capacity(ranges.len() + 2);
    for r in ranges.iter() {
        let (is, ie) = (r.start.max(start), r.end.min(end));
        if is >= ie || !allowed(r.role) {
            out.push(*r);
            continue;
        }
        if r.start < is {
            out.push(RoleRange { end: is, ..*r });
        }
        out.push(RoleRange {
            start: is,
            end: ie,
            role,
        });
        if ie < r.end {
            out.push(RoleRange { start: ie, ..*r });
        }
    }
    // Join neighbours with the same role.
    let mut joined: Vec<RoleRange> = Vec::with_capacity(out.len());
    for r in out {
        match joined.last_mut() {
            Some(last) if last.role == r.role && last.end == r.start => last.end = r.end,
            _ => joined.push(r),
        }
    }
    *ranges = joined;
}

/// An ELF object found in another process's maps, with its facts.
#[derive(Debug, Clone)]
pub struct FoundObject {
    /// Where it lies.
    pub layout: ObjectLayout,
    /// What its file says.
    pub facts: ElfFacts,
    /// Set when the file could not be opened as the one mapped.
    pub warning: Option<String>,
}

/// Find the ELF files mapped in `pid` and lay each one out.
///
/// The file behind a mapping is opened through `/proc/PID/map_files/`
/// (the very file mapped, even if it was replaced or deleted since; needs
/// privilege), else by its path. The load bias comes from the object's
/// lowest mapping, which maps its first `PT_LOAD` (as every loader does);
/// the span then runs from the first to the end of the last `PT_LOAD`, so
/// anonymous `.bss` and gap mappings inside it belong to it too.
pub fn objects_in_process(pid: Pid, vmas: &[Vma]) -> Result<(Vec<FoundObject>, Vec<String>)> {
    let mut objects: Vec<FoundObject> = Vec::new();
    let mut skipped = Vec::new();
    type Cached = Option<(ElfFacts, Option<String>)>;
    let mut facts_cache: HashMap<(u64, u64, PathBuf), Cached> = HashMap::new();
    for vma in vmas {
        let Some(path) = vma.path.as_ref() else {
            continue;
        };
        if objects
            .iter()
            .any(|o| o.layout.start <= vma.start && vma.start < o.layout.end)
        {
            continue;
        }
        let key = (vma.dev_id(), vma.inode, path.clone());
        let entry =
            facts_cache
                .entry(key)
                .or_insert_with(|| match open_mapped_file(pid, vma, path) {
                    // Not every mapped file is ELF (locale archives, caches):
                    // those are simply not objects.
                    Ok((file, warning)) => ElfFacts::read(&file, path)
                        .ok()
                        .filter(|f| !f.loads.is_empty())
                        .map(|f| (f, warning)),
                    Err(e) => {
                        skipped.push(e.to_string());
                        None
                    }
                });
        let Some((facts, warning)) = entry.clone() else {
            continue;
        };
        let Some(first) = facts
            .loads
            .iter()
            .find(|l| page_down(l.offset) == vma.offset)
        else {
            continue;
        };
        let bias = vma.start.wrapping_sub(page_down(first.vaddr));
        let min = facts
            .loads
            .iter()
            .map(|l| page_down(l.vaddr))
            .min()
            .unwrap_or(0);
        let max = facts
            .loads
            .iter()
            .map(|l| page_up(l.vaddr.saturating_add(l.memsz)))
            .max()
            .unwrap_or(0);
        let relro = facts.relro.and_then(|(v, m)| {
            let s = page_down(bias.wrapping_add(v));
            let e = page_down(bias.wrapping_add(v).saturating_add(m));
            (e > s).then_some((s, e))
        });
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        objects.push(FoundObject {
            layout: ObjectLayout {
                name,
                path: path.clone(),
                start: bias.wrapping_add(min),
                end: bias.wrapping_add(max),
                bias,
                loads: facts.loads.clone(),
                relro,
                mapped_by: MappedBy::Other,
            },
            facts,
            warning,
        });
    }
    Ok((objects, skipped))
}

/// Open the file a mapping maps. Returns a warning when only the path could
/// be used and it is not the same inode as the mapping's.
pub(crate) fn open_mapped_file(pid: Pid, vma: &Vma, path: &Path) -> Result<(File, Option<String>)> {
    let via_map_files = format!(
        "/proc/{}/map_files/{:x}-{:x}",
        pid.label(),
        vma.start,
        vma.end
    );
    if let Ok(f) = File::open(&via_map_files) {
        return Ok((f, None));
    }
    let f = File::open(path).map_err(|error| Error::Io {
        path: path.to_path_buf(),
        what: "opening the mapped file",
        error,
    })?;
    use std::os::unix::fs::MetadataExt;
    let warning = match f.metadata() {
        Ok(m) if m.ino() != vma.inode => Some(format!(
            "{} is inode {} on disk but the mapping is of inode {} (file replaced since it was mapped?)",
            path.display(),
            m.ino(),
            vma.inode
        )),
        _ => None,
    };
    Ok((f, warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libdemo_like() -> ObjectLayout {
        // The layout of testlibs/libdemo.so at bias 0x10000.
        let bias = 0x10000;
        ObjectLayout {
            name: "libdemo.so".into(),
            path: "libdemo.so".into(),
            start: bias,
            end: bias + 0x106000,
            bias,
            loads: vec![
                LoadSegment {
                    vaddr: 0,
                    memsz: 0xab0,
                    filesz: 0xab0,
                    offset: 0,
                    flags: 4,
                },
                LoadSegment {
                    vaddr: 0x1000,
                    memsz: 0x769,
                    filesz: 0x769,
                    offset: 0x1000,
                    flags: 5,
                },
                LoadSegment {
                    vaddr: 0x2000,
                    memsz: 0x4bc,
                    filesz: 0x4bc,
                    offset: 0x2000,
                    flags: 4,
                },
                LoadSegment {
                    vaddr: 0x3d10,
                    memsz: 0x101478,
                    filesz: 0x308,
                    offset: 0x2d10,
                    flags: 6,
                },
            ],
            relro: Some((bias + 0x3000, bias + 0x4000)),
            mapped_by: MappedBy::Mmld { copied: false },
        }
    }

    #[test]
    fn libdemo_paints_into_six_roles() {
        let l = libdemo_like();
        let got: Vec<(u64, u64, Role)> = l
            .roles()
            .iter()
            .map(|r| (r.start - l.bias, r.end - l.bias, r.role))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0x1000, Role::Rodata),
                (0x1000, 0x2000, Role::Text),
                (0x2000, 0x3000, Role::Rodata),
                (0x3000, 0x4000, Role::Relro),
                (0x4000, 0x5000, Role::Data),
                (0x5000, 0x106000, Role::Bss),
            ]
        );
    }

    #[test]
    fn holes_between_segments_are_gaps() {
        let mut l = libdemo_like();
        l.loads[1].vaddr = 0x200000;
        l.loads[1].offset = 0x1000;
        l.end = l.bias + 0x201000;
        l.loads.truncate(2);
        l.relro = None;
        let roles: Vec<Role> = l.roles().iter().map(|r| r.role).collect();
        assert_eq!(roles, vec![Role::Rodata, Role::Gap, Role::Text]);
    }

    #[test]
    #[cfg(feature = "cli")]
    fn json_round_trip_and_bad_input() {
        let l = libdemo_like();
        let text = serde_json::to_string(&l).unwrap();
        let back: ObjectLayout = serde_json::from_str(&text).unwrap();
        assert_eq!(back.roles(), l.roles());
        assert_eq!(back.path, l.path);
        let bad = |t: &str| serde_json::from_str::<ObjectLayout>(t).is_err();
        assert!(bad(r#"{"name": "x"}"#));
        assert!(bad("null"));
        let backwards = text.replacen(&format!("\"end\":{}", l.end), "\"end\":0", 1);
        assert_ne!(backwards, text);
        assert!(bad(&backwards));
        let wide_flags = text.replacen("[0,2736,2736,0,4]", "[0,2736,2736,0,4294967296]", 1);
        assert_ne!(wide_flags, text);
        assert!(bad(&wide_flags));
    }
}
