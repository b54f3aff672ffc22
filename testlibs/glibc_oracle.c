/*
 * glibc_oracle: replays a script of dlopen/dlclose/dlsym steps with the
 * host's own loader, so tests/deps.rs can compare mmld with glibc on the
 * same libraries. Not a library: the tests compile it with gcc into a
 * temporary directory. Each argument is one step:
 *
 *   open:PATH[:global|:deepbind|:nodelete|:noload]...  dlopen(RTLD_NOW | flags)
 *   close:N                                    dlclose(handle N)
 *   str:N:SYM     print "SYM=<string>"   for const char *SYM(void)
 *   int:N:SYM     print "SYM=<int>"      for int SYM(void)
 *   log:N         print "log=<orderlog_read()>" through handle N
 *   clear:N       orderlog_clear() through handle N
 *   mapped:PATH   print "mapped:PATH=yes" if /proc/self/maps maps PATH
 *                 (compared by real path), else "mapped:PATH=no"
 *   same:N:M      print "same:N:M=yes" if both handles are one object
 *   snapshot      remember /proc/self/maps, without the [heap] line
 *                 (malloc may grow the heap; nothing else may change)
 *   exit          exit(0) with every open handle still open
 *   unchanged     print "unchanged=yes" if /proc/self/maps is what
 *                 snapshot saw, else "unchanged=no" and the new maps
 *   default:SYM   print "default:SYM=found" if dlsym(RTLD_DEFAULT, SYM)
 *                 finds it, else "default:SYM=none"
 *   this:SYM      the same for dlsym(dlopen(NULL), SYM): "this:SYM=..."
 *   env:NAME      print "env:NAME=<getenv(NAME)>" or "env:NAME=unset"
 *   hostopen:PATH dlopen(PATH, RTLD_NOW) by the program itself, kept open
 *                 and numbered apart (for mmld: a library the host has)
 *   spawn         start the worker thread (before an open: a thread that
 *                 existed before the load)
 *   tstr:N:SYM    as str, called in the worker: prints "old:SYM=<string>"
 *   nstr:N:SYM    as str, called in a new thread: prints "new:SYM=<string>"
 *
 * Handles are numbered from 0 in open order. A failed open prints
 * "error:open:<dlerror()>" and leaves an empty handle; any other failing
 * step prints "error:<what>: <dlerror()>" and exits with status 1.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Definitions the executable exports (built with
 * -Wl,--export-dynamic-symbol=mmld_exe_*), as tests/deps.rs's test binary
 * does: a fixture's protected definition of one of these names must not be
 * interposed on, a default-visibility one must.
 */
int mmld_exe_protected(void) { return 1; }
int mmld_exe_interposed(void) { return 1; }

static void *handles[64];
static int nhandles;

static void fail(const char *what)
{
    const char *e = dlerror();
    printf("error:%s: %s\n", what, e ? e : "(no dlerror)");
    exit(1);
}

static void *handle(const char *text)
{
    int n = atoi(text);
    if (n < 0 || n >= nhandles || !handles[n])
        fail("bad handle");
    return handles[n];
}

static void *symbol(const char *text, const char *name)
{
    void *p = dlsym(handle(text), name);
    if (!p)
        fail(name);
    return p;
}

typedef const char *(*str_fn)(void);

/* The worker thread: runs one str_fn at a time, copying its result. */
static pthread_t worker;
static int have_worker;
static pthread_mutex_t worker_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t worker_cv = PTHREAD_COND_INITIALIZER;
static str_fn worker_job;
static int worker_state; /* 0 idle, 1 job pending, 2 job done, 3 quit */
static char worker_out[512];

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&worker_mu);
    for (;;) {
        while (worker_state != 1 && worker_state != 3)
            pthread_cond_wait(&worker_cv, &worker_mu);
        if (worker_state == 3)
            break;
        snprintf(worker_out, sizeof worker_out, "%s", worker_job());
        worker_state = 2;
        pthread_cond_broadcast(&worker_cv);
    }
    pthread_mutex_unlock(&worker_mu);
    return NULL;
}

static void run_in_worker(str_fn f, char *out, size_t len)
{
    pthread_mutex_lock(&worker_mu);
    worker_job = f;
    worker_state = 1;
    pthread_cond_broadcast(&worker_cv);
    while (worker_state != 2)
        pthread_cond_wait(&worker_cv, &worker_mu);
    worker_state = 0;
    snprintf(out, len, "%s", worker_out);
    pthread_mutex_unlock(&worker_mu);
}

static void *new_thread_main(void *arg)
{
    str_fn f = *(str_fn *)arg;
    snprintf(worker_out, sizeof worker_out, "%s", f());
    return NULL;
}

static char *read_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        fail("/proc/self/maps");
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf)
        fail("out of memory");
    buf[len] = '\0';
    /* Drop the [heap] line in place. */
    char *heap = strstr(buf, "[heap]\n");
    if (heap) {
        char *start = heap;
        while (start > buf && start[-1] != '\n')
            start--;
        memmove(start, heap + 7, strlen(heap + 7) + 1);
    }
    return buf;
}

int main(int argc, char **argv)
{
    char *snapshot = NULL;
    for (int i = 1; i < argc; i++) {
        char *step = argv[i];
        char *verb = strtok(step, ":");
        if (!verb)
            continue;
        if (strcmp(verb, "open") == 0) {
            char *path = strtok(NULL, ":");
            int flags = RTLD_NOW;
            for (char *f = strtok(NULL, ":"); f; f = strtok(NULL, ":")) {
                if (strcmp(f, "global") == 0)
                    flags |= RTLD_GLOBAL;
                else if (strcmp(f, "deepbind") == 0)
                    flags |= RTLD_DEEPBIND;
                else if (strcmp(f, "nodelete") == 0)
                    flags |= RTLD_NODELETE;
                else if (strcmp(f, "noload") == 0)
                    flags |= RTLD_NOLOAD;
            }
            if (nhandles == 64)
                fail("too many handles");
            handles[nhandles] = dlopen(path, flags);
            if (!handles[nhandles])
                printf("error:open:%s\n", dlerror());
            nhandles++;
        } else if (strcmp(verb, "close") == 0) {
            char *n = strtok(NULL, ":");
            if (dlclose(handle(n)) != 0)
                fail("dlclose");
            handles[atoi(n)] = NULL;
        } else if (strcmp(verb, "str") == 0) {
            char *n = strtok(NULL, ":");
            char *name = strtok(NULL, ":");
            const char *(*f)(void) = (const char *(*)(void))symbol(n, name);
            printf("%s=%s\n", name, f());
        } else if (strcmp(verb, "int") == 0) {
            char *n = strtok(NULL, ":");
            char *name = strtok(NULL, ":");
            int (*f)(void) = (int (*)(void))symbol(n, name);
            printf("%s=%d\n", name, f());
        } else if (strcmp(verb, "log") == 0) {
            const char *(*f)(void) = (const char *(*)(void))symbol(strtok(NULL, ":"), "orderlog_read");
            printf("log=%s\n", f());
        } else if (strcmp(verb, "clear") == 0) {
            void (*f)(void) = (void (*)(void))symbol(strtok(NULL, ":"), "orderlog_clear");
            f();
        } else if (strcmp(verb, "mapped") == 0) {
            char *path = strtok(NULL, ":");
            char real[PATH_MAX];
            int yes = 0;
            if (realpath(path, real)) {
                char *maps = read_maps();
                for (char *line = strtok(maps, "\n"); line; line = strtok(NULL, "\n")) {
                    char *name = strchr(line, '/');
                    if (name && strcmp(name, real) == 0)
                        yes = 1;
                }
                free(maps);
            }
            printf("mapped:%s=%s\n", path, yes ? "yes" : "no");
        } else if (strcmp(verb, "same") == 0) {
            char *n = strtok(NULL, ":");
            char *m = strtok(NULL, ":");
            printf("same:%s:%s=%s\n", n, m, handle(n) == handle(m) ? "yes" : "no");
        } else if (strcmp(verb, "spawn") == 0) {
            if (have_worker || pthread_create(&worker, NULL, worker_main, NULL) != 0)
                fail("spawn");
            have_worker = 1;
        } else if (strcmp(verb, "tstr") == 0 || strcmp(verb, "nstr") == 0) {
            int old = verb[0] == 't';
            char *n = strtok(NULL, ":");
            char *name = strtok(NULL, ":");
            str_fn f = (str_fn)symbol(n, name);
            char out[512];
            if (old) {
                if (!have_worker)
                    fail("tstr without spawn");
                run_in_worker(f, out, sizeof out);
            } else {
                pthread_t t;
                if (pthread_create(&t, NULL, new_thread_main, &f) != 0)
                    fail("pthread_create");
                pthread_join(t, NULL);
                snprintf(out, sizeof out, "%s", worker_out);
            }
            printf("%s:%s=%s\n", old ? "old" : "new", name, out);
        } else if (strcmp(verb, "snapshot") == 0) {
            free(snapshot);
            snapshot = read_maps();
        } else if (strcmp(verb, "unchanged") == 0) {
            char *now = read_maps();
            if (snapshot && strcmp(now, snapshot) == 0) {
                printf("unchanged=yes\n");
            } else {
                printf("unchanged=no\n%s", now);
            }
            free(now);
        } else if (strcmp(verb, "exit") == 0) {
            exit(0);
        } else if (strcmp(verb, "default") == 0 || strcmp(verb, "this") == 0) {
            char *name = strtok(NULL, ":");
            void *scope = strcmp(verb, "default") == 0 ? RTLD_DEFAULT : dlopen(NULL, RTLD_NOW);
            printf("%s:%s=%s\n", verb, name, dlsym(scope, name) ? "found" : "none");
        } else if (strcmp(verb, "hostopen") == 0) {
            if (!dlopen(strtok(NULL, ":"), RTLD_NOW))
                fail("hostopen");
        } else if (strcmp(verb, "env") == 0) {
            char *name = strtok(NULL, ":");
            const char *value = getenv(name);
            printf("env:%s=%s\n", name, value ? value : "unset");
        } else {
            printf("error:unknown step %s\n", verb);
            return 1;
        }
        fflush(stdout);
    }
    if (have_worker) {
        pthread_mutex_lock(&worker_mu);
        worker_state = 3;
        pthread_cond_broadcast(&worker_cv);
        pthread_mutex_unlock(&worker_mu);
        pthread_join(worker, NULL);
    }
    return 0;
}
