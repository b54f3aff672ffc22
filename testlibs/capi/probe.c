/* The dlopen family's observable semantics, printed as address-free lines.
 * tests/capi.rs runs this program with glibc and with libmmld.so preloaded
 * and requires the same output. Usage: probe DIR (DIR holds libdemo.so and
 * libversioned.so). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char path_demo[4096], path_versioned[4096];

static const char *err(void) {
    const char *e = dlerror();
    return e ? e : "(null)";
}

static int ends_with(const char *s, const char *tail) {
    size_t a = s ? strlen(s) : 0, b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

static void *thread_error(void *arg) {
    (void)arg;
    return (void *)(dlerror() == NULL ? "thread sees no error" : "thread sees the other thread's error");
}

static int count_demo;
static int phdr_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)data;
    if (size >= sizeof *info && ends_with(info->dlpi_name, "/libdemo.so")) {
        count_demo++;
        int load = 0;
        for (int i = 0; i < info->dlpi_phnum; i++)
            load += info->dlpi_phdr[i].p_type == PT_LOAD;
        printf("dl_iterate_phdr: libdemo.so with %d PT_LOAD\n", load);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    snprintf(path_demo, sizeof path_demo, "%s/libdemo.so", argv[1]);
    snprintf(path_versioned, sizeof path_versioned, "%s/libversioned.so", argv[1]);

    printf("bad mode: %s\n", dlopen(path_demo, 0) ? "opened" : "NULL");
    printf("bad mode error: %s\n", ends_with(err(), "invalid mode for dlopen(): Invalid argument") ? "invalid mode" : "other");
    printf("noload before: %s; error %s\n", dlopen(path_demo, RTLD_NOW | RTLD_NOLOAD) ? "handle" : "NULL", err());

    void *h = dlopen(path_demo, RTLD_NOW);
    printf("open: %s\n", h ? "handle" : err());
    if (!h) return 1;
    long (*add)(long, long) = (long (*)(long, long))dlsym(h, "add");
    printf("add(2, 3) = %ld\n", add ? add(2, 3) : -1);
    void *h2 = dlopen(path_demo, RTLD_LAZY);
    printf("reopen: same handle %d\n", h2 == h);
    printf("noload after: same handle %d\n", dlopen(path_demo, RTLD_NOW | RTLD_NOLOAD) == h);

    printf("missing: %s\n", dlsym(h, "mmld_no_such_symbol") ? "found" : "NULL");
    pthread_t t;
    void *msg;
    pthread_create(&t, NULL, thread_error, NULL);
    pthread_join(t, &msg);
    printf("%s\n", (const char *)msg);
    const char *e = err();
    printf("error: %s\n", strstr(e, "undefined symbol: mmld_no_such_symbol") && strstr(e, "libdemo.so") ? "names the file and the symbol" : e);
    printf("error again: %s\n", err());
    dlsym(h, "mmld_no_such_symbol");
    printf("after a later success: %s\n", dlsym(h, "add") && dlerror() == NULL ? "cleared" : "kept");

    printf("default before global: %s\n", dlsym(RTLD_DEFAULT, "counter_bump") ? "found" : "NULL");
    err();
    printf("default printf: %s\n", dlsym(RTLD_DEFAULT, "printf") == (void *)printf ? "libc's" : "other");
    printf("next malloc: %s\n", dlsym(RTLD_NEXT, "malloc") == (void *)malloc ? "libc's" : "other");
    void *g = dlopen(path_demo, RTLD_NOW | RTLD_GLOBAL);
    printf("promote: same handle %d\n", g == h);
    printf("default after global: %s\n", dlsym(RTLD_DEFAULT, "counter_bump") == dlsym(h, "counter_bump") ? "the library's" : "other");
    void *self = dlopen(NULL, RTLD_NOW);
    printf("self main: %s\n", dlsym(self, "main") == (void *)main ? "found" : "other");
    printf("self add: %s\n", dlsym(self, "add") == (void *)add ? "the library's" : "other");

    Dl_info info;
    int ok = dladdr((char *)add + 1, &info);
    printf("dladdr: %d %s %s saddr %d fbase %d\n", ok, ends_with(info.dli_fname, "/libdemo.so") ? "libdemo.so" : info.dli_fname,
           info.dli_sname ? info.dli_sname : "(null)", info.dli_saddr == (void *)add, info.dli_fbase != NULL && (char *)info.dli_fbase <= (char *)add);
    struct link_map *lm1 = NULL;
    int r;
    void *extra = NULL;
    ok = dladdr1((void *)add, &info, &extra, RTLD_DL_LINKMAP);
    lm1 = extra;
    struct link_map *lm = NULL;
    /* Each call is its own statement: argument evaluation order is unspecified. */
    r = dlinfo(h, RTLD_DI_LINKMAP, &lm);
    printf("dlinfo linkmap: %d %s same as dladdr1 %d bias %d\n", r, lm && ends_with(lm->l_name, "/libdemo.so") ? "libdemo.so" : "?", lm == lm1,
           lm && (char *)lm->l_addr <= (char *)add);
    ok = dladdr1((void *)add, &info, &extra, RTLD_DL_SYMENT);
    printf("dladdr1 syment: %s\n", extra && ((ElfW(Sym) *)extra)->st_size > 0 ? "has size" : "none");
    char origin[4096] = "";
    r = dlinfo(h, RTLD_DI_ORIGIN, origin);
    printf("dlinfo origin: %d %s\n", r, ends_with(origin, "/testlibs") ? "testlibs" : origin);
    size_t modid = 99;
    r = dlinfo(h, RTLD_DI_TLS_MODID, &modid);
    printf("dlinfo tls modid: %d %zu\n", r, modid);
    dl_iterate_phdr(phdr_cb, NULL);
    printf("dl_iterate_phdr saw libdemo.so %d time(s)\n", count_demo);
    struct dl_find_object fo;
    r = _dl_find_object((void *)add, &fo);
    printf("_dl_find_object: %d inside %d eh_frame %d\n", r, (char *)fo.dlfo_map_start <= (char *)add && (char *)add < (char *)fo.dlfo_map_end, fo.dlfo_eh_frame != NULL);

    void *v = dlopen(path_versioned, RTLD_NOW | RTLD_DEEPBIND | RTLD_NODELETE);
    int (*v1)(void) = (int (*)(void))dlvsym(v, "vfunc", "VERS_1.0");
    int (*v2)(void) = (int (*)(void))dlvsym(v, "vfunc", "VERS_2.0");
    int (*vd)(void) = (int (*)(void))dlsym(v, "vfunc");
    printf("dlvsym: %d %d default %d\n", v1 ? v1() : -1, v2 ? v2() : -1, vd ? vd() : -1);
    printf("dlvsym missing version: %s\n", dlvsym(v, "vfunc", "VERS_9.9") ? "found" : "NULL");
    e = err();
    printf("dlvsym error: %s\n", strstr(e, "undefined symbol: vfunc, version VERS_9.9") ? "names the symbol and version" : e);

    /* Namespaces are glibc's: the drop-in hands dlmopen over (with a trace line). */
    void *ns = dlmopen(LM_ID_NEWLM, path_demo, RTLD_NOW);
    long (*nadd)(long, long) = ns ? (long (*)(long, long))dlsym(ns, "add") : NULL;
    printf("dlmopen: %s add %ld\n", ns ? "handle" : err(), nadd ? nadd(4, 5) : -1);

    printf("missing file: %s\n", dlopen("libmmld-no-such-library.so", RTLD_NOW) ? "opened" : err());
    /* Four references: open, reopen, the RTLD_NOLOAD reopen, the promotion. */
    r = dlclose(h);
    r += dlclose(h2);
    r += dlclose(g);
    printf("close: %d; still loaded: %s\n", r, dlopen(path_demo, RTLD_NOW | RTLD_NOLOAD) ? "yes" : "no");
    r = dlclose(h);
    r += dlclose(h);
    printf("noload after close: %s\n", dlopen(path_demo, RTLD_NOW | RTLD_NOLOAD) ? "handle" : "NULL");
    return 0;
}
