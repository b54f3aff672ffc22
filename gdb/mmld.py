# gdb support for programs that load libraries with mmld.
#
# Usage:  gdb -x gdb/mmld.py --args PROGRAM ARGS...
#         (or `source gdb/mmld.py` inside gdb before `run`)
#
# mmld keeps an r_debug-shaped list of the objects it maps at the symbol
# `mmld_r_debug` and calls `mmld_debug_state` after every change. This script
# stops there (silently), reads the list from the inferior's memory, and runs
# `add-symbol-file FILE -o BIAS` for each new object and
# `remove-symbol-file -a ADDR` for each object that went away, so `bt`,
# `info symbol` and breakpoints by name work in mmld-loaded code. It reads
# raw memory, so it works without debug information for mmld itself.
import struct

import gdb

_loaded = {}  # (path, bias) -> address inside the object (its l_ld)


def _read(addr, size):
    return bytes(gdb.selected_inferior().read_memory(addr, size))


def _c_string(addr, limit=4096):
    out = bytearray()
    while len(out) < limit:
        chunk = _read(addr + len(out), 64)
        nul = chunk.find(b"\0")
        if nul >= 0:
            out += chunk[:nul]
            return out.decode("utf-8", "replace")
        out += chunk
    return out.decode("utf-8", "replace")


def _r_debug_address():
    # Evaluate in C: the program's own language (Rust, C++) may not accept
    # the expression, and without debug info only the minimal symbol exists.
    previous = gdb.parameter("language")
    try:
        gdb.execute("set language c", to_string=True)
        return int(gdb.parse_and_eval("(unsigned long)&mmld_r_debug"))
    except gdb.error:
        return None
    finally:
        gdb.execute("set language %s" % previous, to_string=True)


def mmld_sync(verbose=False):
    rd = _r_debug_address()
    if rd is None:
        return
    # struct r_debug: int r_version; link_map *r_map; ...
    (r_map,) = struct.unpack("<Q", _read(rd + 8, 8))
    current = {}
    node, guard = r_map, 0
    while node and guard < 100000:
        # struct link_map: l_addr, l_name, l_ld, l_next, l_prev
        l_addr, l_name, l_ld, l_next = struct.unpack("<QQQQ", _read(node, 32))
        current[(_c_string(l_name), l_addr)] = l_ld
        node, guard = l_next, guard + 1
    for key, l_ld in current.items():
        if key not in _loaded:
            path, bias = key
            gdb.execute("add-symbol-file %s -o 0x%x" % (path, bias), to_string=not verbose)
            _loaded[key] = l_ld
    for key in list(_loaded):
        if key not in current:
            try:
                gdb.execute("remove-symbol-file -a 0x%x" % _loaded[key], to_string=not verbose)
            except gdb.error:
                pass
            del _loaded[key]


class _MmldHook(gdb.Breakpoint):
    def __init__(self):
        super().__init__("mmld_debug_state", internal=True)
        self.silent = True

    def stop(self):
        mmld_sync()
        return False


class _MmldSyncCommand(gdb.Command):
    """Re-read mmld's list of loaded objects and load their symbols."""

    def __init__(self):
        super().__init__("mmld-sync", gdb.COMMAND_FILES)

    def invoke(self, arg, from_tty):
        mmld_sync(verbose=True)


gdb.execute("set confirm off")
gdb.execute("set breakpoint pending on")
_MmldSyncCommand()
_MmldHook()
