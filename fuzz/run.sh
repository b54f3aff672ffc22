#!/usr/bin/env bash
# Fuzz mmld::check_image for SECONDS (default 600), seeded with the test
# libraries and real system libraries. Usage, from the repository root:
#
#     fuzz/run.sh [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes nightly
# -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Crashing inputs land in fuzz/artifacts/check_image/; replay one with
#     RUSTC_BOOTSTRAP=1 cargo fuzz run check_image fuzz/artifacts/check_image/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"

# The test libraries (built by build.rs) must exist before seeding.
cargo build --release --quiet

corpus=fuzz/corpus/check_image
mkdir -p "$corpus"
# Seeds are copied, never committed: small real libraries of every flavour
# (GNU and SysV hash, RELR, versions, IFUNC, TLS) plus some system ones,
# among them a large one (libsqlite3, 1.4 MB: hence -max_len).
for f in testlibs/*.so \
    /usr/lib/x86_64-linux-gnu/libsqlite3.so.0 \
    /usr/lib/x86_64-linux-gnu/libz.so.1 \
    /usr/lib/x86_64-linux-gnu/libpng16.so.16 \
    /usr/lib/x86_64-linux-gnu/libssh2.so.1 \
    /usr/lib/x86_64-linux-gnu/libffi.so.8 \
    /usr/lib/x86_64-linux-gnu/libcrypt.so.1 \
    /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do
    [ -f "$f" ] && cp -L "$f" "$corpus/seed-$(basename "$f")"
done

# -max_len: the largest seed; -rss_limit_mb: catch runaway allocations;
# -timeout: catch hangs (one input must never take seconds).
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz check_image "$corpus" -- \
    -max_total_time="$seconds" -max_len=2097152 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1
