"""pow_shortcut.h's declarations, for every module that computes x ** -1.0, -2.0, -0.5 or
-1.5 as libm pow gives it (the fused pass, _fused.pyx; the graph engine's ops, _ops.pyx):
proven without pow where the caller allows it (`shortcut`: engines.adam.POW_SHORTCUT) and
the header's argument settles it, else libm pow.  The header picks its exact products per
build: one FMA where the module is compiled with FMA, Dekker's two-product elsewhere (the
same doubles)."""

cdef extern from "pow_shortcut.h" nogil:
    enum:  # which power: x ** -1.0, -2.0, -0.5, -1.5
        MINUS_ONE "CYMG_MINUS_ONE"
        MINUS_TWO "CYMG_MINUS_TWO"
        MINUS_HALF "CYMG_MINUS_HALF"
        MINUS_THREE_HALVES "CYMG_MINUS_THREE_HALVES"
    const double MINUS_ONE_MIN "CYMG_MINUS_ONE_MIN"
    const double MINUS_ONE_MAX "CYMG_MINUS_ONE_MAX"
    const double MINUS_TWO_MIN "CYMG_MINUS_TWO_MIN"
    const double MINUS_TWO_MAX "CYMG_MINUS_TWO_MAX"
    const double MINUS_HALF_MIN "CYMG_MINUS_HALF_MIN"
    const double MINUS_HALF_MAX "CYMG_MINUS_HALF_MAX"
    const double MINUS_THREE_HALVES_MIN "CYMG_MINUS_THREE_HALVES_MIN"
    const double MINUS_THREE_HALVES_MAX "CYMG_MINUS_THREE_HALVES_MAX"
    const double MARGIN "CYMG_MARGIN"
    const double TAIL_ALLOWANCE "CYMG_TAIL_ALLOWANCE"
    # x ** cymg_exponent(which) as libm pow gives it: proven without pow where `shortcut`
    # and the header's argument settles it, else libm pow
    double power "cymg_power"(double x, int which, bint shortcut) noexcept
    # 1 and *out = that power where the argument settles it, else 0
    bint proven_power "cymg_proven_power"(double x, int which, double* out) noexcept
