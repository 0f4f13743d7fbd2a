"""Continue a cymicrogpt run in PyTorch: torch.optim.Adam on batches of documents, on a GPU
when there is one, in several processes with DistributedDataParallel; then back into
cymicrogpt, which samples from the result.

    cymicrogpt train --save run.npz
    python -m cymicrogpt.examples.continue_in_torch run.npz --steps 200 --batch-size 16 --export run.safetensors
    torchrun --standalone --nproc_per_node 2 -m cymicrogpt.examples.continue_in_torch run.npz \\
        --steps 200 --batch-size 8 --export run.safetensors

1. The run's weights become a torch module (``Run.to_torch()``, float64: torch_model.py) on
   ``cuda:LOCAL_RANK`` when CUDA is available (``--cpu`` forbids it), else on the CPU.  Under
   torchrun each process joins the process group (NCCL on GPUs, gloo on CPUs) and wraps the
   module in DistributedDataParallel.
2. ``--steps S`` steps of ``torch.optim.Adam`` with microgpt's hyperparameters (config.py's
   betas and eps; the run's learning rate, decayed linearly by schedule.adam_scalars) as if
   the run had been started S steps longer: step i, counted with the run's own steps, has
   learning rate ``lr * (1 - i / (run.step + S))``.  Adam starts from the run's moments and
   step count.  So an unfinished run continued for the steps it has left, one document per
   step in one process, takes the steps cymicrogpt would have taken (to ~1e-15 relative:
   torch rounds in another order; tests/test_continue_in_torch.py checks it).
3. Data: the run's documents in its order, from the one it would train on next: each step
   takes the next W * B documents (W processes, ``--batch-size B`` each, padded and masked as
   torch_model.py says).  A process's loss is the mean of its documents' losses and DDP
   averages the gradients, so a step's gradient is that of the mean over all W * B
   documents: what one process with a batch of W * B computes.
4. Back in cymicrogpt: process 0 loads the trained weights into the run
   (``Run.load_state_dict``; its step, Adam moments and random stream stay the run's) and
   samples names from it; ``--export`` writes them as safetensors (``Run.export``), which
   ``Run.load_safetensors`` reads back into a run of the same checkpoint.

Errors are one line on stderr, exit 2 for bad arguments (before any training), 1 for an
unusable checkpoint or a failed write.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import Optional, Sequence

PROG = "continue_in_torch"

try:
    from cymicrogpt.torch_model import MicroGPT, document_losses, torch
except ImportError as exc:  # no torch: torch_model's one line says how to install it
    sys.exit(f"{PROG}: error: {exc}")

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cymicrogpt.checkpoint import CheckpointError
from cymicrogpt.config import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from cymicrogpt.files import check_output
from cymicrogpt.params import state_dict_layout
from cymicrogpt.schedule import adam_scalars
from cymicrogpt.state_dict import to_state_dict
from cymicrogpt.training import Run

if dist.is_available():  # (a torch built without it runs the one-process path only)
    import torch.distributed.nn  # before any process group exists: see leave_the_group

EXIT_FAILURE, EXIT_USAGE = 1, 2


class Failure(Exception):
    """One line for stderr, and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def microgpt_adam(module: MicroGPT, run: Run) -> torch.optim.Adam:
    """torch.optim.Adam with microgpt's betas and eps, its state the run's moments and step."""
    adam = torch.optim.Adam(module.parameters(), lr=run.lr, betas=(ADAM_BETA1, ADAM_BETA2), eps=ADAM_EPS)
    state = run.state()
    layout = state_dict_layout(run.config, run.tokenizer.vocab_size)
    m, v = to_state_dict(layout, state.adam_m), to_state_dict(layout, state.adam_v)  # flat -> named, like the weights
    names = [name for name, _ in module.named_parameters()]  # the optimizer's parameter order
    adam.load_state_dict({
        "state": {i: {"step": torch.tensor(float(run.step)), "exp_avg": torch.from_numpy(m[name]),
                      "exp_avg_sq": torch.from_numpy(v[name])} for i, name in enumerate(names)},
        "param_groups": adam.state_dict()["param_groups"],
    })  # load_state_dict moves the moments to the parameters' dtype and device
    return adam


def step_documents(run: Run, step: int, batch_size: int, rank: int, world_size: int) -> list[str]:
    """Process `rank`'s documents at continuation step `step` (0-based): the run's documents
    in order, from the one it would train on next, W * B per step, B per process."""
    first = run.step + step * world_size * batch_size + rank * batch_size
    return [run.docs[(first + j) % len(run.docs)] for j in range(batch_size)]


def continue_training(run: Run, module: MicroGPT, steps: int, batch_size: int, *, rank: int = 0,
                      world_size: int = 1, model: Optional[torch.nn.Module] = None,
                      log_every: int = 0) -> list[float]:
    """Train `module` (inside `model`, its DDP wrapper when distributed) for `steps` steps as
    the module docstring says; returns each step's loss, the mean over all processes'
    documents.  Prints a progress line every `log_every` steps from process 0 (0: never)."""
    model = module if model is None else model
    adam = microgpt_adam(module, run)
    total = run.step + steps  # the schedule of the run made `steps` steps longer
    losses = []
    for s in range(steps):
        inputs, targets = module.batch(step_documents(run, s, batch_size, rank, world_size))
        loss = document_losses(model(inputs), targets).mean()
        adam.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: gradients averaged over the processes
        for group in adam.param_groups:
            group["lr"] = adam_scalars(run.lr, run.step + s, total).lr_t
        adam.step()
        mean_loss = loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(mean_loss)  # sum over processes, each the mean of B documents
            mean_loss /= world_size
        losses.append(mean_loss.item())
        if rank == 0 and log_every and ((s + 1) % log_every == 0 or s + 1 == steps):
            print(f"step {run.step + s + 1:4d} | loss {losses[-1]:.4f} | {world_size} x {batch_size} documents",
                  flush=True)
    return losses


def count(minimum: int):
    """An argparse type: an integer of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {minimum}, got {text!r}")
        return value
    return parse


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Continue a cymicrogpt run in PyTorch (see the "
                                     "module docstring); under torchrun, with DistributedDataParallel.")
    parser.add_argument("checkpoint", help="a cymicrogpt checkpoint (cymicrogpt train --save)")
    parser.add_argument("--steps", type=count(1), help="optimizer steps (default: the steps the run has left)")
    parser.add_argument("--batch-size", type=count(1), default=8, help="documents per step and process (default: 8)")
    parser.add_argument("--samples", type=count(0), default=10, help="names to sample in cymicrogpt after (default: 10)")
    parser.add_argument("--export", metavar="OUT.safetensors", help="write the trained weights here (safetensors)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when CUDA is available")
    parser.add_argument("--log-every", type=count(0), default=10, help="print the loss every K steps (default: 10)")
    return parser.parse_args(argv)


def load_and_check(args: argparse.Namespace) -> tuple[Run, int]:
    """The run and the step count; Failure for bad arguments or an unusable checkpoint."""
    if args.export is not None:
        try:
            check_output(args.export, {"the checkpoint": args.checkpoint})
        except OSError as exc:
            raise Failure(f"--export {args.export}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        run = Run.load(args.checkpoint)
    except CheckpointError as exc:
        raise Failure(str(exc), EXIT_FAILURE) from None
    steps = run.num_steps - run.step if args.steps is None else args.steps
    if steps < 1:
        raise Failure(f"the run in {args.checkpoint} is finished (step {run.step} / {run.num_steps}): "
                      "say how many steps to continue for with --steps", EXIT_USAGE)
    return run, steps


def leave_the_group() -> None:
    """Destroy the process group and, with it, its worker threads, while the interpreter is
    still whole.

    A gloo worker thread drops its last reference to a finished collective (and so to the
    tensors it reduced) a moment after the caller has its result.  If that happens while
    the interpreter is finalizing, the thread cannot take the GIL to release the tensors'
    Python objects, Python ends the thread, and the C++ runtime aborts the process
    ("terminate called without an active exception": seen in CI on a loaded machine, and
    reproduced here about once in 30 runs under load).  The threads stop only when the
    group's last reference goes, which is why torch.distributed.nn is imported before any
    group exists: its functions take ``group.WORLD`` as a default argument, evaluated when
    the module is imported (DDP imports it through torch._dynamo), and would otherwise keep
    the group, and its threads, alive until exit.
    """
    dist.destroy_process_group()
    gc.collect()  # the DDP wrapper and its reducer, should a reference cycle hold them


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run, steps = load_and_check(args)  # every process checks, before any joins the group
    except Failure as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    distributed = "RANK" in os.environ  # set by torchrun
    cuda = torch.cuda.is_available() and not args.cpu
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if distributed:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    try:
        module = run.to_torch(device=device)
        if rank == 0:
            print(f"continuing {args.checkpoint} (step {run.step} / {run.num_steps}) in torch {torch.__version__} "
                  f"on {device}: {steps} steps, {world_size} process(es) x {args.batch_size} documents", flush=True)
        # The DDP wrapper is an argument, never a name here: it holds the process group and
        # must be gone before leave_the_group.
        continue_training(run, module, steps, args.batch_size, rank=rank, world_size=world_size,
                          model=DistributedDataParallel(module, device_ids=[local_rank] if cuda else None)
                          if distributed else None, log_every=args.log_every)
        if distributed:
            dist.barrier()  # leave together: no process tears its sockets down while a peer still reads
    finally:
        if distributed:
            leave_the_group()
    if rank != 0:
        return 0
    try:
        run.load_state_dict(module.numpy_state_dict())  # back into cymicrogpt
    except ValueError as exc:  # non-finite weights: the run diverged in torch (too high a learning rate)
        print(f"{PROG}: error: the weights trained in torch cannot go back into the run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for name in run.sample(args.samples) if args.samples else []:
        print(f"sample: {name}")
    if args.export is not None:
        try:
            run.export(args.export)
        except OSError as exc:
            print(f"{PROG}: error: cannot write {args.export}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"exported the trained weights to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
