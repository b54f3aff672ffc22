/* TLS descriptors (-mtls-dialect=gnu2, R_X86_64_TLSDESC): mmld refuses them
 * clearly rather than mis-binding them. */
__thread long desc_tls_var = 6;
long desc_tls_get(void) { return desc_tls_var; }
