"""The `fused` rung of the ladder: microgpt's whole training step fused into hand-written
loops, with no graph at all ("fused" means only this in the project; the graph engines'
n-ary node for a dot product is the DOT node).

Loops over the flat float64 weights: the forward stores the activations of every position
and layer, the backward walks them in reverse (layer by layer, because a layer's keys and
values at earlier positions receive gradient from later positions).  The math is
microgpt's; the summation order is not, so results agree with the reference to ~1e-16
relative, not bit for bit.  This is the ceiling of a scalar CPU implementation at batch 1,
against which the graph engines are measured.  Its constants (rmsnorm's eps, Adam's) come
from config.py through the Python wrapper, ladder/fused.py.
"""
from libc.math cimport exp, log, sqrt, pow
from libc.string cimport memset

import numpy as np


# Slots of the weight matrices.  Anonymous enums: their members are plain ints, which
# index memoryviews (a named enum type does not).
cdef enum:  # index into FusedGPT.off: the matrices outside the blocks
    WTE, WPE, LM_HEAD, N_MODEL_MATRICES


cdef enum:  # column of FusedGPT.layer_off: one block's matrices, in config.LAYER_MATRICES order
    WQ, WK, WV, WO, FC1, FC2, N_LAYER_MATRICES


# --- small kernels on raw pointers (nogil) -------------------------------------------------
cdef inline void matvec(const double* W,  # IN (rows, cols) row-major
                        const double* x,  # IN (cols,)
                        double* out,  # OUT (rows,)
                        Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef double acc
    for r in range(rows):
        acc = 0.0
        for j in range(cols):
            acc += W[r * cols + j] * x[j]
        out[r] = acc


cdef inline void matvec_t_add(const double* W,  # IN (rows, cols)
                              const double* dy,  # IN (rows,)
                              double* dx,  # IN/OUT (cols,): dx += W^T dy
                              Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef double d
    for r in range(rows):
        d = dy[r]
        for j in range(cols):
            dx[j] += W[r * cols + j] * d


cdef inline void outer_add(double* G,  # IN/OUT (rows, cols): G += dy x^T
                           const double* dy,  # IN (rows,)
                           const double* x,  # IN (cols,)
                           Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef double d
    for r in range(rows):
        d = dy[r]
        for j in range(cols):
            G[r * cols + j] += d * x[j]


cdef inline double rmsnorm(const double* x, double* y, Py_ssize_t n, double eps) noexcept nogil:
    """y = x * (mean(x^2) + eps)^-1/2; returns the scale."""
    cdef Py_ssize_t i
    cdef double ms = 0.0, s
    for i in range(n):
        ms += x[i] * x[i]
    s = pow(ms / n + eps, -0.5)
    for i in range(n):
        y[i] = x[i] * s
    return s


cdef inline void rmsnorm_backward(const double* x, double s, const double* dy,
                                  double* dx,  # IN/OUT (n,): dx += d(x*s)/dx^T dy
                                  Py_ssize_t n) noexcept nogil:
    # y_i = x_i s, s = (ms + eps)^-1/2, ms = sum(x^2)/n  =>  dx_i = s dy_i - s^3 x_i (dy.x) / n
    cdef Py_ssize_t i
    cdef double dot = 0.0
    for i in range(n):
        dot += dy[i] * x[i]
    for i in range(n):
        dx[i] += s * dy[i] - s * s * s * x[i] * dot / n


cdef int check_inside(const Py_ssize_t[::1] starts, tuple sizes, Py_ssize_t n_weights) except -1:
    """Every matrix (its start, its size) lies inside the weights: the loops do not check."""
    cdef Py_ssize_t i
    for i in range(starts.shape[0]):
        if starts[i] < 0 or starts[i] + <Py_ssize_t>sizes[i] > n_weights:
            raise ValueError(f"a matrix of {sizes[i]} weights at offset {starts[i]} lies outside "
                             f"the {n_weights} weights")
    return 0


cdef class FusedGPT:
    """Weights, gradients and activation buffers of one model; see the module docstring.

    offsets: where wte, wpe, lm_head start in the flat weights (slots WTE, WPE, LM_HEAD);
    layer_offsets: (n_layer, 6), where each block's matrices start (slots WQ ... FC2);
    hidden: the MLP's width F; rmsnorm_eps: config.RMSNORM_EPS.
    """
    cdef readonly Py_ssize_t n_layer, n_embd, n_head, head_dim, vocab, block, hidden  # hidden: MLP width F
    cdef readonly double rmsnorm_eps
    cdef readonly object weights, grads  # NumPy (P,)
    cdef double[::1] w, g
    cdef Py_ssize_t[::1] off  # (N_MODEL_MATRICES,): off[WTE] ... off[LM_HEAD]
    cdef Py_ssize_t[:, ::1] layer_off  # (L, N_LAYER_MATRICES): layer_off[l, WQ] ... layer_off[l, FC2]
    # activations: (L, B, E) unless noted
    cdef double[:, ::1] emb  # (B, E) token + position embedding
    cdef double[::1] emb_scale  # (B,)
    cdef double[:, :, ::1] x_in, xn1, q, k, v, heads, x_mid, xn2  # (L, B, E)
    cdef double[:, :, ::1] h1, relu_out  # (L, B, F)
    cdef double[:, ::1] s1, s2  # (L, B) rmsnorm scales
    cdef double[:, :, :, ::1] att  # (L, B, H, B) attention weights
    cdef double[:, ::1] x_top  # (B, E) input of lm_head
    cdef double[:, ::1] probs  # (B, V)
    # gradient scratch
    cdef double[:, ::1] dx, dq, dk, dv, dheads, dmid, dxn  # (B, E)
    cdef double[::1] dh, dlogits, datt  # (F,), (V,), (B,)

    def __init__(self, int n_layer, int n_embd, int n_head, int vocab, int block, int hidden, offsets,
                 layer_offsets, double[::1] weights, double rmsnorm_eps):
        if min(n_layer, n_embd, n_head, vocab, block, hidden) <= 0:  # before `%`: cdivision has no zero check
            raise ValueError("n_layer, n_embd, n_head, vocab, block and hidden must be positive")
        if n_embd % n_head:
            raise ValueError("n_embd must be divisible by n_head")
        self.n_layer, self.n_embd, self.n_head = n_layer, n_embd, n_head
        self.head_dim, self.vocab, self.block, self.hidden = n_embd // n_head, vocab, block, hidden
        self.rmsnorm_eps = rmsnorm_eps
        self.weights = np.array(weights, dtype=np.float64)
        self.grads = np.zeros_like(self.weights)
        self.w, self.g = self.weights, self.grads
        self.off = np.asarray(offsets, dtype=np.intp)
        self.layer_off = np.asarray(layer_offsets, dtype=np.intp).reshape(-1, N_LAYER_MATRICES)
        if self.off.shape[0] != N_MODEL_MATRICES or self.layer_off.shape[0] != n_layer:
            raise ValueError(f"offsets: need wte, wpe, lm_head, and {N_LAYER_MATRICES} per layer")
        L, B, E, F = n_layer, block, n_embd, hidden
        check_inside(self.off, (vocab * E, B * E, vocab * E), self.w.shape[0])
        for l in range(L):
            check_inside(self.layer_off[l], (E * E, E * E, E * E, E * E, F * E, E * F), self.w.shape[0])
        z = lambda *shape: np.zeros(shape)
        self.emb, self.emb_scale, self.x_top = z(B, E), z(B), z(B, E)
        self.x_in, self.xn1, self.q, self.k, self.v = z(L, B, E), z(L, B, E), z(L, B, E), z(L, B, E), z(L, B, E)
        self.heads, self.x_mid, self.xn2 = z(L, B, E), z(L, B, E), z(L, B, E)
        self.h1, self.relu_out = z(L, B, F), z(L, B, F)
        self.s1, self.s2 = z(L, B), z(L, B)
        self.att = z(L, B, n_head, B)
        self.probs = z(B, vocab)
        self.dx, self.dq, self.dk, self.dv = z(B, E), z(B, E), z(B, E), z(B, E)
        self.dheads, self.dmid, self.dxn = z(B, E), z(B, E), z(B, E)
        self.dh, self.dlogits, self.datt = z(F), z(vocab), z(B)

    def loss_and_grads(self, const Py_ssize_t[::1] tokens):
        """Loss of one document (BOS ... BOS), gradients ADDED into `grads`."""
        cdef Py_ssize_t n = min(self.block, tokens.shape[0] - 1), i
        if n < 1:
            raise ValueError("a document needs at least 2 tokens")
        for i in range(n + 1):
            if not 0 <= tokens[i] < self.vocab:
                raise ValueError(f"token {tokens[i]} out of range")
        cdef double loss
        with nogil:
            loss = self.forward(tokens, n)
            self.backward(tokens, n)
        return loss

    cdef double forward(self, const Py_ssize_t[::1] tokens, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t L = self.n_layer, E = self.n_embd, F = self.hidden, H = self.n_head, hd = self.head_dim
        cdef Py_ssize_t t, u, l, h, j, i
        cdef double* w = &self.w[0]
        cdef double* x
        cdef double acc, mx, total, inv_sqrt = 1.0 / sqrt(<double>hd), loss = 0.0, eps = self.rmsnorm_eps
        for t in range(n):
            for j in range(E):  # (E,) token + position embedding
                self.emb[t, j] = w[self.off[WTE] + tokens[t] * E + j] + w[self.off[WPE] + t * E + j]
            self.emb_scale[t] = rmsnorm(&self.emb[t, 0], &self.x_in[0, t, 0], E, eps)
            for l in range(L):
                # attention block: rmsnorm, q k v, causal softmax over positions <= t
                self.s1[l, t] = rmsnorm(&self.x_in[l, t, 0], &self.xn1[l, t, 0], E, eps)
                matvec(w + self.layer_off[l, WQ], &self.xn1[l, t, 0], &self.q[l, t, 0], E, E)
                matvec(w + self.layer_off[l, WK], &self.xn1[l, t, 0], &self.k[l, t, 0], E, E)
                matvec(w + self.layer_off[l, WV], &self.xn1[l, t, 0], &self.v[l, t, 0], E, E)
                for h in range(H):
                    mx = -1e308
                    for u in range(t + 1):  # logits (t+1,)
                        acc = 0.0
                        for j in range(hd):
                            acc += self.q[l, t, h * hd + j] * self.k[l, u, h * hd + j]
                        self.att[l, t, h, u] = acc * inv_sqrt
                        if self.att[l, t, h, u] > mx:
                            mx = self.att[l, t, h, u]
                    total = 0.0
                    for u in range(t + 1):
                        self.att[l, t, h, u] = exp(self.att[l, t, h, u] - mx)
                        total += self.att[l, t, h, u]
                    for u in range(t + 1):
                        self.att[l, t, h, u] /= total
                    for j in range(hd):  # weighted sum of values (hd,)
                        acc = 0.0
                        for u in range(t + 1):
                            acc += self.att[l, t, h, u] * self.v[l, u, h * hd + j]
                        self.heads[l, t, h * hd + j] = acc
                matvec(w + self.layer_off[l, WO], &self.heads[l, t, 0], &self.x_mid[l, t, 0], E, E)
                for j in range(E):
                    self.x_mid[l, t, j] += self.x_in[l, t, j]
                # MLP block
                self.s2[l, t] = rmsnorm(&self.x_mid[l, t, 0], &self.xn2[l, t, 0], E, eps)
                matvec(w + self.layer_off[l, FC1], &self.xn2[l, t, 0], &self.h1[l, t, 0], F, E)
                for j in range(F):
                    self.relu_out[l, t, j] = self.h1[l, t, j] if self.h1[l, t, j] > 0 else 0.0
                x = &self.x_top[t, 0] if l == L - 1 else &self.x_in[l + 1, t, 0]
                matvec(w + self.layer_off[l, FC2], &self.relu_out[l, t, 0], x, E, F)
                for j in range(E):
                    x[j] += self.x_mid[l, t, j]
            # lm_head and softmax cross-entropy
            matvec(w + self.off[LM_HEAD], &self.x_top[t, 0], &self.probs[t, 0], self.vocab, E)
            mx = -1e308
            for i in range(self.vocab):
                if self.probs[t, i] > mx:
                    mx = self.probs[t, i]
            total = 0.0
            for i in range(self.vocab):
                self.probs[t, i] = exp(self.probs[t, i] - mx)
                total += self.probs[t, i]
            for i in range(self.vocab):
                self.probs[t, i] /= total
            loss -= log(self.probs[t, tokens[t + 1]])
        return loss / n

    cdef void backward(self, const Py_ssize_t[::1] tokens, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t L = self.n_layer, E = self.n_embd, F = self.hidden, H = self.n_head, hd = self.head_dim
        cdef Py_ssize_t t, u, l, h, j, i
        cdef double* w = &self.w[0]
        cdef double* g = &self.g[0]
        cdef double* xo
        cdef double acc, inv_sqrt = 1.0 / sqrt(<double>hd)
        memset(&self.dx[0, 0], 0, self.block * E * sizeof(double))
        for t in range(n):  # dx: gradient at the top of the stack, (n, E)
            for i in range(self.vocab):
                self.dlogits[i] = self.probs[t, i] / n
            self.dlogits[tokens[t + 1]] -= 1.0 / n
            outer_add(g + self.off[LM_HEAD], &self.dlogits[0], &self.x_top[t, 0], self.vocab, E)
            matvec_t_add(w + self.off[LM_HEAD], &self.dlogits[0], &self.dx[t, 0], self.vocab, E)
        for l in range(L - 1, -1, -1):
            memset(&self.dq[0, 0], 0, self.block * E * sizeof(double))
            memset(&self.dk[0, 0], 0, self.block * E * sizeof(double))
            memset(&self.dv[0, 0], 0, self.block * E * sizeof(double))
            for t in range(n):
                # MLP block: x_out = x_mid + fc2 relu(fc1 rmsnorm(x_mid))
                for j in range(E):
                    self.dmid[t, j] = self.dx[t, j]
                outer_add(g + self.layer_off[l, FC2], &self.dx[t, 0], &self.relu_out[l, t, 0], E, F)
                memset(&self.dh[0], 0, F * sizeof(double))
                matvec_t_add(w + self.layer_off[l, FC2], &self.dx[t, 0], &self.dh[0], E, F)
                for j in range(F):
                    if not self.h1[l, t, j] > 0:
                        self.dh[j] = 0.0
                outer_add(g + self.layer_off[l, FC1], &self.dh[0], &self.xn2[l, t, 0], F, E)
                memset(&self.dxn[t, 0], 0, E * sizeof(double))
                matvec_t_add(w + self.layer_off[l, FC1], &self.dh[0], &self.dxn[t, 0], F, E)
                rmsnorm_backward(&self.x_mid[l, t, 0], self.s2[l, t], &self.dxn[t, 0], &self.dmid[t, 0], E)
                # attention block: x_mid = x_in + wo heads
                outer_add(g + self.layer_off[l, WO], &self.dmid[t, 0], &self.heads[l, t, 0], E, E)
                memset(&self.dheads[t, 0], 0, E * sizeof(double))
                matvec_t_add(w + self.layer_off[l, WO], &self.dmid[t, 0], &self.dheads[t, 0], E, E)
                for h in range(H):
                    for u in range(t + 1):
                        # d weight[u] = dheads . v[u];  softmax backward needs sum_u a_u d_u
                        acc = 0.0
                        for j in range(hd):
                            acc += self.dheads[t, h * hd + j] * self.v[l, u, h * hd + j]
                            self.dv[u, h * hd + j] += self.att[l, t, h, u] * self.dheads[t, h * hd + j]
                        self.datt[u] = acc
                    # dlogit_u = a_u (d_u - sum_v a_v d_v)
                    acc = 0.0
                    for u in range(t + 1):
                        acc += self.att[l, t, h, u] * self.datt[u]
                    for u in range(t + 1):
                        self.datt[u] = self.att[l, t, h, u] * (self.datt[u] - acc) * inv_sqrt
                        for j in range(hd):
                            self.dq[t, h * hd + j] += self.datt[u] * self.k[l, u, h * hd + j]
                            self.dk[u, h * hd + j] += self.datt[u] * self.q[l, t, h * hd + j]
                for j in range(E):  # residual path of the attention block
                    self.dx[t, j] = self.dmid[t, j]
            for t in range(n):  # q, k, v complete for every position: back through wq wk wv
                memset(&self.dxn[t, 0], 0, E * sizeof(double))
                outer_add(g + self.layer_off[l, WQ], &self.dq[t, 0], &self.xn1[l, t, 0], E, E)
                outer_add(g + self.layer_off[l, WK], &self.dk[t, 0], &self.xn1[l, t, 0], E, E)
                outer_add(g + self.layer_off[l, WV], &self.dv[t, 0], &self.xn1[l, t, 0], E, E)
                matvec_t_add(w + self.layer_off[l, WQ], &self.dq[t, 0], &self.dxn[t, 0], E, E)
                matvec_t_add(w + self.layer_off[l, WK], &self.dk[t, 0], &self.dxn[t, 0], E, E)
                matvec_t_add(w + self.layer_off[l, WV], &self.dv[t, 0], &self.dxn[t, 0], E, E)
                rmsnorm_backward(&self.x_in[l, t, 0], self.s1[l, t], &self.dxn[t, 0], &self.dx[t, 0], E)
        for t in range(n):  # first rmsnorm, then the embeddings
            memset(&self.dxn[t, 0], 0, E * sizeof(double))
            rmsnorm_backward(&self.emb[t, 0], self.emb_scale[t], &self.dx[t, 0], &self.dxn[t, 0], E)
            for j in range(E):
                g[self.off[WTE] + tokens[t] * E + j] += self.dxn[t, j]
                g[self.off[WPE] + t * E + j] += self.dxn[t, j]

    def adam_step(self, double[::1] m, double[::1] v, double beta1, double beta2, double eps,
                  double lr_t, double c1, double c2):
        """microgpt's Adam over all weights in one loop (g*g and sqrt: not exact); zeroes the
        gradients.  lr_t and the bias corrections c1, c2: the step's, from schedule.adam_scalars."""
        cdef Py_ssize_t i, P = self.w.shape[0]
        if m.shape[0] != P or v.shape[0] != P:
            raise ValueError("moment buffers must match the weights")
        cdef double gi
        with nogil:
            for i in range(P):
                gi = self.g[i]
                m[i] = beta1 * m[i] + (1.0 - beta1) * gi
                v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi
                self.w[i] -= lr_t * (m[i] / c1) / (sqrt(v[i] / c2) + eps)
                self.g[i] = 0.0
