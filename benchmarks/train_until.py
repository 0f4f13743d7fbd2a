"""The compiled engine trained up to a step, for instruction counts (callgrind) of its steps.

Starts a run with the cython backend (1000 planned steps, so the learning rate does not
depend on the step asked for) and trains it up to step K, on one of two corpora:

* `names`: names.txt with the default config (16-token blocks; a name is 3-16 tokens);
* `long`: 2000 generated documents of 30-120 random letters (seed 0) with block_size 128:
  nearly every document has a length no earlier one had, so nearly every step searches
  its graph's depth-first order (a names run replays a kept order after ~20 steps).

Instructions per step between steps A and B are `(I(B) - I(A)) / (B - A)`; K = 0 only
starts the run.  With a release build and no other thread (OpenBLAS's idle ones add
noise), the counts repeat to a few thousand instructions:

    OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 setarch x86_64 -R valgrind --tool=callgrind \\
        python benchmarks/train_until.py {names|long} K [--data names.txt]
"""
from __future__ import annotations

import argparse
import random

import cymicrogpt as mg
from cymicrogpt.data import default_dataset
from cymicrogpt.training import start_run


def long_documents() -> list[str]:
    rng = random.Random(0)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(30, 120)))
            for _ in range(2000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=["names", "long"])
    parser.add_argument("until", type=int, help="train up to this step (0: only start the run)")
    parser.add_argument("--data", default=None, help="the names file (default: the package's names.txt)")
    args = parser.parse_args()
    if args.corpus == "names":
        docs = mg.load_docs(args.data or default_dataset())
        config = mg.GPTConfig()
    else:
        docs, config = long_documents(), mg.GPTConfig(block_size=128)
    run = start_run(docs, config=config, steps=1000, backend="cython")
    if args.until:
        run.train(until=args.until)


if __name__ == "__main__":
    main()
