/*
 * libdemo: the general-purpose test library for mmld.
 *
 * Each group of definitions below exists to force one loader feature into
 * the ELF file; the comment on the group says which. The same source is
 * linked three times (see build.rs): default (DT_RELA + DT_GNU_HASH),
 * -z pack-relative-relocs (DT_RELR) and --hash-style=sysv (DT_HASH only),
 * so every test can be run against each relocation/hash flavour.
 *
 * Init/fini protocol (glibc order: DT_INIT, then DT_INIT_ARRAY in array
 * order; DT_FINI_ARRAY in reverse array order, then DT_FINI):
 *   demo_order_log() right after load:     "init,ctor1,ctor2"
 *   fini log file after unload (if set):   "dtor2\ndtor1\ndemo fini\nfini\n"
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- Plain calls across the boundary: integer, float and double ABI. ---- */

long add(long a, long b)
{
    return a + b;
}

/* Initialised to a non-zero value so it lives in .data, not .bss: the test
 * checks that file-backed writable data is mapped and private (COW). */
static long counter = 41;

long counter_bump(void)
{
    return ++counter;
}

const char *greeting(void)
{
    return "hello from libdemo";
}

double scale(double x, double factor)
{
    return x * factor;
}

/* 6 integer and 8 floating-point arguments, interleaved: exactly fills
 * rdi..r9 and xmm0..xmm7, so a caller that gets the SysV classification
 * wrong produces a different (distinguishable) sum. */
double mix(long a, double b, long c, double d, long e, double f, long g,
           double h, long i, double j, long k, double l, double m, double n)
{
    return (double)a + 2 * b + 3 * (double)c + 4 * d + 5 * (double)e + 6 * f +
           7 * (double)g + 8 * h + 9 * (double)i + 10 * j + 11 * (double)k +
           12 * l + 13 * m + 14 * n;
}

float half(float x)
{
    return x / 2.0f;
}

int negate_i32(int x)
{
    return -x;
}

unsigned int u32_max(void)
{
    return 0xffffffffu;
}

/* ---- Pointer tables in .data.rel.ro. ----
 * String addresses are link-time-relative, so they become R_X86_64_RELATIVE
 * (or DT_RELR entries) that must be applied before RELRO is made read-only. */
const char *const demo_words[] = {"alpha", "beta", "gamma", "delta", NULL};

const char *demo_word(long i)
{
    long n = (long)(sizeof demo_words / sizeof demo_words[0]) - 1;
    if (i < 0 || i >= n)
        return NULL;
    return demo_words[i];
}

static long sub_fn(long a, long b)
{
    return a - b;
}

static long mul_fn(long a, long b)
{
    return a * b;
}

/* `add` is exported and therefore preemptible, so its slot needs a symbolic
 * R_X86_64_64; sub_fn/mul_fn are static and get R_X86_64_RELATIVE. */
long (*const demo_ops[])(long, long) = {add, sub_fn, mul_fn};

long demo_apply(long op, long a, long b)
{
    if (op < 0 || op >= (long)(sizeof demo_ops / sizeof demo_ops[0]))
        return 0;
    return demo_ops[op](a, b);
}

/* ---- .bss ----
 * 1 MiB of zeroes: p_memsz far exceeds p_filesz, so the loader must both
 * zero the tail of the last file-backed page (which otherwise contains
 * whatever follows .data in the file, e.g. debug info) and map anonymous
 * pages beyond it. */
unsigned char demo_big_bss[1 << 20];

long bss_sum(void)
{
    long sum = 0;
    for (size_t i = 0; i < sizeof demo_big_bss; i++)
        sum += demo_big_bss[i];
    return sum;
}

void bss_poke(long idx, unsigned char v)
{
    if (idx >= 0 && (size_t)idx < sizeof demo_big_bss)
        demo_big_bss[idx] = v;
}

/* ---- Initialisers and finalisers. ---- */

static int demo_initialised;
static int demo_init_count;
static char fini_log_path[4096];
static char order_log[256];

/* Deliberately libc-free: init-order tests should not also depend on the
 * loader having bound PLT slots correctly. */
static void order_append(const char *marker)
{
    size_t len = 0;
    while (order_log[len] != '\0')
        len++;
    if (len != 0 && len + 1 < sizeof order_log)
        order_log[len++] = ',';
    for (; *marker != '\0' && len + 1 < sizeof order_log; marker++)
        order_log[len++] = *marker;
    order_log[len] = '\0';
}

static void fini_log_line(const char *line)
{
    if (fini_log_path[0] == '\0')
        return;
    int fd = open(fini_log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    size_t len = strlen(line);
    ssize_t written = write(fd, line, len);
    (void)written;
    close(fd);
}

/* DT_INIT / DT_FINI, selected with -Wl,-init / -Wl,-fini. Hidden rather than
 * static because ld resolves -init/-fini through its global symbol table. */
__attribute__((visibility("hidden"))) void demo_legacy_init(void)
{
    order_append("init");
}

__attribute__((visibility("hidden"))) void demo_legacy_fini(void)
{
    order_append("fini");
    fini_log_line("fini\n");
}

/* Explicit priorities pin the DT_INIT_ARRAY / DT_FINI_ARRAY order:
 * constructors run 101 then 102, destructors 102 then 101. */
__attribute__((constructor(101))) static void demo_init(void)
{
    demo_initialised = 1;
    demo_init_count++;
    order_append("ctor1");
}

__attribute__((constructor(102))) static void demo_init2(void)
{
    order_append("ctor2");
}

__attribute__((destructor(102))) static void demo_fini2(void)
{
    order_append("dtor2");
    fini_log_line("dtor2\n");
}

__attribute__((destructor(101))) static void demo_fini(void)
{
    order_append("dtor1");
    fini_log_line("dtor1\n");
    fini_log_line("demo fini\n");
}

int demo_init_calls(void)
{
    return demo_initialised ? demo_init_count : 0;
}

const char *demo_order_log(void)
{
    return order_log;
}

void demo_set_fini_log(const char *path)
{
    if (path == NULL) {
        fini_log_path[0] = '\0';
        return;
    }
    size_t len = strlen(path);
    if (len >= sizeof fini_log_path)
        len = sizeof fini_log_path - 1;
    memcpy(fini_log_path, path, len);
    fini_log_path[len] = '\0';
}

/* ---- Symbols bound from the host libc. ----
 * snprintf is an ordinary JUMP_SLOT; strlen is an STT_GNU_IFUNC in glibc,
 * so binding it requires calling glibc's resolver. */
const char *demo_format(long n)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "n=%ld", n);
    return buf;
}

size_t demo_strlen(const char *s)
{
    return strlen(s);
}

/* ---- Weak undefined reference: must resolve to 0, not fail the load. ---- */
extern int demo_missing_weak(void) __attribute__((weak));

int demo_has_weak(void)
{
    return demo_missing_weak != 0;
}

/* ---- Exported data object (not a function: `mmld run` must refuse it). */
long demo_data_value = 7;
