/* Thread-local storage in an mmld-loaded library: initialised (.tdata),
 * zero-initialised (.tbss), over-aligned, and a .tdata pointer that needs a
 * relocation before the TLS image is taken. Built with the default
 * (general-dynamic) model, so every access goes through __tls_get_addr. */
#include <stdint.h>

static const char tls_message[] = "tls-hello";

__thread long tls_counter = 100;
__thread long tls_zero;
__thread long tls_aligned[8] __attribute__((aligned(64)));
__thread const char *tls_text = tls_message;

long tls_bump(long by) { tls_counter += by; return tls_counter; }
long tls_get_zero(void) { return tls_zero; }
void tls_set_zero(long v) { tls_zero = v; }
uintptr_t tls_aligned_addr(void) { return (uintptr_t)&tls_aligned[0]; }
void tls_aligned_set(long v) { tls_aligned[7] = v; }
long tls_aligned_get(void) { return tls_aligned[7]; }
const char *tls_get_text(void) { return tls_text; }
uintptr_t tls_counter_addr(void) { return (uintptr_t)&tls_counter; }
