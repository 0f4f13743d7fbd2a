"""Signatures of microgpt's Adam step as one compiled loop (bodies in _adam.pyx)."""


cdef struct AdamScalars:
    # Every scalar Python evaluates once per step in microgpt's Adam, computed by the caller
    # in Python (float semantics) and passed in unchanged.
    double beta1
    double beta2
    double eps
    double one_minus_beta1  # 1 - beta1
    double one_minus_beta2  # 1 - beta2
    double bias_correction1  # 1 - beta1 ** (step + 1)
    double bias_correction2  # 1 - beta2 ** (step + 1)
    double lr_t  # lr * (1 - step / num_steps)


cdef enum PowStatus:
    # What Python's float ** does for one element; >= 0 means a value was produced.
    POW_EXACT = 0  # a special case or the proven shortcut (x*x, sqrt): no libm call
    POW_LIBM = 1  # libm pow was called
    POW_OVERFLOW = -1  # Python raises OverflowError (finite base, infinite result)
    POW_DOMAIN = -2  # Python raises ValueError (libm set an errno other than ERANGE)
    POW_COMPLEX = -3  # negative base ** 0.5: Python returns a complex number
    ADAM_ZERO_DIVISION = -4  # the update divides by v_hat**0.5 + eps == 0
    ADAM_NOT_FINITE = -5  # a gradient is nan or infinite, and the step was asked to refuse it


cdef struct AdamElement:
    # One parameter's state after the step.
    double param
    double m
    double v


cdef Py_ssize_t power_kernel(const double* base,  # IN (n,)
                             Py_ssize_t n,  # IN
                             bint square,  # IN: ** 2.0, else ** 0.5
                             bint shortcut,  # IN: may the proven x*x / sqrt replace pow?
                             double* out,  # OUT (n,)
                             Py_ssize_t* libm_calls,  # OUT
                             int* status,  # OUT: the failing element's PowStatus
                             ) noexcept nogil

cdef Py_ssize_t adam_kernel(double* params,  # IN/OUT (n,)
                            double* grads,  # IN/OUT (n,): zeroed
                            double* m,  # IN/OUT (n,)
                            double* v,  # IN/OUT (n,)
                            double* squares,  # OUT (n,): scratch, grads ** 2
                            Py_ssize_t n,  # IN
                            const AdamScalars* s,  # IN
                            bint shortcut,  # IN: may the proven x*x / sqrt replace pow?
                            bint v_nonnegative,  # IN: is no v[i] negative? (then v is not checked)
                            bint refuse_non_finite,  # IN: refuse a nan or infinite gradient (ADAM_NOT_FINITE)
                            int* status,  # OUT: the failing element's PowStatus
                            ) noexcept nogil
