"""Train cymicrogpt as microgpt.py does and print every step's loss exactly (repr).

compare_peers.py gives this to `cymicrogpt bench` as one more program beside the ports
(`--program cymicrogpt=...`), so that ours is checked and timed the same way, as a whole
process.  It samples nothing: start-up is all the ladder's 1-step run has to cancel.

    python benchmarks/peers/train_losses.py DATA STEPS BACKEND
"""
from __future__ import annotations

import sys

import cymicrogpt as mg


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    data, steps, backend = argv[0], int(argv[1]), argv[2]
    run = mg.train(mg.load_docs(data), steps=steps, backend=backend)
    for step, loss in enumerate(run.losses, start=1):
        print(f"step {step} loss {loss!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
