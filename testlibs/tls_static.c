/* Initial-exec TLS against its own variable (R_X86_64_TPOFF64, DF_STATIC_TLS):
 * needs the static TLS block, which cannot grow after start-up. mmld must
 * refuse it with a clear error. */
__thread long static_tls_var = 5;
long static_tls_get(void) { return static_tls_var; }
