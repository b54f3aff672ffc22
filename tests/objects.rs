//! `mmld::objects`: mmld's objects described as `dladdr`, `dl_iterate_phdr`
//! and `_dl_find_object` describe them (what the C ABI drop-in reports).

mod common;

use std::ffi::CStr;

use common::testlib;

#[test]
fn objects_describe_a_loaded_library_by_address_and_in_the_walk() {
    let (adds, _) = mmld::objects::changes();
    let lib = unsafe { mmld::Library::open(testlib("libdemo.so")) }.expect("open libdemo");
    let add =
        *unsafe { lib.get::<extern "C" fn(i64, i64) -> i64>("add") }.expect("add") as usize as u64;
    assert!(mmld::objects::changes().0 > adds, "a load counts as an add");

    let (name, start, end, eh) =
        mmld::objects::containing(add, |o| (o.name.to_owned(), o.start, o.end, o.eh_frame_hdr))
            .expect("add is inside an mmld object");
    assert!(name.to_bytes().ends_with(b"/libdemo.so"), "{name:?}");
    assert!(start <= add && add < end);
    assert!(eh >= start && eh < end, "PT_GNU_EH_FRAME inside the span");
    assert_eq!(start, lib.base_address());

    let (sym, addr, entry) = mmld::objects::symbol_at(add + 1).expect("a symbol covers add+1");
    assert_eq!(unsafe { CStr::from_ptr(sym) }.to_bytes(), b"add");
    assert_eq!(addr, add);
    assert_ne!(entry, 0);

    let loads = mmld::objects::find_map(|o| {
        (o.name.to_bytes().ends_with(b"/libdemo.so"))
            .then(|| o.phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).count())
    })
    .expect("the walk sees libdemo.so");
    let plan_loads = lib.objects()[0].segments.len();
    assert_eq!(loads, plan_loads);

    // An address outside every mmld object.
    assert!(mmld::objects::containing(main_address(), |_| ()).is_none());
    drop(lib);
}

fn main_address() -> u64 {
    objects_describe_a_loaded_library_by_address_and_in_the_walk as *const () as usize as u64
}
