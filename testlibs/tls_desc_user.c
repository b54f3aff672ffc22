/* TLS descriptors against another library's variable (-mtls-dialect=gnu2,
 * R_X86_64_TLSDESC against desc_tls_var of libtls_desc.so, dynamic TLS, or
 * of libtls_desc_static.so, a static block). The report shows the variable
 * as this library sees it and as its owner does: one variable. */
#include <stdio.h>

extern __thread long desc_tls_var;
long desc_tls_get(void);
static __thread char user_buf[96];

const char *desc_user_report(void)
{
    desc_tls_var += 100;
    snprintf(user_buf, sizeof user_buf, "user=%ld owner=%ld", desc_tls_var, desc_tls_get());
    return user_buf;
}
