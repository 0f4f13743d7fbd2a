"""microgpt's Adam step in compiled passes over the parameters, bit-identical to Python.

Per parameter, in microgpt's operation order (reference.py, ReferenceAdam):

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1 ** (step + 1))
    v_hat = v / (1 - beta2 ** (step + 1))
    p -= lr_t * m_hat / (v_hat**0.5 + eps)
    g = 0

`*`, `+`, `-`, `/` are single IEEE operations, the same in C as in Python (the build
forbids contracting them into FMA), so their order is all that matters.  The two `**`
are Python's float ** (CPython's float_pow): its special cases (nan, inf, zero, one,
negative base), then libm `pow` with errno read.  `python_power` reproduces that line for
line; the pow shortcut (below) skips the libm call where its result is proven.

The step runs in passes, so that the plain arithmetic vectorises (SSE2 on any x86-64):
every g**2 first, into a scratch array (a vectorised pass settles the proven ones, libm
the rest, one by one), then per block of BLOCK parameters: the moments and their
estimates, every v_hat**0.5 (likewise), the parameter update.  Each element still sees
microgpt's expressions in microgpt's order; only the interleaving across elements
changes, which no result depends on.

Errors are atomic.  Where Python's loop would raise (OverflowError when a finite
gradient's square overflows, ZeroDivisionError) or produce a complex number (a negative
v_hat), nothing is changed: the squares are computed before any state is written, and
where they or the inputs leave any doubt (an overflow, a negative v, unusual scalars) the
elements are replayed one by one without storing, to find the first one Python would
stop at.

The pow shortcut
----------------
`x*x` and `sqrt(v)` are correctly rounded (IEEE 754).  libm `pow` is not, but the `pow`
of glibc >= 2.28 (sysdeps/ieee754/dbl-64/e_pow.c, from ARM's optimized-routines; musl
ships the same code) states a worst-case error of 0.54 ULP, the ULP taken at the exact
result (ARM's ulp tool measures it against the correctly rounded result, whose binade
is the exact result's in every case used here).  So if the exact value y lies within
0.45 ULP of a double p, every other double q is at least 1 - 0.45 = 0.55 ULP from y,
more than 0.54: pow must return p.  The argument, with its conditions:

1. ULP and binades.  Let p be a positive normal double that is NOT a power of two, and
   u = 2^(e-52) its spacing, where 2^e <= p < 2^(e+1).  Then p >= 2^e + u and
   p <= 2^(e+1) - u, so any y with |y - p| <= 0.45 u lies strictly inside
   (2^e, 2^(e+1)): ulp(y) = u, and p's neighbours p - u, p + u (and every double beyond)
   are >= 0.55 u from y.  A power of two p = 2^e has a neighbour below at u/2 only, so an
   exact value just above it could round (within 0.54 ULP) to that neighbour: powers of
   two always go to libm pow.

2. Square (g**2, x = |g|, Python squares |g|).  p = x*x (rounded) and the residual
   r = x^2 - p, which is exactly representable when no bit of x^2 falls below the
   subnormal grid: x = M 2^(k-52) with integer M < 2^53, so x^2 is a multiple of
   2^(2k-104) and r (|r| <= u/2) has at most 53 significant bits of that grid.  For
   2^-480 <= x <= 2^511: 2k - 104 >= -1064 > -1074 (r exact) and
   2^-960 <= x^2 <= 2^1022 (p normal and finite, so pow can neither overflow nor
   underflow there either).  `residual_of_square` computes r exactly (Dekker/Veltkamp's
   two-product: every partial product is exact in that range, the build forbids FMA
   contraction, so the compiler cannot reassociate them).  The exact square is p + r:
   if |r| <= 0.45 u, pow(x, 2.0) == p.

3. Root (v_hat**0.5, 2^-960 <= v <= 2^1000).  s = sqrt(v) (rounded) and rho = v - s^2,
   exactly representable (the classic property of a correctly rounded sqrt, barring
   underflow: s >= 2^-480 and the grid argument of 2 applies to s^2).
   `root_is_proven` computes it exactly: (hi, lo) = two-product(s, s) is exact,
   v - hi is exact (Sterbenz: hi is within a factor 2 of v), and (v - hi) - lo is the
   representable rho, so exact.  The exact root is s + d with
   d = rho / (sqrt(v) + s), and sqrt(v) >= s - u/2, so |d| <= |rho| / (2s - u/2).
   The test |rho| <= fl(0.89 u) * s (fl(0.89 u) exact: u is a power of two; the one
   rounding of the product adds at most a factor 1 + 2^-53) gives
   |d| <= 0.89 (1 + 2^-53) u s / (2 s (1 - 2^-54)) < 0.446 u: pow(v, 0.5) == s.

4. Everything else goes to `python_power` (Python's special cases, then libm pow):
   subnormal or tiny x and v (below 2^-480 and 2^-960), huge ones (x above 2^511: the
   only place g**2 can overflow), nan and inf, p or s a power of two, and every residual
   beyond the threshold (~10% of inputs, as |r|/u is spread evenly over [0, 0.5]).  Zero
   is settled without pow as well: Python's (+-0.0) ** 2.0 and (+-0.0) ** 0.5 are 0.0,
   and so are 0.0 * 0.0 and |sqrt(+-0.0)|.

The shortcut is only correct where libm's pow carries that documented bound; the caller
decides where (cymicrogpt.engines.adam detects glibc >= 2.28 at run time) and passes `shortcut`.
benchmarks/check_pow_shortcut.py compares it with libm pow on 10^8 random and
constructed near-midpoint inputs.
"""
from libc.errno cimport ERANGE, errno
from libc.math cimport NAN, fabs, floor, isinf, isnan, pow, sqrt
from libc.stdint cimport int32_t, uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    /* |x| range where x*x, its residual and pow(x, 2.0) are exact, normal and finite (2). */
    #define CYMG_SQUARE_MIN 0x1p-480
    #define CYMG_SQUARE_MAX 0x1p511
    /* v range where sqrt(v)'s residual is exact (3); the top keeps every product finite. */
    #define CYMG_ROOT_MIN 0x1p-960
    #define CYMG_ROOT_MAX 0x1p1000
    #define CYMG_SPLITTER 134217729.0  /* 2^27 + 1: Veltkamp's split into 26 + 27 bits */
    #define CYMG_EXPONENT_BITS 0x7FF0000000000000ULL
    #define CYMG_SQUARE_THRESHOLD (0.45 * 0x1p-52)  /* |r| <= 0.45 u, u = 2^e 2^-52 (2) */
    #define CYMG_ROOT_THRESHOLD (0.89 * 0x1p-52)  /* |rho| <= (0.89 u) s (3) */
    """
    const double SQUARE_MIN "CYMG_SQUARE_MIN"
    const double SQUARE_MAX "CYMG_SQUARE_MAX"
    const double ROOT_MIN "CYMG_ROOT_MIN"
    const double ROOT_MAX "CYMG_ROOT_MAX"
    const double SPLITTER "CYMG_SPLITTER"
    const uint64_t EXPONENT_BITS "CYMG_EXPONENT_BITS"
    const double SQUARE_THRESHOLD "CYMG_SQUARE_THRESHOLD"
    const double ROOT_THRESHOLD "CYMG_ROOT_THRESHOLD"

cdef extern from *:
    """
    #include <math.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    /* out[i] = sqrt(x[i]), correctly rounded (IEEE), as SSE2's sqrtpd where there is one:
       libm's errno contract (sqrt of a negative sets EDOM) keeps compilers from vectorising
       a sqrt() loop.  A negative x gives nan (no errno), which no caller takes as a proven
       root. */
    static void cymg_sqrt_array(const double* x, double* out, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__SSE2__)
        for (; i + 2 <= n; i += 2)
            _mm_storeu_pd(out + i, _mm_sqrt_pd(_mm_loadu_pd(x + i)));
    #endif
        for (; i < n; i++)
            out[i] = sqrt(x[i]);
    }
    """
    void sqrt_array "cymg_sqrt_array"(const double* x, double* out, Py_ssize_t n) noexcept nogil

cdef extern from *:
    """
    /* Can this CPU, and the OS, run AVX2 code?  (gcc and clang on x86: libgcc's check
       includes the OS's saving of the AVX registers.)  Elsewhere: no. */
    static int cymg_cpu_has_avx2(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    #else
        return 0;
    #endif
    }
    """
    int c_cpu_has_avx2 "cymg_cpu_has_avx2"() noexcept nogil

cdef enum:
    BLOCK = 256  # elements per block of the passes (a few stack arrays of this size)


# --- the pow shortcut's proofs (branch-free, so that their loops vectorise) ---------------
cdef inline double power_of_two_below(double x) noexcept nogil:
    """2^e for a positive normal double 2^e <= x < 2^(e+1): x with its fraction bits cleared."""
    cdef uint64_t bits
    memcpy(&bits, &x, sizeof(double))
    bits &= EXPONENT_BITS
    memcpy(&x, &bits, sizeof(double))
    return x


cdef inline double residual_of_square(double x, double p) noexcept nogil:
    """x*x - p exactly, for p = fl(x*x) and SQUARE_MIN <= |x| <= SQUARE_MAX (Dekker's
    two-product with Veltkamp's split; see 2)."""
    cdef double split = SPLITTER * x
    cdef double hi = split - (split - x)
    cdef double lo = x - hi
    return ((hi * hi - p) + 2.0 * (hi * lo)) + lo * lo


cdef inline bint square_is_proven(double x, double p) noexcept nogil:
    """Is p = fl(x*x) what Python's x ** 2.0 gives, for x = |g| (argument 2, or x == 0)?
    `&`, not `and`: every test runs (nan fails the comparisons), nothing branches."""
    cdef double binade = power_of_two_below(p)
    return (x == 0.0) | ((x >= SQUARE_MIN) & (x <= SQUARE_MAX) & (p != binade)
                         & (fabs(residual_of_square(x, p)) <= binade * SQUARE_THRESHOLD))


cdef inline bint root_is_proven(double v, double s) noexcept nogil:
    """Is |s|, s = sqrt(v), what Python's v ** 0.5 gives (argument 3, or v == 0: Python's
    (-0.0) ** 0.5 is 0.0)?  v - s*s is computed exactly as (v - hi) - lo from the
    two-product hi + lo = s*s.  Branch-free, like square_is_proven."""
    cdef double binade = power_of_two_below(s)
    cdef double hi = s * s
    return (v == 0.0) | ((v >= ROOT_MIN) & (v <= ROOT_MAX) & (s != binade)
                         & (fabs((v - hi) - residual_of_square(s, hi)) <= binade * ROOT_THRESHOLD * s))


# --- Python's x ** 2.0 and x ** 0.5, one element -------------------------------------------
cdef int python_power(double x,  # IN
                      double exponent,  # IN: 2.0 or 0.5 (positive, not an odd integer)
                      double* out,  # OUT: x ** exponent as CPython's float_pow computes it
                      ) noexcept nogil:
    """CPython's float_pow, line for line, for Adam's two exponents: its special cases,
    then libm pow with errno read as it reads it (_Py_ADJUST_ERANGE1)."""
    if isnan(x):
        out[0] = x
        return POW_EXACT
    if isinf(x):
        out[0] = fabs(x)  # (+-inf) ** positive non-odd = inf
        return POW_EXACT
    if x == 0.0:
        out[0] = 0.0  # also for -0.0 (where sqrt would keep the sign)
        return POW_EXACT
    if x < 0.0:
        if exponent != floor(exponent):
            return POW_COMPLEX  # Python returns a complex number
        x = -x  # an even exponent: pow(-x), not negated
    if x == 1.0:
        out[0] = 1.0
        return POW_EXACT
    errno = 0
    out[0] = pow(x, exponent)
    if errno == 0:
        return POW_OVERFLOW if isinf(out[0]) else POW_LIBM
    if errno == ERANGE:
        return POW_LIBM if out[0] == 0.0 else POW_OVERFLOW  # underflow to 0 is no error
    return POW_DOMAIN


cdef inline int python_square(double x,  # IN
                              double* out,  # OUT: x ** 2.0 as Python computes it
                              ) noexcept nogil:
    cdef double a = fabs(x)  # Python squares |x|
    if SQUARE_MIN <= a <= SQUARE_MAX:  # no special case, result normal: pow sets no errno
        out[0] = pow(a, 2.0)  # C99 makes pow(1, y) 1.0, Python's special case
        return POW_LIBM
    return python_power(x, 2.0, out)


cdef inline int python_root(double x,  # IN
                            double* out,  # OUT: x ** 0.5 as Python computes it
                            ) noexcept nogil:
    if ROOT_MIN <= x <= ROOT_MAX:  # no special case, result normal: pow sets no errno
        out[0] = pow(x, 0.5)
        return POW_LIBM
    return python_power(x, 0.5, out)


# --- Python's x ** 2.0 and x ** 0.5 over a block: proven pass, then the rest ------------------
cdef inline void prove_squares(const double* x,  # IN (n,)
                               double* out,  # OUT (n,)
                               Py_ssize_t n) noexcept nogil:
    """out[i] = x[i]*x[i] where that is proven to be Python's x[i] ** 2.0, else nan."""
    cdef Py_ssize_t i
    cdef double a
    for i in range(n):  # vectorised
        a = fabs(x[i])
        out[i] = a * a if square_is_proven(a, a * a) else NAN


cdef inline void prove_roots(const double* x,  # IN (n,)
                             double* out,  # OUT (n,)
                             Py_ssize_t n) noexcept nogil:
    """out[i] = |sqrt(x[i])| where that is proven to be Python's x[i] ** 0.5, else nan."""
    cdef Py_ssize_t i
    sqrt_array(x, out, n)
    for i in range(n):  # vectorised; fabs: sqrt(-0.0) is -0.0, Python's (-0.0)**0.5 is 0.0
        out[i] = fabs(out[i]) if root_is_proven(x[i], out[i]) else NAN


cdef Py_ssize_t python_powers(const double* x,  # IN (n,)
                              double* out,  # OUT (n,): x ** 2.0 or x ** 0.5, as Python
                              Py_ssize_t n,  # <= BLOCK
                              bint square,  # IN: ** 2.0, else ** 0.5
                              bint shortcut,  # IN: may proven x*x / sqrt replace libm pow?
                              Py_ssize_t* libm_calls,  # IN/OUT: += pow calls made
                              int* status,  # OUT: the failing element's PowStatus
                              ) noexcept nogil:
    """The index of the first element where Python raises (or makes a complex number),
    else -1.  With the shortcut, a vectorised pass settles the proven elements and only
    the others, gathered without a branch, go to libm one by one."""
    cdef int32_t pending[BLOCK]
    cdef Py_ssize_t i, j, count = 0
    cdef int result
    if shortcut:
        if square:
            prove_squares(x, out, n)
        else:
            prove_roots(x, out, n)
        for i in range(n):  # every index is written, only the unproven (nan) ones kept
            pending[count] = <int32_t>i
            count += isnan(out[i])
    else:
        for i in range(n):
            pending[i] = <int32_t>i
        count = n
    for j in range(count):
        i = pending[j]
        result = python_square(x[i], &out[i]) if square else python_root(x[i], &out[i])
        if result < 0:
            status[0] = result
            return i
        libm_calls[0] += result  # POW_LIBM is 1, POW_EXACT 0
    return -1


cdef Py_ssize_t power_kernel(const double[::1] base, bint square, bint shortcut, double[::1] out,
                             Py_ssize_t* libm_calls, int* status) noexcept nogil:
    """out[i] = base[i] ** exponent, block by block; the first index that raises, or -1."""
    cdef Py_ssize_t start = 0, failed, n = base.shape[0]
    libm_calls[0] = 0
    while start < n:
        failed = python_powers(&base[start], &out[start], min(<Py_ssize_t>BLOCK, n - start),
                               square, shortcut, libm_calls, status)
        if failed >= 0:
            return start + failed
        start += BLOCK
    return -1


# --- Adam --------------------------------------------------------------------------------
cdef int adam_element(double param, double grad, double m, double v,  # IN
                      const AdamScalars* s,  # IN
                      AdamElement* out,  # OUT: the updated param, m, v
                      ) noexcept nogil:
    """One parameter's update, microgpt's expressions in its order, one element at a time
    (plain libm pow: the shortcut gives the same values); returns < 0 (a PowStatus) where
    Python raises, before computing the rest."""
    cdef double square, root, m_hat, v_hat, denominator
    cdef int status
    m = s.beta1 * m + s.one_minus_beta1 * grad
    status = python_square(grad, &square)
    if status < 0:
        return status
    v = s.beta2 * v + s.one_minus_beta2 * square
    if s.bias_correction1 == 0.0 or s.bias_correction2 == 0.0:
        return ADAM_ZERO_DIVISION
    m_hat = m / s.bias_correction1
    v_hat = v / s.bias_correction2
    status = python_root(v_hat, &root)
    if status < 0:
        return status
    denominator = root + s.eps
    if denominator == 0.0:
        return ADAM_ZERO_DIVISION
    out.param = param - s.lr_t * m_hat / denominator
    out.m = m
    out.v = v
    return POW_EXACT


cdef inline bint scalars_keep_signs(const AdamScalars* s) noexcept nogil:
    """True when v >= 0 implies v_hat >= 0 (or nan) and a denominator > 0 (or nan), so that
    with no negative v an element can only raise through g**2."""
    return (s.beta2 >= 0.0 and s.one_minus_beta2 >= 0.0 and s.bias_correction1 > 0.0
            and s.bias_correction2 > 0.0 and s.eps > 0.0)


cdef inline bint any_negative(const double[::1] v) noexcept nogil:
    cdef Py_ssize_t i
    cdef double count = 0.0  # a double, so that the loop vectorises
    for i in range(v.shape[0]):
        count += 1.0 if v[i] < 0.0 else 0.0
    return count > 0.0


cdef void update_block(double* params, double* grads, double* m, double* v,  # IN/OUT (n,)
                       const double* squares,  # IN (n,): grads ** 2
                       Py_ssize_t n,  # IN: <= BLOCK
                       const AdamScalars* s,  # IN
                       bint shortcut,  # IN
                       ) noexcept nogil:
    """The rest of the step for n parameters that cannot raise, in three passes."""
    cdef double m_hats[BLOCK]
    cdef double v_hats[BLOCK]
    cdef double roots[BLOCK]
    cdef Py_ssize_t i, libm_calls = 0
    cdef int status
    # locals: stores into the arrays could alias *s for all the compiler knows
    cdef double beta1 = s.beta1, beta2 = s.beta2, one_minus_beta1 = s.one_minus_beta1
    cdef double one_minus_beta2 = s.one_minus_beta2, bias_correction1 = s.bias_correction1
    cdef double bias_correction2 = s.bias_correction2, lr_t = s.lr_t, eps = s.eps
    for i in range(n):  # vectorised
        m[i] = beta1 * m[i] + one_minus_beta1 * grads[i]
        v[i] = beta2 * v[i] + one_minus_beta2 * squares[i]
        m_hats[i] = m[i] / bias_correction1
        v_hats[i] = v[i] / bias_correction2
    python_powers(v_hats, roots, n, False, shortcut, &libm_calls, &status)  # cannot raise here
    for i in range(n):  # vectorised
        params[i] = params[i] - lr_t * m_hats[i] / (roots[i] + eps)
        grads[i] = 0.0


cdef Py_ssize_t adam_kernel(double[::1] params, double[::1] grads, double[::1] m, double[::1] v,
                            double[::1] squares, const AdamScalars* s, bint shortcut,
                            int* status) noexcept nogil:
    """The step over all parameters, or nothing: the index of the first parameter whose
    update Python would raise on (status says why), else -1 after updating them all."""
    cdef Py_ssize_t i, start, n = params.shape[0], libm_calls = 0
    cdef AdamElement unused
    # Every g**2 first, into the scratch: no state is written yet.
    if (power_kernel(grads, True, shortcut, squares, &libm_calls, status) >= 0
            or any_negative(v) or not scalars_keep_signs(s)):
        for i in range(n):  # rare: replay one by one, without storing, to the first error
            status[0] = adam_element(params[i], grads[i], m[i], v[i], s, &unused)
            if status[0] < 0:
                return i
        power_kernel(grads, True, shortcut, squares, &libm_calls, status)  # all of them, then
    start = 0
    while start < n:
        update_block(&params[start], &grads[start], &m[start], &v[start], &squares[start],
                     min(<Py_ssize_t>BLOCK, n - start), s, shortcut)
        start += BLOCK
    return -1


# --- Python wrappers ---------------------------------------------------------------------
cdef inline bint overlap(double[::1] a, double[::1] b) noexcept:
    """Do two non-empty arrays share memory?"""
    return a.shape[0] > 0 and b.shape[0] > 0 and &a[0] < &b[0] + b.shape[0] and &b[0] < &a[0] + a.shape[0]


def adam_step(double[::1] params, double[::1] grads, double[::1] m, double[::1] v,
              double[::1] squares, *, double beta1, double beta2, double eps,
              double one_minus_beta1, double one_minus_beta2, double bias_correction1,
              double bias_correction2, double lr_t, bint shortcut) -> None:
    """microgpt's Adam step in place: params, m, v updated, grads zeroed; bit-identical to
    the per-parameter Python loop given the same scalars, computed in Python (AdamScalars).
    `squares` is scratch space of the same length (overwritten).

    Raises where that loop would (OverflowError when a finite gradient's square overflows,
    ZeroDivisionError) and ValueError where it would make a complex number (negative
    v_hat), in every case before changing anything.  `shortcut` allows the proven
    x*x / sqrt shortcut for pow (only where libm's pow has the documented bound)."""
    cdef Py_ssize_t n = params.shape[0], failed
    cdef int status = 0
    cdef AdamScalars s = AdamScalars(
        beta1=beta1, beta2=beta2, eps=eps, one_minus_beta1=one_minus_beta1,
        one_minus_beta2=one_minus_beta2, bias_correction1=bias_correction1,
        bias_correction2=bias_correction2, lr_t=lr_t)
    if not (grads.shape[0] == m.shape[0] == v.shape[0] == squares.shape[0] == n):
        raise ValueError(f"adam_step: params, grads, m, v, squares have {n}, {grads.shape[0]}, "
                         f"{m.shape[0]}, {v.shape[0]}, {squares.shape[0]} elements")
    if (overlap(params, grads) or overlap(params, m) or overlap(params, v) or overlap(grads, m)
            or overlap(grads, v) or overlap(m, v) or overlap(squares, params)
            or overlap(squares, grads) or overlap(squares, m) or overlap(squares, v)):
        raise ValueError("adam_step: params, grads, m, v and squares must not share memory")
    with nogil:
        failed = adam_kernel(params, grads, m, v, squares, &s, shortcut, &status)
    if failed < 0:
        return
    where = f"parameter {failed} (gradient {grads[failed]!r}, v {v[failed]!r})"
    if status == POW_OVERFLOW:
        raise OverflowError(f"Adam: the square of the gradient of {where} overflows; nothing was updated")
    if status == ADAM_ZERO_DIVISION:
        raise ZeroDivisionError(f"Adam: division by zero at {where}; nothing was updated")
    if status == POW_COMPLEX:
        raise ValueError(f"Adam: negative v_hat at {where} (Python's ** 0.5 would give a complex "
                         "number); nothing was updated")
    raise ValueError(f"Adam: libm pow failed (errno) at {where}; nothing was updated")


def cpu_has_avx2() -> bool:
    """Can this process run the AVX2 build of this module (cymicrogpt._adam_avx2)?"""
    return c_cpu_has_avx2() != 0


def power_array(const double[::1] base, double exponent, double[::1] out, *, bint shortcut) -> int:
    """out[i] = base[i] ** exponent exactly as Python's float ** computes it, for Adam's
    two exponents (2.0 and 0.5), through the very passes the Adam step runs; returns how
    many elements called libm pow.  Raises at the first element where Python raises
    (OverflowError) or would return a complex number (ValueError); out is then partial."""
    cdef Py_ssize_t libm_calls = 0, failed
    cdef int status = 0
    cdef bint square = exponent == 2.0
    if not square and exponent != 0.5:
        raise ValueError(f"power_array: exponent must be 2.0 or 0.5, got {exponent!r}")
    if base.shape[0] != out.shape[0]:
        raise ValueError(f"power_array: base has {base.shape[0]} elements, out has {out.shape[0]}")
    if base.shape[0] and &base[0] < &out[0] + out.shape[0] and &out[0] < &base[0] + base.shape[0]:
        raise ValueError("power_array: base and out must not share memory")
    with nogil:
        failed = power_kernel(base, square, shortcut, out, &libm_calls, &status)
    if failed < 0:
        return libm_calls
    message = f"{base[failed]!r} ** {exponent!r} (element {failed})"
    if status == POW_OVERFLOW:
        raise OverflowError(f"{message} overflows")
    if status == POW_COMPLEX:
        raise ValueError(f"{message} is complex")
    raise ValueError(f"{message}: libm pow failed (errno)")
