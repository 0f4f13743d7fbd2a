"""The command line: ``cymicrogpt train``, ``cymicrogpt sample`` and ``cymicrogpt bench``.

``cymicrogpt train`` with no options is microgpt's run: names.txt, the default model,
1000 steps, then 20 names at temperature 0.5, printed in microgpt's format.  Runs can be
saved (``--save``, ``--save-every``), interrupted with Ctrl-C (the run is saved at the end
of the current step) and resumed (``--resume``) bit for bit.

Exit codes: 0 done, 1 unusable data or checkpoint (or a failed write), 2 bad arguments,
130 interrupted.  Errors are one line on stderr, ``cymicrogpt: error: ...``, never a
traceback.  ``cymicrogpt bench`` runs the efficiency ladder (see bench.py).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import sys
from pathlib import Path
from typing import Iterator, NoReturn, Optional, Sequence

from ._version import __version__
from .backends import BACKENDS, DEFAULT_BACKEND
from .bench import DEFAULT_REF_STEPS, compare, format_table, parse_impls, run_ladder, write_outputs
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .ladder import IMPLEMENTATIONS
from .config import GPTConfig
from .data import DataError, default_dataset, load_docs
from .progress import Progress
from .training import DEFAULT_LR, Run, start_run

PROG = "cymicrogpt"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Options a resumed run takes from its checkpoint: option -> (Run attribute, default).
# They default to None on the command line so that an explicitly given value can be told
# apart from the default (and rejected with --resume if it disagrees with the checkpoint).
RUN_OPTIONS = {
    "steps": ("num_steps", 1000),
    "n_layer": ("config.n_layer", GPTConfig().n_layer),
    "n_embd": ("config.n_embd", GPTConfig().n_embd),
    "block_size": ("config.block_size", GPTConfig().block_size),
    "n_head": ("config.n_head", GPTConfig().n_head),
    "lr": ("lr", DEFAULT_LR),
    "seed": ("seed", 42),
}


class UsageError(Exception):
    """A bad command line: reported on one line, exit code 2."""


class Failure(Exception):
    """Something that is not the command line's fault (a write failed): exit code 1."""


class _StopRequested(Exception):
    """Raised between two training steps after a Ctrl-C."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage and exits; we raise
        raise UsageError(message)


# --- argument types ----------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def integer(text: str) -> int:
    return _int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


# --- the parser --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Train and sample microgpt, bit-exact, on a compiled engine.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,bench}")

    train = commands.add_parser("train", help="train a model (by default: microgpt's run on names.txt)")
    train.add_argument("--data", metavar="PATH", help="text file, one document per line (default: names.txt, "
                       "downloaded once and cached)")
    train.add_argument("--steps", type=positive_int, help="training steps (default: 1000)")
    train.add_argument("--backend", choices=BACKENDS, help=f"engine (default: {DEFAULT_BACKEND}; with --resume: "
                       "the checkpoint's)")
    train.add_argument("--n-layer", type=positive_int, help="transformer blocks (default: 1)")
    train.add_argument("--n-embd", type=positive_int, help="embedding width (default: 16)")
    train.add_argument("--block-size", type=positive_int, help="context length (default: 16)")
    train.add_argument("--n-head", type=positive_int, help="attention heads (default: 4)")
    train.add_argument("--lr", type=positive_float, help=f"Adam learning rate (default: {DEFAULT_LR})")
    train.add_argument("--seed", type=integer, help="random seed (default: 42)")
    train.add_argument("--samples", type=non_negative_int, default=20, help="names to sample after training "
                       "(default: 20)")
    train.add_argument("--temperature", type=positive_float, default=0.5, help="sampling temperature "
                       "(default: 0.5)")
    train.add_argument("--save", metavar="CKPT", help="save the run to this checkpoint at the end (and on Ctrl-C)")
    train.add_argument("--save-every", metavar="K", type=positive_int, help="also save every K steps (needs --save)")
    train.add_argument("--resume", metavar="CKPT", help="continue the run saved in this checkpoint")

    sample = commands.add_parser("sample", help="sample names from a checkpoint")
    sample.add_argument("--checkpoint", metavar="CKPT", required=True, help="checkpoint to sample from")
    sample.add_argument("--num", type=positive_int, default=20, help="how many names (default: 20)")
    sample.add_argument("--temperature", type=positive_float, default=0.5, help="sampling temperature "
                        "(default: 0.5)")
    sample.add_argument("--seed", type=integer, help="sample with random.Random(SEED) (default: continue the "
                        "checkpoint's random stream)")
    sample.add_argument("--backend", choices=BACKENDS, help="engine (default: the checkpoint's)")

    bench = commands.add_parser("bench", help="the efficiency ladder: the same training run on every "
                                "implementation, timed side by side")
    bench.add_argument("--data", metavar="PATH", help="text file, one document per line (default: names.txt)")
    bench.add_argument("--steps", type=positive_int, default=300, help="training steps per implementation "
                       "(default: 300)")
    bench.add_argument("--ref-steps", type=positive_int, default=DEFAULT_REF_STEPS, help="steps for the slow "
                       f"python reference (default: {DEFAULT_REF_STEPS})")
    bench.add_argument("--impl", default=",".join(IMPLEMENTATIONS), help="comma-separated implementations "
                       f"(default: {','.join(IMPLEMENTATIONS)})")
    bench.add_argument("--n-layer", type=positive_int, default=1, help="transformer blocks (default: 1)")
    bench.add_argument("--n-embd", type=positive_int, default=16, help="embedding width (default: 16)")
    bench.add_argument("--block-size", type=positive_int, default=16, help="context length (default: 16)")
    bench.add_argument("--n-head", type=positive_int, default=4, help="attention heads (default: 4)")
    bench.add_argument("--out", metavar="DIR", default="ladder", help="where ladder.md and ladder.png go "
                       "(default: ./ladder)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "bench":
            return cmd_bench(args, argv)
        return cmd_sample(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except (DataError, CheckpointError, Failure) as exc:
        return _error(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early, e.g. `cymicrogpt sample ... | head -3`
        _silence_stdout()
        return EXIT_FAILURE


def _silence_stdout() -> None:
    # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _error(message: str, code: int) -> int:
    one_line = " ".join(message.split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return code


# --- train -------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    check_save_options(args)
    run = resume_run(args) if args.resume else new_run(args)
    print(f"num docs: {len(run.docs)}")
    print(f"vocab size: {run.tokenizer.vocab_size}")
    print(f"num params: {run.num_params}", flush=True)
    if args.resume:
        print(f"resuming {args.resume} at step {run.step} / {run.num_steps}", flush=True)
    stopped = train_with_progress(run, args.save, args.save_every)
    if stopped:
        where = f"saved to {args.save} (continue with --resume {args.save})" if args.save else \
            "nothing saved (pass --save CKPT to keep a run)"
        print(f"{PROG}: interrupted at step {run.step} / {run.num_steps}; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("--- inference (new, hallucinated names) ---")
    print_samples(run, args.samples, args.temperature)
    return EXIT_OK


def check_save_options(args: argparse.Namespace) -> None:
    if args.save_every is not None and args.save is None:
        raise UsageError("--save-every needs --save CKPT (the file to save to)")
    if args.save is not None:
        target = Path(args.save)
        if target.is_dir():
            raise UsageError(f"--save {args.save}: is a directory")
        if not target.parent.is_dir():
            raise UsageError(f"--save {args.save}: directory {target.parent} does not exist")


def new_run(args: argparse.Namespace) -> Run:
    values = {name: default if getattr(args, name) is None else getattr(args, name)
              for name, (_, default) in RUN_OPTIONS.items()}
    config = make_config(values)  # checked before any data is read or downloaded
    docs = load_docs(args.data if args.data is not None else default_dataset())
    return start_run(docs, config=config, steps=values["steps"], backend=args.backend or DEFAULT_BACKEND,
                     seed=values["seed"], lr=values["lr"])


def make_config(values: dict) -> GPTConfig:
    try:
        return GPTConfig(n_layer=values["n_layer"], n_embd=values["n_embd"],
                         block_size=values["block_size"], n_head=values["n_head"])
    except ValueError as exc:
        raise UsageError(f"bad model shape: {exc}") from None


def resume_run(args: argparse.Namespace) -> Run:
    run = load_checkpoint(args.resume, backend=args.backend)
    for name, (attribute, _) in RUN_OPTIONS.items():
        given, saved = getattr(args, name), _attribute(run, attribute)
        if given is not None and given != saved:
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} {given} conflicts with the checkpoint {args.resume} ({saved}); "
                             "a resumed run keeps its checkpoint's settings")
    if args.data is not None and sorted(load_docs(args.data)) != sorted(run.docs):
        raise UsageError(f"--data {args.data} holds other documents than the run in {args.resume}; "
                         "a resumed run trains on the documents stored in its checkpoint")
    return run


def _attribute(run: Run, dotted: str):
    value = run
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def train_with_progress(run: Run, save: Optional[str], save_every: Optional[int]) -> bool:
    """Train to the end, or to the first step boundary after a Ctrl-C (then return True)."""
    progress = Progress(run.num_steps, start=run.step)
    with stop_on_interrupt() as stop:

        def on_step(run: Run) -> None:
            progress.update(run.step, run.losses[-1])
            if save_every and run.step % save_every == 0 and run.step < run.num_steps:
                save_run(run, save)
            if stop.requested:
                raise _StopRequested

        try:
            run.train(on_step=on_step)
        except _StopRequested:
            pass
        finally:
            progress.close()
        stopped = stop.requested
    if save is not None:
        save_run(run, save)  # the run is between two steps here, even after a Ctrl-C
    return stopped


def save_run(run: Run, path: str) -> None:
    try:
        save_checkpoint(run, path)
    except OSError as exc:
        raise Failure(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


class _StopFlag:
    requested = False


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[_StopFlag]:
    """Turn the first Ctrl-C into a request to stop after the current step.

    A step interrupted halfway (say, in the middle of the Adam update) would leave a run
    that cannot be saved consistently, so the first SIGINT only sets a flag that the
    training loop checks between steps.  A second Ctrl-C interrupts at once (unsaved).
    """
    flag = _StopFlag()

    def handler(signum, frame) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
        installed = True
    except ValueError:  # not the main thread: signals are not ours to handle
        installed = False
    try:
        yield flag
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)


def print_samples(run: Run, num: int, temperature: float) -> None:
    for i, name in enumerate(run.sample(num, temperature) if num else []):
        print(f"sample {i + 1:2d}: {name}")


# --- sample ------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    run = load_checkpoint(args.checkpoint, backend=args.backend)
    if args.seed is not None:
        run.rng = random.Random(args.seed)
    print_samples(run, args.num, args.temperature)
    return EXIT_OK


# --- bench -------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    try:
        impls = parse_impls(args.impl)
    except ValueError as exc:
        raise UsageError(f"--impl: {exc}") from None
    config = make_config(vars(args))
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    docs = load_docs(args.data if args.data is not None else default_dataset())
    rows = run_ladder(docs, config, args.steps, impls, ref_steps=args.ref_steps)
    table = compare(rows)
    print()
    print(format_table(table))
    command = " ".join([PROG] + list(sys.argv[1:] if argv is None else argv))
    try:
        notes = write_outputs(out_dir, rows, table, config, command)
    except OSError as exc:
        raise Failure(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    for note in notes:
        print(note)
    print(f"wrote {out_dir / 'ladder.md'}" + ("" if notes else f" and {out_dir / 'ladder.png'}"))
    return EXIT_OK
