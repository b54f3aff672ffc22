// A C++ library whose exception crosses two of its frames. `thrower_run`
// (called from C) catches what `thrower_inner` throws through
// `thrower_outer`; `thrower_inner` records the call stack with backtrace()
// first, so the C host can name each frame with dladdr. Built as
// testlibs/libthrower.so; see testlibs/capi/throw_host.c.
#include <execinfo.h>
#include <stdexcept>
#include <string>

static void *frames[64];
static int nframes;
static std::string caught;

extern "C" __attribute__((noinline)) void thrower_inner(int depth) {
    nframes = backtrace(frames, 64);
    throw std::runtime_error("boom at depth " + std::to_string(depth));
}

extern "C" __attribute__((noinline)) int thrower_outer(int depth) {
    thrower_inner(depth + 1);
    // Not reached; keeps the call from being a tail call.
    return depth;
}

extern "C" __attribute__((noinline)) const char *thrower_run(void) {
    try {
        volatile int r = thrower_outer(1);
        (void)r;
        caught = "no exception";
    } catch (const std::exception &e) {
        caught = std::string("caught: ") + e.what();
    }
    return caught.c_str();
}

extern "C" int thrower_frames(void ***out) {
    *out = frames;
    return nframes;
}
