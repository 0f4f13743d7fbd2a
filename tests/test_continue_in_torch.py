"""The example examples/continue_in_torch.py: a cymicrogpt run continued with torch.optim.Adam,
in one process and in two (DistributedDataParallel, gloo on the CPU, started by torchrun),
and brought back into cymicrogpt.

What is checked, against values computed here and not typed in:
* one process, one document per step: the torch continuation of an unfinished run takes
  the steps cymicrogpt's own continuation takes (losses within 1e-9, weights within 1e-9
  relative): the betas, eps, learning-rate decay, Adam moments and step count are microgpt's;
* two processes of B documents each equal one process of 2B documents (weights within
  1e-12 relative): DDP averages the gradients of the batch's mean loss;
* the exported safetensors file loads into a run of the same checkpoint, which samples.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (it is optional; CPU build: "
                            "`pip install torch --index-url https://download.pytorch.org/whl/cpu`)")

from cymicrogpt.config import GPTConfig  # noqa: E402
from cymicrogpt.data import load_docs  # noqa: E402
from cymicrogpt.examples.continue_in_torch import continue_training, main  # noqa: E402
from cymicrogpt.training import Run, start_run  # noqa: E402

EXAMPLE = "cymicrogpt.examples.continue_in_torch"


@pytest.fixture(scope="module")
def names(names_path) -> list[str]:
    return load_docs(names_path)[:500]


def unfinished_run(names, steps, done, config=GPTConfig()) -> Run:
    run = start_run(list(names), config=config, steps=steps)
    run.train(until=done)
    return run


def max_relative(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b)


def test_one_document_per_step_takes_the_runs_own_steps(names):
    run = unfinished_run(names, steps=25, done=5)
    state = run.state()
    own = Run.from_state(state)
    own.train()  # cymicrogpt's continuation: steps 6..25
    continued = Run.from_state(state)
    module = continued.to_torch()
    losses = continue_training(continued, module, steps=20, batch_size=1)
    diffs = np.abs(np.array(losses) - np.array(own.losses[5:]))
    assert diffs.max() <= 1e-9, f"losses drift from cymicrogpt's: {diffs.max():.3g}"
    assert max_relative(module.numpy_state_dict(), own.state_dict()) <= 1e-9
    assert losses[-1] != losses[0]


def torchrun(*args, timeout=300) -> subprocess.CompletedProcess:
    """torchrun, as `python -m torch.distributed.run` of this interpreter."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.slow  # ~10-20 s: three interpreters import torch, two join a gloo group
def test_two_processes_with_ddp_equal_one_process_with_their_batch(names, tmp_path):
    config = GPTConfig(n_layer=2, n_embd=16, n_head=4, block_size=8)
    checkpoint, exported = tmp_path / "run.npz", tmp_path / "torch.safetensors"
    unfinished_run(names, steps=40, done=5, config=config).save(checkpoint)
    started = time.perf_counter()
    done = torchrun("--standalone", "--nproc_per_node", "2", "-m", EXAMPLE, checkpoint, "--steps", "4",
                    "--batch-size", "3", "--samples", "5", "--export", exported, "--cpu", "--log-every", "1")
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"torchrun --nproc_per_node 2, 4 steps: {elapsed:.1f} s")
    lines = done.stdout.splitlines()
    assert "2 process(es) x 3 documents" in lines[0]
    assert sum(line.startswith("step ") for line in lines) == 4  # process 0 prints, once per step
    assert sum(line.startswith("sample: ") for line in lines) == 5

    # one process with the batch of both
    run = Run.load(checkpoint)
    module = run.to_torch()
    losses = continue_training(run, module, steps=4, batch_size=6)
    back = Run.load(checkpoint)
    back.load_safetensors(exported)
    assert max_relative(back.state_dict(), module.numpy_state_dict()) <= 1e-12
    printed = [float(line.split("| loss ")[1].split()[0]) for line in lines if line.startswith("step ")]
    assert np.allclose(printed, losses, rtol=0, atol=1e-4)  # printed to 4 decimals
    assert back.state_dict()["wte"].tolist() != Run.load(checkpoint).state_dict()["wte"].tolist()
    assert len(back.sample(3)) == 3  # the weights trained in torch sample in cymicrogpt


THREADS_AFTER_A_GROUP = """
import os, socket, sys
from cymicrogpt.examples.continue_in_torch import main
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
with socket.socket() as probe:  # a free port for the group's store
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
code = main([sys.argv[1], "--steps", "2", "--batch-size", "2", "--samples", "0", "--cpu", "--log-every", "0"])
print("threads:", code, before, threads())
"""


@pytest.mark.slow  # ~7 s: an interpreter imports torch and joins a one-process gloo group
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc/self/task (Linux)")
def test_the_process_group_and_its_threads_are_gone_before_the_interpreter_ends(names, tmp_path):
    """A process group (one process, as torchrun starts it) leaves no gloo worker thread
    behind: one that outlives the interpreter's finalization can abort the process
    (leave_the_group's docstring says how; seen in CI).  Fails if anything (DDP, or
    torch.distributed.nn imported after the group exists) keeps the group alive."""
    checkpoint = tmp_path / "run.npz"
    unfinished_run(names, steps=20, done=2, config=GPTConfig(n_embd=8, n_head=2, block_size=8)).save(checkpoint)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", THREADS_AFTER_A_GROUP, str(checkpoint)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    code, before, after = map(int, done.stdout.splitlines()[-1].removeprefix("threads: ").split())
    assert code == 0
    assert after == before, f"{after - before} thread(s) of the process group outlive it"


def test_one_process_command_line_and_its_errors(names, tmp_path, capsys):
    checkpoint, exported = tmp_path / "run.npz", tmp_path / "out.safetensors"
    run = unfinished_run(names, steps=20, done=4, config=GPTConfig(n_embd=8, n_head=2, block_size=8))
    run.save(checkpoint)
    assert main([str(checkpoint), "--steps", "3", "--batch-size", "4", "--samples", "2", "--export",
                 str(exported), "--log-every", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" |")[0] for line in out if line.startswith("step ")] == ["step    6", "step    7"]
    assert sum(line.startswith("sample: ") for line in out) == 2
    back = Run.load(checkpoint)
    back.load_safetensors(exported)
    assert back.evaluate(names[:50]) < run.evaluate(names[:50])  # 12 more documents seen

    # the steps left by default; none left: say so (exit 2)
    finished = tmp_path / "finished.npz"
    done = unfinished_run(names, steps=3, done=3, config=GPTConfig(n_embd=8, n_head=2, block_size=8))
    done.save(finished)
    assert main([str(finished), "--samples", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is finished (step 3 / 3)" in err and "--steps" in err

    # bad arguments and inputs: one line each, before any training
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.npz").write_text("not a checkpoint")
    for argv, code in [([str(checkpoint), "--export", str(tmp_path / "folder")], 2),
                       ([str(checkpoint), "--export", str(checkpoint)], 2),
                       ([str(tmp_path / "text.npz")], 1)]:
        assert main(argv) == code
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("continue_in_torch: error: ")
        assert captured.err.count("\n") == 1
    # a run that diverges in torch (NaN weights) is not loaded back: one line, exit 1
    hot = tmp_path / "hot.npz"
    start_run(list(names), config=GPTConfig(n_embd=8, n_head=2, block_size=8), steps=20, lr=1e200).save(hot)
    assert main([str(hot), "--steps", "5", "--batch-size", "2", "--log-every", "0"]) == 1
    captured = capsys.readouterr()
    assert "holds nan" in captured.err and captured.err.count("\n") == 1 and "sample:" not in captured.out
    with pytest.raises(SystemExit) as stop:
        main([str(checkpoint), "--batch-size", "0"])
    assert stop.value.code == 2 and "at least 1" in capsys.readouterr().err
