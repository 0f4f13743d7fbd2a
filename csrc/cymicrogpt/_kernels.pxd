"""The vector kernels of the graph's forward and backward passes: signatures (see _kernels.pyx)."""

# y[i] += x[i] * a for i < n (y and x do not overlap)
cdef void axpy(double* y, const double* x, double a, Py_ssize_t n) noexcept nogil

# out[r] = sum_j w[r * cols + j] * x[j] for r < rows, each sum left to right from 0.0
# (out overlaps neither w nor x)
cdef void dot_rows(const double* w, Py_ssize_t cols, const double* x, double* out, Py_ssize_t rows) noexcept nogil
