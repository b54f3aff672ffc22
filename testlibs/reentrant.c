/*
 * libreentrant: a constructor that calls back into its host, which then
 * loads another library with mmld while this library's own load is still
 * in progress (the loader lock is held by the same thread).
 *
 * Protocol: if MMLD_REENTRANT_CALLBACK is set, it holds the address of a
 * `void (*)(void)` in the host (decimal or 0x hex); the constructor calls
 * it once. Without the variable the constructor does nothing, so loading
 * or checking this library elsewhere is harmless.
 */
#include <stdlib.h>

typedef void (*reentrant_callback)(void);

static int callback_calls;

__attribute__((constructor)) static void reentrant_init(void)
{
    const char *value = getenv("MMLD_REENTRANT_CALLBACK");
    if (value == NULL || *value == '\0')
        return;
    unsigned long long addr = strtoull(value, NULL, 0);
    if (addr == 0)
        return;
    reentrant_callback callback = (reentrant_callback)(unsigned long)addr;
    callback();
    callback_calls++;
}

/* How many times the constructor called back (1 after a load with the
 * variable set). */
int reentrant_callback_calls(void)
{
    return callback_calls;
}
