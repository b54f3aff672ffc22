/* floor.c - the kernel floor of loading one shared library by mapping it.
 *
 * What it measures: the kernel work glibc's loader does for the library's
 * own file, and nothing else, done glibc's way (elf/dl-load.c,
 * dl-map-segments.h, dl-reloc.c in glibc 2.36):
 *   open, read of the first 832 bytes (ELF and program headers; a pread
 *   only if they do not fit), fstat, the first PT_LOAD mapped over the whole
 *   span (that mapping is the reservation: no separate PROT_NONE mmap),
 *   one MAP_FIXED mmap per further PT_LOAD, mprotect(PROT_NONE) of the
 *   holes between segments when there are any, .bss (zeroing the partial
 *   page, an anonymous mapping for the rest), reading the dynamic section
 *   and the relocation tables (RELA, JMPREL, RELR) to find the pages they
 *   write, one write into each such page (its copy-on-write fault: RELA
 *   targets are written without being read first, as glibc writes
 *   base + addend or a symbol value; RELR targets are read and added to,
 *   as glibc does), mprotect of PT_GNU_RELRO, close.
 * No dependencies (DT_NEEDED), no symbol lookup, no relocation values
 * beyond the one word per page, no TLS, no constructors, no bookkeeping.
 *
 * Why: mmld's targets ask for a first load and a load/unload cycle in a
 * fraction of glibc's time. A loader that maps the file cannot be faster
 * than this program, so the floor/glibc ratio is the lowest ratio such a
 * loader can reach on this kernel, and target minus floor is the budget
 * left for everything else. benches/floor.rs builds it (gcc -O2 -Wall
 * -Wl,-z,now) and runs it next to glibc_load.c.
 *
 * Usage:
 *   floor first PATH     one load in this (fresh) process; prints
 *                        "us T map T scan T touch T fin T pages_written N
 *                         mmaps N span BYTES" (times in microseconds)
 *   floor cycle N PATH   N times: load, then munmap the whole span; prints
 *                        "median_us T p10 T p90 T first_iter T touch_median T
 *                         pages_written N mmaps N n N"
 * Only x86-64-style ELF64 objects with RELA relocations are handled; any
 * other input, or a relocation outside a writable segment (text
 * relocations), is an error: a message on stderr and exit status 1.
 * Usage errors exit with status 2. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "timing.h"
#include <unistd.h>

#ifndef DT_RELRSZ
#define DT_RELRSZ 35
#endif
#ifndef DT_RELR
#define DT_RELR 36
#endif

#define PG 4096UL
#define TRUNC(x) ((x) & ~(PG - 1))
#define ROUND(x) (((x) + PG - 1) & ~(PG - 1))

#define MAXPAGES (1UL << 21)         /* largest span: 8 GiB */
static uint64_t seen[MAXPAGES / 64]; /* bitmap of pages already noted */
#define MAXLIST (1UL << 17)
static uint64_t list[MAXLIST]; /* first relocation target in each page */
static uint64_t value[MAXLIST]; /* what is written there: base + addend */
static unsigned char is_relr[MAXLIST]; /* RELR: read and add, as glibc does */
static unsigned long nlist;

/* glibc reads this much of the file first (sizeof fbp->buf in dl-load.c). */
#define FIRST_READ 832
static unsigned char hdr[4096];

struct result {
    double t_map, t_scan, t_touch, t_fin, total; /* microseconds */
    unsigned long pages, mmaps, mprotects;
    uint8_t *reservation;
    size_t span;
};


static void die(const char *path, const char *what) {
    fprintf(stderr, "floor: %s: %s\n", path, what);
    exit(1);
}

static void die_errno(const char *path, const char *call) {
    fprintf(stderr, "floor: %s: %s: %s\n", path, call, strerror(errno));
    exit(1);
}

/* The object being loaded (one at a time). */
static const char *cur_path;
static const Elf64_Phdr *cur_ph;
static int cur_phnum;

/* The PT_LOAD that holds [vaddr, vaddr + size), or NULL. */
static const Elf64_Phdr *segment_of(uint64_t vaddr, uint64_t size) {
    for (int i = 0; i < cur_phnum; i++) {
        const Elf64_Phdr *p = &cur_ph[i];
        if (p->p_type == PT_LOAD && vaddr >= p->p_vaddr && size <= p->p_memsz &&
            vaddr - p->p_vaddr <= p->p_memsz - size)
            return p;
    }
    return NULL;
}

/* A table the loader reads: must lie in a readable segment. */
static void check_readable(uint64_t vaddr, uint64_t size, const char *what) {
    const Elf64_Phdr *p = segment_of(vaddr, size);
    if (!p || !(p->p_flags & PF_R)) die(cur_path, what);
}

/* Note the page of a relocation target (an 8-byte word at vaddr). Only the
 * first target in each page is checked and kept: that is the word written,
 * with base + addend (RELA) or += base (RELR, relr != 0). */
static inline void note(uintptr_t base, uint64_t vaddr, uint64_t addend, int relr) {
    uint64_t pg = vaddr / PG;
    if (pg >= MAXPAGES) die(cur_path, "relocation target beyond the supported span");
    if (seen[pg >> 6] & (1UL << (pg & 63))) return;
    const Elf64_Phdr *p = segment_of(vaddr & ~7UL, 8);
    if (!p) die(cur_path, "relocation target outside every PT_LOAD");
    if (!(p->p_flags & PF_W))
        die(cur_path, "relocation target in a read-only segment (text relocations are not supported)");
    if (nlist >= MAXLIST) die(cur_path, "too many relocated pages");
    seen[pg >> 6] |= 1UL << (pg & 63);
    value[nlist] = base + addend;
    is_relr[nlist] = (unsigned char)relr;
    list[nlist++] = base + (vaddr & ~7UL);
}

static int prot_of(const Elf64_Phdr *p) {
    int prot = 0;
    if (p->p_flags & PF_R) prot |= PROT_READ;
    if (p->p_flags & PF_W) prot |= PROT_WRITE;
    if (p->p_flags & PF_X) prot |= PROT_EXEC;
    return prot;
}

static void load(const char *path, struct result *r) {
    unsigned long mmaps = 0, mprotects = 0;
    cur_path = path;

    double t0 = now_us();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die_errno(path, "open");
    ssize_t got = read(fd, hdr, FIRST_READ);
    if (got < 0) die_errno(path, "read");
    struct stat st;
    if (fstat(fd, &st)) die_errno(path, "fstat");

    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)hdr;
    if ((size_t)got < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0) die(path, "not an ELF file");
    if (eh->e_ident[EI_CLASS] != ELFCLASS64) die(path, "not a 64-bit ELF object");
    if (eh->e_type != ET_DYN) die(path, "not a shared object (ET_DYN)");
    if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0) die(path, "bad program headers");
    uint64_t phend = eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr);
    if (eh->e_phoff > sizeof hdr || phend > sizeof hdr) die(path, "program headers are not in the first 4 KiB");
    if (phend > (uint64_t)got) { /* glibc reads them with one more pread */
        ssize_t more = pread(fd, hdr + eh->e_phoff, phend - eh->e_phoff, eh->e_phoff);
        if (more < 0 || (uint64_t)more != phend - eh->e_phoff) die(path, "pread of the program headers");
    }
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(hdr + eh->e_phoff);
    cur_ph = ph;
    cur_phnum = eh->e_phnum;

    /* The PT_LOADs in order (glibc's loadcmds), and whether there is a
     * hole between two of them (a file-mapped end below the next start). */
    const Elf64_Phdr *loads[64];
    int nloads = 0, has_holes = 0;
    const Elf64_Phdr *dyn = NULL, *relro = NULL;
    for (int i = 0; i < eh->e_phnum; i++) {
        const Elf64_Phdr *p = &ph[i];
        if (p->p_type == PT_DYNAMIC) dyn = p;
        if (p->p_type == PT_GNU_RELRO) relro = p;
        if (p->p_type != PT_LOAD) continue;
        if (p->p_filesz > p->p_memsz || p->p_vaddr % PG != p->p_offset % PG ||
            p->p_offset > (uint64_t)st.st_size || (uint64_t)st.st_size - p->p_offset < p->p_filesz ||
            p->p_vaddr + p->p_memsz < p->p_vaddr)
            die(path, "bad PT_LOAD (size, alignment or beyond the end of the file)");
        if (nloads == 64) die(path, "more than 64 PT_LOAD");
        if (nloads > 0) {
            const Elf64_Phdr *q = loads[nloads - 1];
            if (TRUNC(p->p_vaddr) < ROUND(q->p_vaddr + q->p_memsz)) die(path, "PT_LOAD out of order or overlapping");
            if (ROUND(q->p_vaddr + q->p_filesz) != TRUNC(p->p_vaddr)) has_holes = 1;
        }
        loads[nloads++] = p;
    }
    if (nloads == 0) die(path, "no PT_LOAD");
    uint64_t lo = TRUNC(loads[0]->p_vaddr);
    uint64_t allocend = loads[nloads - 1]->p_vaddr + loads[nloads - 1]->p_memsz;
    uint64_t hi = ROUND(allocend);
    if (hi / PG > MAXPAGES) die(path, "span too big");
    size_t span = hi - lo;

    /* The first segment over the whole span: its mapping is the
     * reservation (glibc's _dl_map_segment). */
    const Elf64_Phdr *f = loads[0];
    uint8_t *res = mmap(NULL, allocend - lo, prot_of(f), MAP_PRIVATE, fd, TRUNC(f->p_offset));
    mmaps++;
    if (res == MAP_FAILED) die_errno(path, "mmap (first segment over the span)");
    uintptr_t base = (uintptr_t)res - lo;
    if (has_holes) {
        uintptr_t s0 = base + ROUND(f->p_vaddr + f->p_filesz), s1 = base + TRUNC(loads[nloads - 1]->p_vaddr);
        if (s1 > s0 && mprotect((void *)s0, s1 - s0, PROT_NONE)) die_errno(path, "mprotect (holes)");
        mprotects++;
    }

    for (int i = 0; i < nloads; i++) {
        const Elf64_Phdr *p = loads[i];
        int prot = prot_of(p);
        uintptr_t start = TRUNC(base + p->p_vaddr);
        uintptr_t mapend = ROUND(base + p->p_vaddr + p->p_filesz);
        if (i > 0 && mapend > start) {
            if (mmap((void *)start, mapend - start, prot, MAP_FIXED | MAP_PRIVATE, fd, TRUNC(p->p_offset)) ==
                MAP_FAILED)
                die_errno(path, "mmap (segment)");
            mmaps++;
        }
        if (p->p_memsz > p->p_filesz) {
            /* .bss as glibc does it: zero the rest of the last file page,
             * map anonymous pages for what lies beyond. */
            uintptr_t zero = base + p->p_vaddr + p->p_filesz;
            uintptr_t zeroend = base + p->p_vaddr + p->p_memsz;
            uintptr_t zeropage = ROUND(zero);
            if (zeroend < zeropage) zeropage = zeroend;
            if (zeropage > zero) {
                if (!(prot & PROT_WRITE)) die(path, ".bss in a non-writable segment");
                memset((void *)zero, 0, zeropage - zero);
            }
            if (zeroend > zeropage) {
                if (mmap((void *)zeropage, zeroend - zeropage, prot, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1,
                         0) == MAP_FAILED)
                    die_errno(path, "mmap (.bss)");
                mmaps++;
            }
        }
    }
    double t1 = now_us();

    /* The dynamic section, then the distinct pages relocations write. */
    uint64_t rela = 0, relasz = 0, jmprel = 0, pltrelsz = 0, pltrel = DT_RELA, relr = 0, relrsz = 0;
    if (dyn) {
        check_readable(dyn->p_vaddr, dyn->p_memsz, "PT_DYNAMIC outside a readable PT_LOAD");
        const Elf64_Dyn *d = (const Elf64_Dyn *)(base + dyn->p_vaddr);
        size_t n = dyn->p_memsz / sizeof *d;
        for (size_t i = 0; i < n && d[i].d_tag != DT_NULL; i++) {
            switch (d[i].d_tag) {
            case DT_RELA: rela = d[i].d_un.d_ptr; break;
            case DT_RELASZ: relasz = d[i].d_un.d_val; break;
            case DT_JMPREL: jmprel = d[i].d_un.d_ptr; break;
            case DT_PLTRELSZ: pltrelsz = d[i].d_un.d_val; break;
            case DT_PLTREL: pltrel = d[i].d_un.d_val; break;
            case DT_RELR: relr = d[i].d_un.d_ptr; break;
            case DT_RELRSZ: relrsz = d[i].d_un.d_val; break;
            case DT_REL:
            case DT_TEXTREL: die(path, "DT_REL or DT_TEXTREL: not supported");
            }
        }
    }
    if (jmprel && pltrel != DT_RELA) die(path, "DT_PLTREL is not DT_RELA");
    nlist = 0;
    if (rela && relasz) {
        check_readable(rela, relasz, "DT_RELA outside a readable PT_LOAD");
        const Elf64_Rela *a = (const Elf64_Rela *)(base + rela);
        size_t n = relasz / sizeof *a;
        for (size_t i = 0; i < n; i++) note(base, a[i].r_offset, (uint64_t)a[i].r_addend, 0);
    }
    if (jmprel && pltrelsz) {
        check_readable(jmprel, pltrelsz, "DT_JMPREL outside a readable PT_LOAD");
        const Elf64_Rela *a = (const Elf64_Rela *)(base + jmprel);
        size_t n = pltrelsz / sizeof *a;
        for (size_t i = 0; i < n; i++) note(base, a[i].r_offset, (uint64_t)a[i].r_addend, 0);
    }
    if (relr && relrsz) {
        check_readable(relr, relrsz, "DT_RELR outside a readable PT_LOAD");
        const uint64_t *e = (const uint64_t *)(base + relr);
        size_t n = relrsz / 8;
        uint64_t where = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t v = e[i];
            if (!(v & 1)) {
                note(base, v, 0, 1);
                where = v + 8;
            } else {
                for (int b = 1; b < 64; b++)
                    if (v & (1UL << b)) note(base, where + (uint64_t)(b - 1) * 8, 0, 1);
                where += 63 * 8;
            }
        }
    }
    double t2 = now_us();

    /* One write per relocated page: its copy-on-write fault. RELA targets
     * are written without being read (glibc stores base + addend or a
     * symbol's address); RELR targets are read and added to, as glibc
     * does. Nothing runs this code, so the values need not be final. */
    for (unsigned long i = 0; i < nlist; i++) {
        volatile uint64_t *w = (volatile uint64_t *)list[i];
        if (is_relr[i])
            *w += value[i];
        else
            *w = value[i];
    }
    double t3 = now_us();

    if (relro) {
        uintptr_t s = TRUNC(base + relro->p_vaddr), e = TRUNC(base + relro->p_vaddr + relro->p_memsz);
        if (e > s && mprotect((void *)s, e - s, PROT_READ)) die_errno(path, "mprotect (RELRO)");
        mprotects++;
    }
    close(fd);
    double t4 = now_us();

    /* Clear the bitmap for the next load (outside the timed region). */
    for (unsigned long i = 0; i < nlist; i++) {
        uint64_t pg = (list[i] - base) / PG;
        seen[pg >> 6] = 0;
    }
    r->t_map = t1 - t0;
    r->t_scan = t2 - t1;
    r->t_touch = t3 - t2;
    r->t_fin = t4 - t3;
    r->total = t4 - t0;
    r->pages = nlist;
    r->mmaps = mmaps;
    r->mprotects = mprotects;
    r->reservation = res;
    r->span = span;
}

static void usage(void) {
    fprintf(stderr, "usage: floor first PATH | floor cycle N PATH\n");
    exit(2);
}

int main(int argc, char **argv) {
    use_libm();
    (void)now_us();                /* first clock_gettime (vDSO) outside timing */
    memset(seen, 0, sizeof seen);  /* fault in our own .bss outside timing */
    memset(list, 0, sizeof list);
    struct result r;
    if (argc == 3 && !strcmp(argv[1], "first")) {
        load(argv[2], &r);
        printf("us %.3f map %.3f scan %.3f touch %.3f fin %.3f pages_written %lu mmaps %lu mprotects %lu span %zu\n",
               r.total, r.t_map, r.t_scan, r.t_touch, r.t_fin, r.pages, r.mmaps, r.mprotects, r.span);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "cycle")) {
        char *end;
        errno = 0;
        long n = strtol(argv[2], &end, 10);
        if (errno || *end || n < 1 || n > 100000000L) usage();
        double *t = malloc(sizeof(double) * (size_t)n), *tt = malloc(sizeof(double) * (size_t)n);
        if (!t || !tt) die(argv[3], "out of memory for the timings");
        for (long i = 0; i < n; i++) {
            double t0 = now_us();
            load(argv[3], &r);
            if (munmap(r.reservation, r.span)) die_errno(argv[3], "munmap");
            t[i] = now_us() - t0;
            tt[i] = r.t_touch;
        }
        double first = t[0];
        qsort(t, (size_t)n, sizeof(double), cmp_double);
        qsort(tt, (size_t)n, sizeof(double), cmp_double);
        printf("median_us %.3f p10 %.3f p90 %.3f first_iter %.3f touch_median %.3f pages_written %lu mmaps %lu "
               "mprotects %lu n %ld\n",
               t[n / 2], t[n / 10], t[n * 9 / 10], first, tt[n / 2], r.pages, r.mmaps, r.mprotects, n);
        free(t);
        free(tt);
        return 0;
    }
    usage();
}
