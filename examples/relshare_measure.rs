//! Measure shared relocations on one library: the time `open` takes and
//! the private dirty memory it adds (from `/proc/self/smaps_rollup`), in
//! this process. Run it twice with the same cache directory to see a cold
//! (writing) and a warm (mapping) load; without a directory the feature is
//! off.
//!
//! ```sh
//! cargo run --release --example relshare_measure -- libLLVM-15.so.1 /tmp/cache
//! cargo run --release --example relshare_measure -- libLLVM-15.so.1 /tmp/cache
//! cargo run --release --example relshare_measure -- libLLVM-15.so.1
//! ```

use std::time::Instant;

fn private_dirty_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let lib = args
        .next()
        .ok_or("usage: relshare_measure LIBRARY [CACHE_DIR]")?;
    let mut options = mmld::OpenOptions::new();
    if let Some(dir) = args.next() {
        options.share_relocations(dir);
    }
    let before = private_dirty_kib();
    let start = Instant::now();
    // SAFETY: loading runs the library's constructors; the caller chose it.
    let lib = unsafe { options.open(&lib) }?;
    let elapsed = start.elapsed();
    let after = private_dirty_kib();
    println!(
        "open: {:.2} ms, Private_Dirty +{} KiB",
        elapsed.as_secs_f64() * 1e3,
        after.saturating_sub(before)
    );
    let (mut from_cache, mut private) = (0, 0);
    for s in lib.relocation_sharing() {
        from_cache += s.pages_from_cache;
        private += s.pages_private;
        println!(
            "  {:?} {}",
            s.outcome,
            s.path.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    println!("pages from cache: {from_cache}, pages private: {private}");
    Ok(())
}
