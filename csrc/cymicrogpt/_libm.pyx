# cython: language_level=3
"""Elementwise libm pow: Python's float `**`, vectorised, for the NumPy Adam.

NumPy's own `power` may take SIMD code paths whose last bits differ from libm's `pow`,
and `x**0.5` is not `sqrt(x)` in every last bit, so the vectorised optimizer calls the
same C `pow` that CPython's float `**` calls, one element at a time.
"""
from libc.math cimport pow as c_pow


cdef void pow_kernel(const double[::1] base,  # IN
                     double exponent,  # IN
                     double[::1] out,  # OUT
                     ) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(base.shape[0]):
        out[i] = c_pow(base[i], exponent)


def pow_array(const double[::1] base, double exponent, double[::1] out) -> None:
    """out[i] = base[i] ** exponent with libm pow (base must hold finite values > 0 or
    exponents where Python's float ** agrees with C pow, as in Adam: g**2, v_hat**0.5)."""
    if base.shape[0] != out.shape[0]:
        raise ValueError(f"pow_array: base has {base.shape[0]} elements, out has {out.shape[0]}")
    with nogil:
        pow_kernel(base, exponent, out)
