"""How many collections start inside a Value backward that takes room for its layout copy.

Run by tests/test_value_order_reuse.py in a fresh process (whose SearchedGraph has no room
yet, so that this backward must take it): `python backward_collections.py`, prints the
number of collections the cyclic GC started during the backward, at threshold 1, then
whether the gradient equals the reference's.
"""
from gc_count import collections_during  # beside this file

from cymicrogpt import Value
from cymicrogpt.reference import Value as RefValue


def build(V):
    x = V(1.5)
    return x, [x * 2.0 if i % 2 else x + 1.0 for i in range(50)][-1]  # no edges


def main():
    (x, loss), (ref_x, ref_loss) = build(Value), build(RefValue)
    loss.backward()  # the first search notes the sizes: the next backward takes a copy
    # a method call with no arguments: it allocates nothing GC-tracked itself
    started = collections_during(loss.backward)
    ref_loss.backward()
    ref_loss.backward()
    print(started, x.grad == ref_x.grad)


if __name__ == "__main__":
    main()
