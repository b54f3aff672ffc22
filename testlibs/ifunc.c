/*
 * libifunc: exercises STT_GNU_IFUNC.
 *
 * ifunc_value is exported, hence preemptible: references to it from inside
 * the library become symbolic relocations (JUMP_SLOT for the call,
 * R_X86_64_64 for the pointer initialiser) whose target is an IFUNC symbol,
 * so the loader must call the resolver rather than use st_value.
 * local_value is hidden, so the linker turns references to it into
 * R_X86_64_IRELATIVE.
 *
 * Every function here returns 42 when resolved correctly and -1 when the
 * loader used the resolver itself (or the wrong implementation) instead.
 */

static long impl_42(void)
{
    return 42;
}

static long impl_wrong(void)
{
    return -1;
}

/* Always 0; volatile so the compiler keeps impl_wrong reachable and a
 * mis-resolution stays detectable instead of being optimised out. */
static volatile int pick_wrong;
static long resolver_calls;

/* Runs during relocation processing, possibly before this object's other
 * relocations are applied, so it may only touch PC-relative static data. */
static long (*resolve_ifunc_value(void))(void)
{
    resolver_calls++;
    return pick_wrong ? impl_wrong : impl_42;
}

long ifunc_value(void) __attribute__((ifunc("resolve_ifunc_value")));

__attribute__((visibility("hidden"))) long local_value(void)
    __attribute__((ifunc("resolve_ifunc_value")));

long call_ifunc_value(void)
{
    return ifunc_value();
}

long (*ifunc_ptr)(void) = ifunc_value;

long call_ifunc_ptr(void)
{
    return ifunc_ptr();
}

long call_local_ifunc(void)
{
    return local_value();
}

/* How often the resolver ran: > 0 once loaded. glibc may call it once per
 * relocation, so tests should not insist on an exact number. */
long ifunc_resolver_calls(void)
{
    return resolver_calls;
}
