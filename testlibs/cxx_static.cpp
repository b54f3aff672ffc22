// Static destructors at unload: the C++ runtime registers ~Logger with
// __cxa_atexit against this library's __dso_handle; __cxa_finalize, called
// from the library's own DT_FINI_ARRAY when mmld unloads it, must run it
// then, not at process exit after the code is gone.
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace {
char log_path[512];

void append_log(const char *line) {
    if (!log_path[0]) return;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    ssize_t ignored = write(fd, line, strlen(line));
    (void)ignored;
    close(fd);
}

struct Logger {
    int constructed = 1;
    ~Logger() { append_log("static dtor\n"); }
};
Logger logger;
}  // namespace

extern "C" void cxx_static_set_log(const char *path) {
    std::strncpy(log_path, path, sizeof log_path - 1);
}

extern "C" int cxx_static_constructed() { return logger.constructed; }
