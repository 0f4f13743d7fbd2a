"""The vector kernels of the graph's forward and backward passes: signatures (see _kernels.pyx)."""

# y[i] += x[i] * a, then u[i] += v[i] * a, for i < n (y and u disjoint or the same range, neither
# overlapping x or v): a DOT node's backward
cdef void axpy_pair(double* y, const double* x, double* u, const double* v, double a, Py_ssize_t n) noexcept nogil

# out[r] = sum_j w[r * cols + j] * x[j] for r < rows, each sum left to right from 0.0
# (out overlaps neither w nor x)
cdef void dot_rows(const double* w, Py_ssize_t cols, const double* x, double* out, Py_ssize_t rows) noexcept nogil

# for i = 0 .. count-1 in turn: y[j] += m[i * stride + j] * c[i * cstep] for j < n (a negative
# stride walks rows backwards; y overlaps neither m nor c)
cdef void axpy_rows(double* y, Py_ssize_t n, const double* m, Py_ssize_t stride, const double* c, Py_ssize_t cstep,
                    Py_ssize_t count) noexcept nogil

# the same from 0.0: y[j] = sum over i < count of m[i * stride + j] * c[i * cstep], for j < n, each a
# chain of additions in i's order from 0.0 (with m a matrix transposed, dot_rows' sums)
cdef void sum_rows(double* y, Py_ssize_t n, const double* m, Py_ssize_t stride, const double* c, Py_ssize_t cstep,
                   Py_ssize_t count) noexcept nogil

# wt[j * rows + r] = w[r * cols + j]: wt (cols, rows) is w (rows, cols) transposed (no overlap)
cdef void transpose(const double* w, Py_ssize_t rows, Py_ssize_t cols, double* wt) noexcept nogil

# a[r * cols + j] += x[j] * g[r] for r < rows, j < cols (a overlaps neither x nor g)
cdef void outer_add(double* a, const double* x, const double* g, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil

# outer_add of count pairs (xs[e], gs[e]) into one matrix, e = 0, 1, ... in turn: each element's
# contributions in e's order, the same bits as count calls (a overlaps no xs[e] or gs[e])
cdef void outer_add_many(double* a, Py_ssize_t rows, Py_ssize_t cols, const double* const* xs, const double* const* gs,
                         Py_ssize_t count) noexcept nogil

# No nan or inf in x[0:n]
cdef bint all_finite(const double* x, Py_ssize_t n) noexcept nogil
