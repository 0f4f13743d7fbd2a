"""Vector handles, the model's graph operations on an Arena, their order templates, and
the recorded training steps they replay."""
from libc.stdint cimport int32_t, int64_t

from cymicrogpt._arena cimport Arena


cdef class Vec:
    """`size` consecutive arena nodes starting at `start` (a vector of the model).

    Every op takes its output Vec object before it builds anything and fills it last:
    allocating can run Python (the cyclic GC), which must not happen mid-build."""
    cdef readonly int32_t start
    cdef readonly int32_t size
    cdef readonly int64_t owner  # id of the GraphOps that built it
    cdef readonly int64_t graph  # id of the graph it lives in (its sequence, or the weights)
    cdef readonly int32_t slot  # a weight row picked by tokens[slot] in a traced step, else -1


cdef class Mat:
    """A weight matrix: rows x cols consecutive parameter nodes, row-major."""
    cdef readonly int32_t start
    cdef readonly int32_t rows
    cdef readonly int32_t cols
    cdef readonly int64_t owner  # id of the GraphOps that holds it


cdef class OrderTemplate
cdef class StepProgram


# How a GraphOps computes its libm results, and the constants of its sizes: what the node
# builders (and a replayed step) read besides the arena.  The constants are pow results
# of a size alone (pow is a function of its arguments: the same bits each time), computed
# at a size's first use; a GraphOps' ops hold the GIL, so no other thread writes them.
cdef struct GraphMath:
    int pow_mode  # x ** -1, -2, -0.5, -1.5: see graph_power
    bint exp_shortcut  # the softmax's exps through exp_shortcut.h (see GraphOps.exp_shortcut)
    double rmsnorm_eps
    int32_t norm_size  # the size whose len(x) ** -1 is norm_inverse (0: none yet)
    double norm_inverse
    int32_t head_dim  # the size whose (head_dim ** 0.5) ** -1 is head_scale (0: none yet)
    double head_scale


cdef class GraphOps:
    cdef readonly Arena arena
    cdef dict matrices  # name -> Mat
    cdef readonly int64_t id  # unique among all GraphOps of the process
    cdef readonly double rmsnorm_eps
    cdef readonly bint pow_shortcut  # may pow_shortcut.h replace libm pow (the same bits where it may)
    cdef readonly bint pow_fma  # does it, with FMA products (the CPU has FMA and the caller allows it)
    cdef readonly bint exp_shortcut  # may exp_shortcut.h replace libm exp (and does: the CPU has AVX2 and FMA)
    cdef GraphMath math  # the above as the builders read them, and the constants of the sizes seen
    cdef int64_t weights_graph  # graph id of the fixed nodes (Vec rows of the matrices)
    cdef int64_t graph  # graph id of the current sequence; a fresh one per begin_sequence
    cdef int32_t[::1] scratch  # index lists handed to the attention loops
    cdef double[::1] transposed  # a replayed step's weight matrices, transposed (see run_program)
    # --- cached orders (see OrderTemplate) ------------------------------------------------
    cdef int32_t[::1] log  # the op log: what built the current graph (see log_op)
    cdef Py_ssize_t n_log
    cdef int32_t[::1] prob_nodes  # nll's probability nodes, in creation order (see add_prob_node)
    cdef Py_ssize_t n_prob_nodes
    cdef dict templates  # shape_key(root) -> OrderTemplate
    cdef Py_ssize_t template_bytes  # held by all templates: bounded, see TEMPLATE_BYTES_PER_NODE
    cdef Py_ssize_t replays  # backward passes that replayed a template (for tests and benchmarks)
    # --- the step being traced (see StepProgram) -----------------------------------------
    cdef list trace  # its program so far; None when no step is traced
    cdef list trace_tokens  # the traced step's tokens, as ints
    cdef int32_t trace_root  # its backward's root, once backward ran (else -1)
    cdef int32_t trace_token_limit  # every token must be below this to replay it
    cdef int32_t trace_slots  # 1 + the highest token slot read
    cdef Py_ssize_t trace_scratch  # the largest scratch its ops needed
    cdef list trace_matrices  # the matrices its linear ops read: see transpose_offset
    cdef dict programs_by_code  # a program's code and root (bytes) -> the program
    cdef Py_ssize_t program_bytes  # held by all programs: bounded like templates
    cdef Py_ssize_t step_replays  # steps replayed from a program (for tests and benchmarks)

    cdef int reserve(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries,
                     Py_ssize_t prob_nodes=*) except -1
    cdef int grow(self, Py_ssize_t nodes, Py_ssize_t edges, Py_ssize_t log_entries,
                  Py_ssize_t prob_nodes) except -1
    cdef int check(self, Vec x) except -1
    cdef int check_matrix(self, Mat w) except -1
    cdef int32_t[::1] scratch_for(self, Py_ssize_t count)
    cdef bytes shape_key(self, int32_t root)
    cdef int backward_cached(self, int32_t root) except -1
    cdef Py_ssize_t pass_backward(self, int32_t root, OrderTemplate template) noexcept
    cdef void start_sequence(self, bint record) noexcept
    cdef OrderTemplate new_template(self)
    cdef Vec weight_row(self, str name, Py_ssize_t index, int32_t slot)
    cdef Vec loss_of(self, Vec logits, Py_ssize_t target, int32_t slot)
    cdef void note_op(self, list entries, Py_ssize_t scratch=*)
    cdef void note_operand(self, Vec x)
    cdef void note_target(self, Py_ssize_t target, int32_t slot, int32_t count)
    cdef bint take_slot(self, Py_ssize_t value, int32_t slot, int32_t rows) noexcept
    cdef void stop_trace(self) noexcept
    cdef int32_t transpose_offset(self, Mat w)


# The depth-first order of one graph shape, replayed instead of searched again.
# A shape is the op log (see log_op) and the root: two graphs with the same shape have the
# same nodes and non-leaf children, whatever the document's tokens, except for each nll's
# probability node p = e_t * inv: its first child is the target's exp node e_t.  In the
# order, that shows only in one place per nll:
#   ... [L_t S_t E_t] [L_i S_i E_i for i != t, ascending] total inv p ...
# (logit, shifted logit, exp of each token; the search reaches e_t first, then the other
# exps through total = sum(exps), each after the one logit subtree they share).  So the
# template keeps the order with that run of 3V entries rewritten per target on replay.
cdef class OrderTemplate:
    cdef int32_t[::1] prob_nodes  # nll's probability nodes
    cdef int32_t[::1] runs  # order index where each one's 3V run of triples starts
    cdef int32_t[::1] read_runs  # 1 where the backward reads the run's entries, 0 where its group needs none
    cdef int32_t[::1] order
    cdef Py_ssize_t count  # length of the order
    cdef int32_t[::1] groups  # the order's linear groups (see _arena.pyx); None: not looked for
    cdef int32_t[::1] deferred  # the groups whose weight gradients wait for the pass's end (defer_weight_gradients)

    cdef bint capture(self, Arena ar, const int32_t[::1] prob_nodes, Py_ssize_t count) noexcept nogil
    cdef Py_ssize_t find_groups(self, Arena ar) except -1
    cdef Py_ssize_t replay(self, Arena ar) noexcept nogil


# A training step's graph build, recorded while the model ran once (GraphOps.start_trace)
# and replayed in C for every later step of the same shape, with that step's tokens.  The
# model's Python reads a step's tokens only to pick embedding rows (row) and targets
# (nll); everything else in the step is fixed by the shape.  So the record is the op
# sequence with each operand as (base, slot): the node range starts at base, plus
# tokens[slot] * size when slot >= 0 (a row of a matrix picked by a token).
cdef class StepProgram:
    cdef const int32_t[::1] code  # the ops: see run_program for the encoding
    cdef int32_t root  # the loss node
    cdef Py_ssize_t nodes, edges  # the graph's size (after the fixed nodes)
    cdef int32_t n_slots  # tokens read: slots 0 .. n_slots - 1
    cdef int32_t token_limit  # a replayed token must be below it (the rows of what it picks)
    cdef Py_ssize_t scratch  # scratch entries the ops need
    cdef const int32_t[::1] matrices  # the weight matrices its linear ops read: (start, rows, cols, offset) each
    cdef Py_ssize_t transposed_size  # their transposes' room (GraphOps.transposed), each at its offset
    cdef int32_t[::1] tokens  # the tokens of the step being replayed
    cdef OrderTemplate template  # the graph's depth-first order (None: search it)
