/* TLS descriptors (-mtls-dialect=gnu2: R_X86_64_TLSDESC). Built twice:
 * libtls_desc.so uses dynamic TLS only; libtls_desc_static.so
 * (-DDESC_STATIC) also has one initial-exec variable, which makes the
 * whole block static (DF_STATIC_TLS, R_X86_64_TPOFF64), so its descriptors
 * resolve to a constant offset. desc_tls_var is exported (the descriptor
 * names the symbol); desc_local is not (the descriptor carries only an
 * offset); desc_text needs a relocated pointer in .tdata. */
#include <stdint.h>
#include <stdio.h>

static const char desc_message[] = "desc-hello";

__thread long desc_tls_var = 6;
static __thread long desc_local = 60;
__thread const char *desc_text = desc_message;
__thread long desc_zero;
__thread char desc_buf[160];
#ifdef DESC_STATIC
__thread long desc_ie __attribute__((tls_model("initial-exec"))) = 600;
#define IE_VALUE desc_ie++
#else
#define IE_VALUE 0L
#endif

const char *desc_report(void)
{
    desc_tls_var++;
    desc_local += 10;
    snprintf(desc_buf, sizeof desc_buf, "var=%ld local=%ld text=%s zero=%ld ie=%ld",
             desc_tls_var, desc_local, desc_text, desc_zero, IE_VALUE);
    desc_zero += 3;
    return desc_buf;
}

long desc_tls_get(void) { return desc_tls_var; }
uintptr_t desc_tls_addr(void) { return (uintptr_t)&desc_tls_var; }
