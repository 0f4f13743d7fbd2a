"""Peak memory of a training run and 20 samples: `python peak_rss.py DATA STEPS [BLOCK_SIZE]`.

Run by tests/test_memory.py in a fresh process.  Prints two numbers in KiB: ru_maxrss
(Unix) and VmHWM, this process's own peak from Linux's /proc/self/status (ru_maxrss may
carry over the peak of a large parent that forked this process, across the exec); -1
where the platform has no such number.
"""
import sys
from pathlib import Path

import cymicrogpt as mg


def main(data, steps, block_size=None):
    config = mg.GPTConfig() if block_size is None else mg.GPTConfig(block_size=block_size)
    run = mg.train(mg.load_docs(data), steps=steps, backend="cython", config=config)
    run.sample(20)
    try:
        import resource
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    except ImportError:
        maxrss = -1
    status = Path("/proc/self/status")
    hwm = int(status.read_text().split("VmHWM:")[1].split()[0]) if status.is_file() else -1
    print(maxrss, hwm)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(int(a) for a in sys.argv[3:]))
