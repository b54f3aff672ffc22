/* An initial-exec TLS block of 64 KiB: larger than glibc's whole default
 * static TLS surplus (1,664 bytes on glibc 2.36), so both glibc's dlopen and
 * mmld must refuse it, unless GLIBC_TUNABLES=glibc.rtld.optional_static_tls
 * reserves more. */
__thread char big_block[65536] __attribute__((tls_model("initial-exec"))) = { 7 };

int big_first(void) { return big_block[0] + big_block[65535]; }
