/* Initial-exec TLS (-ftls-model=initial-exec: R_X86_64_TPOFF64 against the
 * library's own variables, DF_STATIC_TLS). The block must sit at one offset
 * from the thread pointer in every thread, so it comes from glibc's static
 * TLS surplus. .tdata holds pointers that need relocation (R_X86_64_64
 * against an exported global, R_X86_64_RELATIVE to a string), so the image
 * must be taken after relocation; .tbss holds a zeroed counter and the
 * report buffer; one variable is 64-byte aligned. ie_report() prints the
 * calling thread's view and then changes it, so each thread's first report
 * shows the initial values and the second shows that thread's own changes. */
#include <stdint.h>
#include <stdio.h>

int ie_global = 42;
static const char ie_message[] = "ie-hello";

__thread long ie_counter = 100;
__thread int *ie_ptr = &ie_global;
__thread const char *ie_text = ie_message;
__thread long ie_zero;
__thread long ie_aligned __attribute__((aligned(64))) = 9;
__thread char ie_buf[160];

const char *ie_report(void)
{
    ie_counter++;
    snprintf(ie_buf, sizeof ie_buf, "counter=%ld ptr=%d text=%s zero=%ld aligned=%ld/%d",
             ie_counter, ie_ptr ? *ie_ptr : -1, ie_text, ie_zero, ie_aligned,
             (int)((uintptr_t)&ie_aligned % 64));
    ie_zero += 5;
    ie_aligned *= 2;
    return ie_buf;
}

long static_tls_get(void) { return ie_counter; }
uintptr_t ie_counter_addr(void) { return (uintptr_t)&ie_counter; }
