//! TLS blocks are freed when their thread exits and when their module
//! unloads. A test binary of its own, so no other test's threads disturb
//! the global block count.

use std::path::Path;

use mmld::Library;
use mmld::runtime::tls::live_blocks;

#[test]
fn blocks_are_freed_at_thread_exit_and_at_unload() {
    let lib =
        unsafe { Library::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("testlibs/libtls.so")) }
            .unwrap();
    let bump = *unsafe { lib.get::<extern "C" fn(i64) -> i64>("tls_bump") }.unwrap();
    let baseline = live_blocks();
    for round in 0..300 {
        let t = std::thread::spawn(move || bump(round));
        assert_eq!(
            t.join().unwrap(),
            100 + round,
            "each new thread starts from the image"
        );
    }
    assert_eq!(
        live_blocks(),
        baseline,
        "blocks of exited threads must be freed"
    );

    // The main thread allocates one block; unloading frees it.
    assert_eq!(bump(1), 101);
    assert_eq!(live_blocks(), baseline + 1);
    drop(lib);
    assert_eq!(
        live_blocks(),
        baseline,
        "unloading must free every thread's block"
    );
}
