/*
 * Shared by the dependency-tree test libraries: every library that includes
 * this header and names itself with ORDERLOG_TRACK("name") appends
 * "init:name" to liborderlog's log when its constructor runs and
 * "fini:name" when its destructor runs. Tests read the log through
 * orderlog_read() on a handle they keep open on liborderlog.so, so the log
 * survives the unload of the libraries that wrote it.
 */
#ifndef MMLD_ORDERLOG_H
#define MMLD_ORDERLOG_H

void orderlog_add(const char *event);
const char *orderlog_read(void);
void orderlog_clear(void);

#define ORDERLOG_TRACK(name)                                                  \
    __attribute__((constructor)) static void orderlog_track_init(void)       \
    {                                                                          \
        orderlog_add("init:" name);                                            \
    }                                                                          \
    __attribute__((destructor)) static void orderlog_track_fini(void)        \
    {                                                                          \
        orderlog_add("fini:" name);                                            \
    }

#endif
