#!/usr/bin/env bash
# profile.sh - where mmld's load time goes: instructions per phase
# (callgrind), page faults and syscalls inside the timed region, mmld next
# to glibc (and dlopen-rs), for one fresh-process first load of each library
# named and for the libz load + get + unload cycle.
#
# Usage: benches/profile.sh [LIB ...]        (default: libz.so.1 libsqlite3.so.0)
#
# Needs valgrind (callgrind_annotate), perf (perf trace) and strace; runs
# `cargo bench --bench report -- --callgrind LIB...` first, which builds
# the workers and leaves the callgrind files in target/mmld-bench/callgrind/
# (each counts only the worker's timed region, `mmld_bench_region`). The
# phase table sums callgrind's inclusive counts of the mmld functions that
# make up each phase (the function names are the source's; a rename shows
# up here as a phase with 0 instructions). Output: markdown on stdout,
# also saved to target/mmld-bench/profile.md.
set -euo pipefail
cd "$(dirname "$0")/.."

LIBS=("$@")
[ ${#LIBS[@]} -gt 0 ] || LIBS=(libz.so.1 libsqlite3.so.0)
LIBDIR=/usr/lib/x86_64-linux-gnu
OUT=target/mmld-bench
CG=$OUT/callgrind

for tool in valgrind callgrind_annotate perf strace readelf; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is not installed" >&2; exit 1; }
done

cargo bench --bench report -- --callgrind "${LIBS[@]}" >/dev/null
WORKER=$(ls -t target/release/deps/report-* | grep -v '\.d$' | head -1)
RUNNER=target/peers/release/dlopen_rs_runner

# Inclusive instruction count of one function (exact name) in a callgrind file.
incl() { # file function
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk -v f="$2" '{ line=$0; sub(/ \[.*$/, "", line) }
      !found && index(line, ":" f) && substr(line, length(line) - length(f) + 1) == f {
        gsub(",", "", $1); v = $1; found = 1 }
      END { print found ? v : 0 }'
}
# Callees of a function, with call counts (callgrind's "calling" tree).
calls() { # file caller callee -> number of calls
  callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$1" 2>/dev/null |
    awk -v f="$2" -v c="$3" '
      /\*/ { inside = index($0, ":" f " [") > 0; next }
      !found && inside && index($0, ":" c " (") { match($0, /\(([0-9,]+)x\)/); v = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", v); found = 1 }
      END { print found ? v : 0 }'
}
total() { [ -e "$1" ] && awk '/^(totals|summary):/ && !done { print $2; done = 1 }' "$1" || echo 0; }
relocs() { readelf -rW "$1" | awk '/R_X86_64_/ { n++ } END { print n + 0 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else print "—" }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "—" }'; }

phases() { # callgrind file, relocation count, divisor (cycles)
  local f=$1 n=$2 d=$3
  local all parse mapobj map ownsym host filter hostlib reloc bind init close nbind rest
  all=$(total "$f")
  parse=$(incl "$f" "mmld::elf::ElfFile::open")
  mapobj=$(incl "$f" "mmld::loader::Batch::map_object")
  map=$(incl "$f" "mmld::map::Mapping::map")
  ownsym=$(incl "$f" "mmld::link::symbols::SymbolTable::new")
  host=$(incl "$f" "mmld::link::hostscope::host_scope")
  filter=$(incl "$f" "mmld::link::hostscope::ScopeFilter::build")
  hostlib=$(incl "$f" "mmld::loader::Batch::resolve_all")
  reloc=$(incl "$f" "mmld::link::relocate")
  bind=$(incl "$f" "mmld::link::resolve_in_scope")
  init=$(( $(incl "$f" "mmld::runtime::unwind::FrameRegistration::register") + $(incl "$f" "mmld::runtime::initializers") + $(incl "$f" "mmld::runtime::finalizers") + $(incl "$f" "mmld::runtime::debugger::add") + $(incl "$f" "mmld::loader::initfini_of") ))
  close=$(incl "$f" "core::ptr::drop_in_place<mmld::library::Library>")
  nbind=$(calls "$f" "mmld::link::relocate" "mmld::link::resolve_in_scope")
  rest=$(( all - parse - mapobj - host - filter - hostlib - reloc - init - close ))
  echo "| phase | instructions | share of the region | per load |"
  echo "|---|---:|---:|---:|"
  row() { echo "| $1 | $2 | $(pct "$2" "$all") | $(per "$2" "$d") |"; }
  row "whole timed region" "$all"
  row "parse (\`ElfFile::open\`: read, headers, dynamic section)" "$parse"
  row "map (\`Mapping::map\`)" "$map"
  row "own symbol table, names, paths (\`map_object\` minus \`Mapping::map\`; \`SymbolTable::new\`, host objects' included, counts ${ownsym})" "$(( mapobj - map ))"
  row "host tables (\`host_scope\`: host objects' symbol tables, versions, probes; \`ScopeFilter::build\` ${filter})" "$(( host + filter ))"
  row "dependencies (\`resolve_all\`: host libraries by name)" "$hostlib"
  row "bind / lookup (\`resolve_in_scope\`, ${nbind} calls)" "$bind"
  row "relocation loop without lookups (\`relocate\` minus \`resolve_in_scope\`; $n relocations per load)" "$(( reloc - bind ))"
  row "init (frame registration, constructors, init/fini order, debugger list)" "$init"
  [ "$close" -gt 0 ] && row "unload (drop of \`Library\`)" "$close"
  row "everything else (registry, publish, scope, RELRO, the worker's get)" "$rest"
  echo
  echo "Per relocation: relocation loop $(per $(( reloc - bind )) $(( n * d ))) instructions, with lookups $(per "$reloc" $(( n * d ))); per binding (\`resolve_in_scope\`): $(per "$bind" "$nbind")."
  echo
}

# Page faults inside the region (perf trace, between the worker's markers),
# by what was touched.
faults() { # label program args...
  local label=$1; shift
  local t; t=$(mktemp)
  perf trace -F min -e write -o "$t" -- env -u LD_LIBRARY_PATH "$@" >/dev/null 2>&1 || true
  awk -v who="$label" -v lib="$LIB" '
    /write\(fd: -1/ { n++; next }
    n == 1 && /minfault/ {
      d = $0; sub(/.*=> /, "", d); sub(/ \(.*$/, "", d)
      if (d ~ /\[stack\]/) k = "stack"
      else if (d ~ /\[heap\]|anon/) k = "heap/anonymous"
      else if (index(d, lib)) k = "the library"
      else if (d ~ /\/deps\/|dlopen_rs_runner/) k = "loader code/data (own binary)"
      else if (d ~ /libc\.so|ld-linux|libgcc_s/) k = "libc / ld.so / libgcc_s"
      else if (d ~ /\.so/) k = "dependencies"
      else k = "other"
      c[k]++; tot++
    }
    END {
      s = ""; for (k in c) s = s k " " c[k] ", "
      sub(/, $/, "", s)
      printf "| %s | %d | %s |\n", who, tot, s
    }' "$t"
  rm -f "$t"
}

# Whole-process page faults (perf stat), median of 5 runs.
pstat() { # program args...
  for _ in 1 2 3 4 5; do
    perf stat -x, -e page-faults -- env -u LD_LIBRARY_PATH "$@" 2>&1 >/dev/null | awk -F, '/page-faults/ { print $1 }'
  done | sort -n | sed -n 3p
}

syscalls() { # label program args...
  local label=$1; shift
  local t; t=$(mktemp)
  strace -f -o "$t" -- env -u LD_LIBRARY_PATH "$@" >/dev/null 2>&1 || true
  awk -v who="$label" '
    /MMLD_BENCH_BEGIN/ { n = 1; next } /MMLD_BENCH_END/ { n = 2 }
    n == 1 { l = $0; sub(/^[0-9]+ +/, "", l); if (l ~ /^(<\.\.\.|\+\+\+|---)/) next
             split(l, a, "("); c[a[1]]++; tot++ }
    END { s = ""; for (k in c) s = s k " " c[k] ", "; sub(/, $/, "", s); printf "| %s | %d | %s |\n", who, tot, s }' "$t"
  rm -f "$t"
}

{
  echo "Machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "Command: \`benches/profile.sh ${LIBS[*]}\`"
  echo
  for LIB in "${LIBS[@]}"; do
    path=$LIBDIR/$LIB
    [ -e "$path" ] || { echo "($LIB not installed)"; continue; }
    n=$(relocs "$path")
    sym=$(awk -v l="\"$LIB\"," '$0 ~ l { gsub(/[(),"]/, " "); print $2 }' benches/common/mod.rs | head -1)
    echo "#### First load of $LIB ($n relocations)"
    echo
    echo "Instructions (callgrind, timed region only): mmld $(total "$CG/first-$LIB-mmld.out"), glibc $(total "$CG/first-$LIB-glibc.out"), dlopen-rs $(total "$CG/first-$LIB-dlopen-rs.out")."
    echo
    phases "$CG/first-$LIB-mmld.out" "$n" 1
    echo "Page faults in the region (\`perf trace -F min\`):"
    echo
    echo "| loader | faults | touched |"
    echo "|---|---:|---|"
    faults mmld "$WORKER" --worker mmld first "$path" "$sym"
    faults glibc "$WORKER" --worker glibc first "$path" "$sym"
    [ -x "$RUNNER" ] && faults dlopen-rs "$RUNNER" --worker dlopen-rs first "$path" "$sym"
    echo
    echo "Whole process (\`perf stat -e page-faults\`, median of 5): mmld $(pstat "$WORKER" --worker mmld first "$path" "$sym"), glibc $(pstat "$WORKER" --worker glibc first "$path" "$sym"), the same binary loading nothing $(pstat "$WORKER" --worker none first "$path" "$sym"); dlopen-rs $([ -x "$RUNNER" ] && pstat "$RUNNER" --worker dlopen-rs first "$path" "$sym"), its runner loading nothing $([ -x "$RUNNER" ] && pstat "$RUNNER" --worker none first "$path" "$sym")."
    echo
    echo "Syscalls in the region (\`strace -f\`):"
    echo
    echo "| loader | syscalls | of which |"
    echo "|---|---:|---|"
    syscalls mmld "$WORKER" --worker mmld first "$path" "$sym"
    syscalls glibc "$WORKER" --worker glibc first "$path" "$sym"
    [ -x "$RUNNER" ] && syscalls dlopen-rs "$RUNNER" --worker dlopen-rs first "$path" "$sym"
    echo
    if [ -e "$CG/cycle-$LIB-mmld.out" ]; then
      echo "#### $LIB load + get + unload cycle (per cycle, 100 cycles counted)"
      echo
      echo "Instructions per cycle: mmld $(per "$(total "$CG/cycle-$LIB-mmld.out")" 100), glibc $(per "$(total "$CG/cycle-$LIB-glibc.out")" 100), dlopen-rs $(per "$(total "$CG/cycle-$LIB-dlopen-rs.out")" 100)."
      echo
      phases "$CG/cycle-$LIB-mmld.out" "$n" 100
    fi
  done
} | tee "$OUT/profile.md"
