//! The child side of `relshare_libs.rs`: a library loaded by glibc or by
//! mmld, and one probe per library that calls real functions of it (and of
//! its dependencies) and turns what they return into a string to compare.
//! Every prototype is the library's documented C API.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// The child: load, probe, report
// ---------------------------------------------------------------------------

/// A loaded library, by either loader, that can resolve names.
pub enum Loaded {
    Glibc(*mut c_void),
    Mmld(mmld::Library),
}

impl Loaded {
    pub fn addr(&self, name: &str) -> usize {
        let a = match self {
            Loaded::Glibc(h) => {
                let c = CString::new(name).unwrap();
                // SAFETY: a live handle from dlopen and a C string.
                unsafe { libc::dlsym(*h, c.as_ptr()) as usize }
            }
            Loaded::Mmld(lib) => lib.symbol_info(name).map_or(0, |i| i.address as usize),
        };
        assert_ne!(a, 0, "{name} not found");
        a
    }

    /// The function `name` as `F` (a function pointer type).
    pub fn f<F: Copy>(&self, name: &str) -> F {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
        let a = self.addr(name);
        // SAFETY: F is a function pointer type the caller names after the
        // C prototype of `name`.
        unsafe { std::mem::transmute_copy(&a) }
    }
}

fn c_str(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the libraries return NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

extern "C" fn sqlite_row(
    out: *mut c_void,
    n: c_int,
    values: *mut *mut c_char,
    _names: *mut *mut c_char,
) -> c_int {
    // SAFETY: `out` is the Vec passed to sqlite3_exec; `values` has `n` entries.
    let out = unsafe { &mut *(out as *mut Vec<String>) };
    for i in 0..n as usize {
        let v = unsafe { *values.add(i) };
        out.push(if v.is_null() { "NULL".into() } else { c_str(v) });
    }
    0
}

type Sqlite3Open = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
type Sqlite3Exec = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    extern "C" fn(*mut c_void, c_int, *mut *mut c_char, *mut *mut c_char) -> c_int,
    *mut c_void,
    *mut *mut c_char,
) -> c_int;
type PtrToPtr = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type Nothing = unsafe extern "C" fn() -> *mut c_void;

pub fn probe_sqlite(l: &Loaded) -> String {
    let open: Sqlite3Open = l.f("sqlite3_open");
    let exec: Sqlite3Exec = l.f("sqlite3_exec");
    let close: PtrToPtr = l.f("sqlite3_close");
    let version: Nothing = l.f("sqlite3_libversion");
    let sql = CString::new(
        "create table t(a integer, b text); insert into t values (1, 'x'), (2, 'yy'), (40, 'zzz');\
         select sum(a), group_concat(b, '|'), sqlite_version(), printf('%08.3f', 3.14159),\
         upper('abc'), json_object('k', 5), hex(zeroblob(3)) from t;",
    )
    .unwrap();
    let mut rows: Vec<String> = Vec::new();
    // SAFETY: sqlite3's documented prototypes; the callback's argument is `rows`.
    unsafe {
        let mut db = std::ptr::null_mut();
        assert_eq!(open(c":memory:".as_ptr(), &mut db), 0);
        let rc = exec(
            db,
            sql.as_ptr(),
            sqlite_row,
            &mut rows as *mut Vec<String> as *mut c_void,
            std::ptr::null_mut(),
        );
        assert_eq!(rc, 0, "sqlite3_exec");
        close(db);
        rows.push(c_str(version() as *const c_char));
    }
    rows.join(" / ")
}

pub fn probe_xml2(l: &Loaded) -> String {
    type Read = unsafe extern "C" fn(
        *const c_char,
        c_int,
        *const c_char,
        *const c_char,
        c_int,
    ) -> *mut c_void;
    type Dump = unsafe extern "C" fn(*mut c_void, *mut *mut u8, *mut c_int);
    let read: Read = l.f("xmlReadMemory");
    let dump: Dump = l.f("xmlDocDumpMemory");
    let free_doc: PtrToPtr = l.f("xmlFreeDoc");
    let doc_text: &[u8] = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<r a=\"\xe9t\xe9\"><c>caf\xe9 &amp; cr\xe8me</c><d/></r>\n";
    // SAFETY: libxml2's documented prototypes; `xmlParserVersion` and
    // `xmlFree` are data symbols (a string, a function pointer).
    unsafe {
        let parser_version = c_str(*(l.addr("xmlParserVersion") as *const *const c_char));
        let free: unsafe extern "C" fn(*mut c_void) = *(l.addr("xmlFree") as *const _);
        let doc = read(
            doc_text.as_ptr() as *const c_char,
            doc_text.len() as c_int,
            c"in.xml".as_ptr(),
            std::ptr::null(),
            0,
        );
        assert!(!doc.is_null(), "xmlReadMemory failed");
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut len: c_int = 0;
        dump(doc, &mut out, &mut len);
        let bytes = std::slice::from_raw_parts(out, len as usize)
            .escape_ascii()
            .to_string();
        free(out as *mut c_void);
        free_doc(doc);
        format!("{parser_version} / {bytes}")
    }
}

pub fn probe_curl(l: &Loaded) -> String {
    type Escape = unsafe extern "C" fn(*mut c_void, *const c_char, c_int) -> *mut c_char;
    let version: Nothing = l.f("curl_version");
    let escape: Escape = l.f("curl_easy_escape");
    let free: PtrToPtr = l.f("curl_free");
    // SAFETY: libcurl's documented prototypes.
    unsafe {
        let v = c_str(version() as *const c_char);
        let e = escape(std::ptr::null_mut(), c"a b&c/\xc3\xa9?".as_ptr(), 0);
        let escaped = c_str(e);
        free(e as *mut c_void);
        format!("{v} / {escaped}")
    }
}

pub fn probe_stdcxx(l: &Loaded) -> String {
    type Demangle =
        unsafe extern "C" fn(*const c_char, *mut c_char, *mut usize, *mut c_int) -> *mut c_char;
    let demangle: Demangle = l.f("__cxa_demangle");
    let names = [
        "_ZNSt6vectorIiSaIiEE9push_backERKi",
        "_ZNKSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEE4findEPKcmm",
        "_ZZN4llvm2cl3optIbLb0ENS0_6parserIbEEEC1IJA20_cNS0_4descENS0_11initializerIbEENS0_12OptionHiddenEEEEDpRKT_EN3$_0clEv",
    ];
    names
        .iter()
        .map(|n| {
            let c = CString::new(*n).unwrap();
            let mut status: c_int = 0;
            // SAFETY: the Itanium ABI's prototype; the result is malloc'd.
            unsafe {
                let p = demangle(
                    c.as_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut status,
                );
                if p.is_null() {
                    return format!("status {status}");
                }
                let s = c_str(p);
                libc::free(p as *mut c_void);
                s
            }
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

pub fn probe_llvm(l: &Loaded) -> String {
    type ModuleIn = unsafe extern "C" fn(*const c_char, *mut c_void) -> *mut c_void;
    type FnType = unsafe extern "C" fn(*mut c_void, *mut *mut c_void, u32, c_int) -> *mut c_void;
    type AddFn = unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void) -> *mut c_void;
    type Append = unsafe extern "C" fn(*mut c_void, *mut c_void, *const c_char) -> *mut c_void;
    // LLVMPositionBuilderAtEnd; also LLVMBuildRet, whose result is unused.
    type Position = unsafe extern "C" fn(*mut c_void, *mut c_void);
    type Param = unsafe extern "C" fn(*mut c_void, u32) -> *mut c_void;
    type Add =
        unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void, *const c_char) -> *mut c_void;
    type Message = unsafe extern "C" fn(*const c_char) -> *mut c_char;
    type Dispose = unsafe extern "C" fn(*mut c_void);
    // SAFETY: the LLVM-C API's documented prototypes; every object is
    // disposed of before returning.
    unsafe {
        let ctx = l.f::<Nothing>("LLVMContextCreate")();
        let module =
            l.f::<ModuleIn>("LLVMModuleCreateWithNameInContext")(c"relshare".as_ptr(), ctx);
        let i32t = l.f::<PtrToPtr>("LLVMInt32TypeInContext")(ctx);
        let mut params = [i32t, i32t];
        let fnty = l.f::<FnType>("LLVMFunctionType")(i32t, params.as_mut_ptr(), 2, 0);
        let func = l.f::<AddFn>("LLVMAddFunction")(module, c"add".as_ptr(), fnty);
        let bb = l.f::<Append>("LLVMAppendBasicBlockInContext")(ctx, func, c"entry".as_ptr());
        let builder = l.f::<PtrToPtr>("LLVMCreateBuilderInContext")(ctx);
        l.f::<Position>("LLVMPositionBuilderAtEnd")(builder, bb);
        let param = l.f::<Param>("LLVMGetParam");
        let sum =
            l.f::<Add>("LLVMBuildAdd")(builder, param(func, 0), param(func, 1), c"s".as_ptr());
        l.f::<Position>("LLVMBuildRet")(builder, sum);
        let text = l.f::<PtrToPtr>("LLVMPrintModuleToString")(module) as *mut c_char;
        let printed = c_str(text);
        let dispose_message = l.f::<Dispose>("LLVMDisposeMessage");
        dispose_message(text as *mut c_void);
        let m = l.f::<Message>("LLVMCreateMessage")(c"round trip".as_ptr());
        let message = c_str(m);
        dispose_message(m as *mut c_void);
        l.f::<Dispose>("LLVMDisposeBuilder")(builder);
        l.f::<Dispose>("LLVMDisposeModule")(module);
        l.f::<Dispose>("LLVMContextDispose")(ctx);
        format!("{printed} / {message}")
    }
}

pub fn sharing_json(lib: &mmld::Library) -> Value {
    Value::Array(
        lib.relocation_sharing()
            .iter()
            .map(|s| {
                let (outcome, reason) = match &s.outcome {
                    mmld::SharingOutcome::Off => ("off", None),
                    mmld::SharingOutcome::Hit => ("hit", None),
                    mmld::SharingOutcome::Written => ("written", None),
                    mmld::SharingOutcome::Fallback(r) => ("fallback", Some(r.clone())),
                    _ => ("other", None),
                };
                json!({
                    "path": s.path.to_string_lossy(),
                    "outcome": outcome,
                    "reason": reason,
                    "pages_from_cache": s.pages_from_cache,
                    "pages_private": s.pages_private,
                    "cache_file": s.cache_file.as_ref().map(|p| p.to_string_lossy().into_owned()),
                })
            })
            .collect(),
    )
}
