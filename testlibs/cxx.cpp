// C++ in an mmld-loaded library: exceptions thrown and caught through two
// of its own frames, a static object, and a thread_local with a destructor.
// It defines no STB_GNU_UNIQUE symbol (those make an object NODELETE, in
// glibc and in mmld), so it can be unloaded; see cxx_static.cpp for static
// destructors at unload and cxx_a.cpp/cxx_b.cpp for unique symbols.
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <string>
#include <unistd.h>

#include <cstdio>

static char log_path[512];

static void append_log(const char *line) {
    if (!log_path[0]) return;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    ssize_t ignored = write(fd, line, strlen(line));
    (void)ignored;
    close(fd);
}

struct Global {
    std::string name;
    Global() : name("cxx-global") {}
    ~Global() { append_log("cxx static dtor\n"); }
};
static Global global_object;

__attribute__((noinline)) static int thrower(int x) {
    if (x > 0) {
        char text[32];
        std::snprintf(text, sizeof text, "boom %d", x);
        throw std::runtime_error(text);
    }
    return x;
}

__attribute__((noinline)) static int middle(int x) { return thrower(x) + 1; }

extern "C" int cxx_catch(int x) {
    try {
        return middle(x);
    } catch (const std::runtime_error &e) {
        return 1000 + static_cast<int>(std::strlen(e.what()));
    }
}

extern "C" const char *cxx_global_name() { return global_object.name.c_str(); }

extern "C" void cxx_set_log(const char *path) {
    std::strncpy(log_path, path, sizeof log_path - 1);
}

thread_local std::string thread_text;

extern "C" int cxx_thread_append(int n) {
    thread_text.append(static_cast<size_t>(n), 'x');
    return static_cast<int>(thread_text.size());
}
