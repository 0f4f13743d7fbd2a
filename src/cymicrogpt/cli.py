"""The command line: ``cymicrogpt train``, ``sample``, ``eval``, ``export``, ``bench`` and ``download``.

``cymicrogpt train`` with no options is microgpt's run: names.txt, the default model,
1000 steps, then 20 names at temperature 0.5, printed in microgpt's format.  Runs can be
saved (``--save``, ``--save-every``) and resumed (``--resume``) bit for bit.  A run is
never lost to a stop it can survive:

* Ctrl-C, SIGTERM or SIGHUP: the run stops at the end of the current step and is saved
  (see interrupts.py); the exit code is 128 + the signal's number.
* divergence (a step with no finite loss): one line saying which step and why, the last
  good state saved, exit code 1.
* a closed stdout (``| head``): progress and samples are dropped; with ``--save`` the run
  trains to its end and is saved (exit 0), without it there is nothing to keep and it
  stops at once (exit 141, what a process killed by SIGPIPE reports).  ``bench`` always
  keeps its product, ladder.md: it measures, writes it and exits as ``train --save`` does
  (exit 1 if a rung failed: its row says why).
* ``--save`` targets are checked before any training (see files.py), and so is
  ``export``'s target before its checkpoint is read.

``train --eval-data FILE [--eval-every K]`` prints the model's loss on held-out documents
(Run.evaluate) every K steps and at the end; ``eval`` prints it for a checkpoint;
``export`` writes a checkpoint's weights as a safetensors file (safetensors.py).

Exit codes: 0 done, 1 unusable data or checkpoint, divergence or a failed write, 2 bad
arguments, 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), 141 output
closed with nothing to keep.  Errors are one line on stderr, ``cymicrogpt: error: ...``,
never a traceback.  ``cymicrogpt bench`` runs the efficiency ladder (see ladder/bench.py;
other programs as rungs: ladder/programs.py; at several values of one size, --sweep:
ladder/sweep.py; results as JSON and compared: ladder/results.py);
``cymicrogpt download`` prints the path of the default dataset, the names.txt shipped in
the package (it downloads nothing any more; the name stays for the scripts that call it).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from ._version import __version__
from .engines import BACKENDS, DEFAULT_BACKEND
from .ladder.bench import (DEFAULT_REF_STEPS, LADDER_PRODUCTS, LADDER_TABLE, compare, format_table, parse_impls,
                           run_ladder, write_outputs)
from .ladder.results import ResultsError, compare_files, load as load_results, results
from .ladder.programs import (DEFAULT_MIN_TIME_S, DEFAULT_REPEATS, DEFAULT_TIMEOUT_S, FEW, Timing,
                              microgpt_program, parse_program)
from .ladder.sweep import (SWEEP_PRODUCTS, SWEEPABLE, Sweep, check_programs, format_sweep_table, parse_sweep,
                           run_sweep, write_sweep_outputs)
from .checkpoint import CheckpointError
from .checks import COUNT_MAX, check_lr, int_digits_limit
from .config import (DEFAULT_LR, DEFAULT_NUM_SAMPLES, DEFAULT_SEED, DEFAULT_STEPS, DEFAULT_TEMPERATURE,
                     GPTConfig, check_model_size)
from .data import DataError, default_dataset, load_docs
from .files import check_output, write_atomically
from .interrupts import StopRequest, signal_name, stop_if_interrupted_at_start_up, stop_on_signals
from .ladder import IMPLEMENTATIONS
from .output import Console, print_error
from .pacing import ClockPacer, next_multiple
from .progress import Progress
from .sampling import SamplingError, check_temperature
from .tokenizer import Tokenizer
from .training import DivergenceError, Run, start_run

PROG = "cymicrogpt"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_OUTPUT_CLOSED = 128 + 13  # 141: the status of a process that SIGPIPE ended

# Options a resumed run takes from its checkpoint: option -> (Run attribute, default).
# They default to None on the command line so that an explicitly given value can be told
# apart from the default (and rejected with --resume if it disagrees with the checkpoint).
RUN_OPTIONS = {
    "steps": ("num_steps", DEFAULT_STEPS),
    "n_layer": ("config.n_layer", GPTConfig().n_layer),
    "n_embd": ("config.n_embd", GPTConfig().n_embd),
    "block_size": ("config.block_size", GPTConfig().block_size),
    "n_head": ("config.n_head", GPTConfig().n_head),
    "lr": ("lr", DEFAULT_LR),
    "seed": ("seed", DEFAULT_SEED),
}


class UsageError(Exception):
    """A bad command line: reported on one line, exit code 2."""


class Failure(Exception):
    """Something that is not the command line's fault (a write failed, a run diverged): exit code 1."""


class _StopTraining(Exception):
    """Raised between two training steps to end the loop early (a signal, a closed stdout)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage and exits; we raise
        raise UsageError(message)


# --- argument types ----------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return _at_most_count_max(value, text)


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return _at_most_count_max(value, text)


def _at_most_count_max(value: int, text: str) -> int:
    if value > COUNT_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {COUNT_MAX} (checkpoints store counts as int64), "
                                         f"got {_shorten(text)!r}")
    return value


def integer(text: str) -> int:
    return _int(text)


def learning_rate(text: str) -> float:
    return _checked_float(text, check_lr)


def temperature(text: str) -> float:
    return _checked_float(text, check_temperature)


def positive_float(text: str) -> float:
    def check(value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be positive, got {_shorten(text)!r}")
        return value

    return _checked_float(text, check)


def program(text: str):
    try:
        return parse_program(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sweep(text: str) -> Sweep:
    try:
        return parse_sweep(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("is empty; give a file path")
    return text


def _checked_float(text: str, check) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {_shorten(text)!r}") from None
    if not math.isfinite(value):  # "1e400" is inf
        raise argparse.ArgumentTypeError(f"must be a finite number, got {_shorten(text)!r}")
    try:
        return check(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        digits = text.strip().lstrip("+-").replace("_", "")
        if digits.isdigit():  # a number, but longer than Python converts from text
            raise argparse.ArgumentTypeError(
                f"has {len(digits)} digits; Python converts at most {int_digits_limit()} digits "
                "of text to an integer (sys.set_int_max_str_digits)") from None
        raise argparse.ArgumentTypeError(f"must be an integer, got {_shorten(text)!r}") from None


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- the parser --------------------------------------------------------------------------
SHAPE_OPTIONS = (("n_layer", "transformer blocks"), ("n_embd", "embedding width"),
                 ("block_size", "context length"), ("n_head", "attention heads"))


def add_shape_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--n-layer, --n-embd, --block-size, --n-head: GPTConfig's fields, GPTConfig's defaults."""
    for name, what in SHAPE_OPTIONS:
        default = getattr(GPTConfig(), name)
        parser.add_argument("--" + name.replace("_", "-"), type=positive_int, default=default if defaults else None,
                            help=f"{what} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Train and sample microgpt, bit-exact, on a compiled engine.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,eval,export,bench,download}")

    train = commands.add_parser("train", help="train a model (by default: microgpt's run on names.txt)")
    train.add_argument("--data", metavar="PATH", type=path, help="text file, one document per line (default: "
                       "makemore's names.txt, shipped in the package)")
    train.add_argument("--steps", type=positive_int, help=f"training steps (default: {DEFAULT_STEPS})")
    train.add_argument("--backend", choices=BACKENDS, help=f"engine (default: {DEFAULT_BACKEND}; with --resume: "
                       "the checkpoint's)")
    add_shape_options(train, defaults=False)  # None when not given: --resume tells them apart
    train.add_argument("--lr", type=learning_rate, help=f"Adam learning rate (default: {DEFAULT_LR})")
    train.add_argument("--seed", type=integer, help=f"random seed (default: {DEFAULT_SEED})")
    train.add_argument("--samples", type=non_negative_int, default=DEFAULT_NUM_SAMPLES, help="names to sample after "
                       f"training (default: {DEFAULT_NUM_SAMPLES})")
    train.add_argument("--temperature", type=temperature, default=DEFAULT_TEMPERATURE, help="sampling "
                       f"temperature (default: {DEFAULT_TEMPERATURE})")
    train.add_argument("--save", metavar="CKPT", type=path, help="save the run to this checkpoint at the end "
                       "(and when stopped by a signal or by divergence)")
    train.add_argument("--save-every", metavar="K", type=positive_int, help="also save every K steps (needs --save)")
    train.add_argument("--resume", metavar="CKPT", type=path, help="continue the run saved in this checkpoint")
    train.add_argument("--eval-data", metavar="PATH", type=path, help="held-out documents (a text file, one per "
                       "line): print the model's mean loss on them every --eval-every steps and at the end")
    train.add_argument("--eval-every", metavar="K", type=positive_int, help="with --eval-data: every K steps "
                       "(default: only at the end)")

    sample = commands.add_parser("sample", help="sample names from a checkpoint")
    sample.add_argument("--checkpoint", metavar="CKPT", type=path, required=True, help="checkpoint to sample from")
    sample.add_argument("--num", type=positive_int, default=DEFAULT_NUM_SAMPLES, help="how many names "
                        f"(default: {DEFAULT_NUM_SAMPLES})")
    sample.add_argument("--temperature", type=temperature, default=DEFAULT_TEMPERATURE, help="sampling "
                        f"temperature (default: {DEFAULT_TEMPERATURE})")
    sample.add_argument("--seed", type=integer, help="sample with random.Random(SEED) (default: continue the "
                        "checkpoint's random stream)")
    sample.add_argument("--backend", choices=BACKENDS, help="engine (default: the checkpoint's)")

    evaluate = commands.add_parser("eval", help="a checkpoint's mean next-token loss on documents (see Run.evaluate)")
    evaluate.add_argument("--checkpoint", metavar="CKPT", type=path, required=True, help="checkpoint to evaluate")
    evaluate.add_argument("--data", metavar="PATH", type=path, help="text file, one document per line (default: the "
                          "documents the run trained on, stored in the checkpoint)")
    evaluate.add_argument("--backend", choices=BACKENDS, help="engine (default: the checkpoint's)")

    export = commands.add_parser("export", help="write a checkpoint's weights as a safetensors file (float64, "
                                 "microgpt's tensor names; the model's shape and vocabulary in its metadata)")
    export.add_argument("checkpoint", metavar="CHECKPOINT", type=path, help="checkpoint to export")
    export.add_argument("out", metavar="OUT.safetensors", type=path, help="file to write (replaced atomically)")

    bench = commands.add_parser("bench", help="the efficiency ladder: the same training run on every "
                                "implementation, timed side by side")
    bench.add_argument("--data", metavar="PATH", type=path, help="text file, one document per line "
                       "(default: names.txt)")
    bench.add_argument("--steps", type=positive_int, default=300, help="training steps per implementation "
                       "(default: 300)")
    bench.add_argument("--ref-steps", type=positive_int, default=DEFAULT_REF_STEPS, help="steps for the slow "
                       f"python reference (default: {DEFAULT_REF_STEPS})")
    bench.add_argument("--impl", default=",".join(IMPLEMENTATIONS), help="comma-separated implementations "
                       f"(default: {','.join(IMPLEMENTATIONS)})")
    add_shape_options(bench, defaults=True)
    bench.add_argument("--program", metavar="NAME=COMMAND", type=program, action="append", default=[],
                       help="also check and time this program as rung NAME (repeatable): COMMAND is a shell "
                       "command line, {data} and {steps} in it become the documents' file (also ./input.txt) and "
                       "the step count ({n_layer}, {n_embd}, {block_size}, {n_head}: the model's shape); it must "
                       "print a line `step N ... loss X` per step. Its losses are checked against the exact ones "
                       "over --steps steps, then it is timed as whole runs, (T(N) - T(1)) / (N - 1), N calibrated")
    bench.add_argument("--microgpt", metavar="PATH", type=path, help="also check and time Karpathy's microgpt.py (this "
                       "file, run unchanged with this Python): short for --program 'microgpt.py=python -u PATH' "
                       "with MG_INPUT, MG_STEPS, MG_SAMPLES=0, MG_LAYER, MG_EMBD set for a variant that reads them")
    bench.add_argument("--sweep", metavar="PARAM=V1,V2,...", type=sweep, help="measure the ladder at each of these "
                       f"values of one size ({', '.join(SWEEPABLE)}; it replaces that size's option): a table of "
                       "ms/step by rung and value, and sweep.png (log-log, a line per rung). A --program follows "
                       "the sweep through {PARAM} in its COMMAND, and is refused without it")
    bench.add_argument("--baseline", metavar="NAME", help="the rung the speed-ups are relative to (default: "
                       "microgpt.py when it was measured, else the python reference)")
    bench.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS, help="timed rounds per rung, "
                       "interleaved with the other rungs (built-in rungs among themselves, programs among "
                       f"themselves); the median and the range are reported (default: {DEFAULT_REPEATS})")
    bench.add_argument("--min-time", metavar="SECONDS", type=positive_float, default=DEFAULT_MIN_TIME_S,
                       help="a program's timed steps last at least this long, and at least ten of its start-ups "
                       f"(default: {DEFAULT_MIN_TIME_S:g})")
    bench.add_argument("--timeout", metavar="SECONDS", type=positive_float, default=DEFAULT_TIMEOUT_S,
                       help=f"one run of a program may take this long, else its row fails (default: "
                       f"{DEFAULT_TIMEOUT_S:g})")
    bench.add_argument("--out", metavar="DIR", type=path, default="ladder", help="where ladder.md and ladder.png "
                       "(with --sweep: sweep.png) go (default: ./ladder)")
    bench.add_argument("--json", metavar="FILE", type=path, help="also write the whole result to FILE as JSON: machine, "
                       "data (sha256), config, baseline and one entry per rung (ms_per_step and its range, speedup, "
                       "agreement, digits, first_difference)")
    bench.add_argument("--compare", metavar=("A.json", "B.json"), type=path, nargs=2, help="measure nothing: compare "
                       "two --json result files rung by rung (a change within the runs' ranges is marked as noise)")
    commands.add_parser("download", help="print the path of the default dataset, makemore's names.txt, shipped in "
                        "the package and sha256-checked (nothing is downloaded)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    out = Console()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return cmd_train(args, out)
        if args.command == "bench":
            return cmd_bench(args, argv, out)
        if args.command == "download":
            return cmd_download(out)
        if args.command == "eval":
            return cmd_eval(args, out)
        if args.command == "export":
            return cmd_export(args, out)
        return cmd_sample(args, out)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except (DataError, CheckpointError, SamplingError, Failure) as exc:
        return _error(str(exc), EXIT_FAILURE)
    except MemoryError as exc:
        return _error(f"out of memory{': ' + str(exc) if str(exc) else ''}", EXIT_FAILURE)
    # KeyboardInterrupt (a Ctrl-C outside training, a second stop signal) is launch.py's.


def _error(message: str, code: int) -> int:
    one_line = " ".join(message.split())
    print_error(f"{PROG}: error: {one_line}")
    return code


# --- train -------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace, out: Console) -> int:
    save = save_target(args)
    held_out = HeldOut.from_args(args)
    if args.resume:  # the checkpoint first: what is wrong with it is the first thing to say
        run = resume_run(args)
        check_save(save, args.data, args.eval_data)
    else:
        run = new_run(args, save)
    if held_out is not None:
        held_out.load(run)
    with stop_on_signals() as stop:  # from here on, a stop signal saves the run
        out.print(f"num docs: {len(run.docs)}", f"vocab size: {run.tokenizer.vocab_size}",
                  f"num params: {run.num_params}")
        if args.resume:
            out.print(f"resuming {args.resume} at step {run.step} / {run.num_steps}")
        diverged = train_with_progress(run, save, args.save_every, stop, out, held_out)
        if save is not None:
            save.final(run)  # between two steps, whatever ended training; a first signal waits
    saved = f"saved to {save.path} (continue with --resume {save.path})" if save else \
        "nothing saved (pass --save CKPT to keep a run)"
    if diverged is not None:
        kept = (f"the last good state (step {run.step} / {run.num_steps}) was saved to {save.path}" if save
                else "nothing saved (pass --save CKPT to keep the last good state)")
        raise Failure(f"{diverged}; try a lower --lr; {kept}")
    if stop.requested:
        print_error(f"{PROG}: interrupted by {signal_name(stop.signum)} at step {run.step} / {run.num_steps}; {saved}")
        return 128 + stop.signum
    if out.lost is not None:
        return _output_lost(out, save and save.path)
    out.print("--- inference (new, hallucinated names) ---")
    try:
        print_samples(run, args.samples, args.temperature, out)
    except SamplingError as exc:
        raise SamplingError(f"{exc}{f' (the run is saved in {save.path})' if save else ''}") from None
    return _output_lost(out, save and save.path) if out.lost is not None else EXIT_OK


class Checkpointing:
    """Where a training command saves its run, and how its saves went.

    A periodic save (--save-every) that fails, say on a disk full for a moment, costs only
    that checkpoint: one warning line, training goes on and the next save tries again.  The
    final save is the run's product: if it fails, the command fails (exit 1), and the last
    checkpoint written, replaced atomically or not at all, is intact."""

    def __init__(self, path: str, option: str) -> None:
        self.path = path
        self.option = option  # "--save", or "--resume": a resumed run saves to its checkpoint
        self.saved_step: Optional[int] = None  # the step of the last checkpoint written here

    def periodic(self, run: Run) -> None:
        try:
            self._save(run)
        except OSError as exc:
            print_error(f"{PROG}: warning: cannot write checkpoint {self.path} at step {run.step} / {run.num_steps} "
                        f"({exc.strerror or exc}); training goes on, the next save tries again")

    def final(self, run: Run) -> None:
        try:
            self._save(run)
        except OSError as exc:
            kept = (f"the checkpoint of step {self.saved_step} is intact" if self.saved_step is not None
                    else "the file was left as it was")
            raise Failure(f"cannot write checkpoint {self.path}: {exc.strerror or exc}; {kept}") from None

    def _save(self, run: Run) -> None:
        run.save(self.path)
        self.saved_step = run.step


def save_target(args: argparse.Namespace) -> Optional[Checkpointing]:
    """Where `train` saves: --save, else the checkpoint it resumes, else nowhere."""
    if args.save is not None:
        save = Checkpointing(args.save, "--save")
    elif args.resume is not None:  # the resumed steps belong in the checkpoint they continue
        save = Checkpointing(args.resume, "--resume")
    elif args.save_every is not None:
        raise UsageError("--save-every needs --save CKPT (the file to save to) or --resume CKPT (saved back to)")
    else:
        return None
    return save


def check_save(save: Optional[Checkpointing], data_path, eval_data_path) -> None:
    """The save target, checked before any step is trained (see files.check_output)."""
    if save is not None:
        check_output_option(save.option, save.path, {"the data file": data_path,
                                                     "the --eval-data file": eval_data_path})


def check_output_option(option: str, path: str, inputs: dict) -> None:
    """UsageError, naming `option`, for an output that files.check_output refuses."""
    try:
        check_output(path, inputs)
    except OSError as exc:
        hint = "; pass --save CKPT to save the resumed run elsewhere" if option == "--resume" else ""
        raise UsageError(f"{option} {path}: {exc.strerror or exc}{hint}") from None


def new_run(args: argparse.Namespace, save: Optional[Checkpointing]) -> Run:
    values = {name: default if getattr(args, name) is None else getattr(args, name)
              for name, (_, default) in RUN_OPTIONS.items()}
    config = make_config(values)  # checked before any data is read
    data_path = data_file(args)
    check_save(save, data_path, args.eval_data)
    docs = load_docs(data_path)
    try:
        run = start_run(docs, config=config, steps=values["steps"], backend=args.backend or DEFAULT_BACKEND,
                        seed=values["seed"], lr=values["lr"])
    except ValueError as exc:  # a model too large for the vocabulary of this data, a seed too long
        raise UsageError(str(exc)) from None
    return run


def data_file(args: argparse.Namespace) -> Path:
    """--data, or the packaged names.txt."""
    return Path(args.data) if args.data is not None else default_dataset()


def make_config(values: dict) -> GPTConfig:
    try:
        return GPTConfig(n_layer=values["n_layer"], n_embd=values["n_embd"],
                         block_size=values["block_size"], n_head=values["n_head"])
    except ValueError as exc:
        raise UsageError(f"bad model shape: {exc}") from None


def resume_run(args: argparse.Namespace) -> Run:
    run = Run.load(args.resume, backend=args.backend)
    for name, (attribute, _) in RUN_OPTIONS.items():
        given, saved = getattr(args, name), _attribute(run, attribute)
        if given is not None and given != saved:
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} {_shorten(str(given))} conflicts with the checkpoint {args.resume} "
                             f"({_shorten(str(saved))}); a resumed run keeps its checkpoint's settings")
    if args.data is not None and sorted(load_docs(args.data)) != sorted(run.docs):
        raise UsageError(f"--data {args.data} holds other documents than the run in {args.resume}; "
                         "a resumed run trains on the documents stored in its checkpoint")
    return run


def _attribute(run: Run, dotted: str):
    value = run
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class HeldOut:
    """--eval-data and --eval-every: the held-out documents, and a line with the model's
    loss on them (Run.evaluate) every K steps and after the last step, as nanoGPT prints
    its validation loss.  Evaluating changes nothing in the run: its losses stay those of a
    run without --eval-data."""

    def __init__(self, path: str, every: Optional[int]) -> None:
        self.path = path
        self.every = every  # None: only after the last step
        self.docs: list[str] = []

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Optional["HeldOut"]:
        if args.eval_data is None:
            if args.eval_every is not None:
                raise UsageError("--eval-every needs --eval-data PATH (the held-out documents to evaluate)")
            return None
        return cls(args.eval_data, args.eval_every)

    def load(self, run: Run) -> None:
        """The documents, read as --data's are and checked against the run's vocabulary."""
        docs = load_docs(self.path)
        try:
            run.tokenizer.encode_all(docs)
        except ValueError as exc:
            raise DataError(f"--eval-data {self.path}: {exc}; held-out documents must use the characters of "
                            "the training data") from None
        self.docs = docs

    def due(self, run: Run) -> bool:
        return run.step == run.num_steps or (self.every is not None and run.step % self.every == 0)

    def next_due(self, step: int, num_steps: int) -> int:
        """The first step after `step` at which ``due`` holds."""
        return num_steps if self.every is None else min(num_steps, next_multiple(step, self.every))

    def line(self, run: Run) -> str:
        return f"step {run.step:4d} / {run.num_steps:4d} | eval loss {run.evaluate(self.docs):.4f}"


def train_with_progress(run: Run, save: Optional[Checkpointing], save_every: Optional[int], stop: StopRequest,
                        out: Console, held_out: Optional[HeldOut] = None) -> Optional[DivergenceError]:
    """Train to the end, to the first step boundary after a stop signal (Run.stop_soon,
    called by the signal handler), to the first due step after stdout closed when
    there is nothing to save, or to a divergence (returned); with `held_out`, print its
    loss line when due."""
    progress = Progress(run.num_steps, stream=out, start=run.step)
    pacer = ClockPacer()  # the terminal's redraws and the pipe's polls are up to the clock
    stop.on_request = run.stop_soon  # a stop signal ends the stretch of steps under way at its step boundary

    def after_steps(run: Run) -> int:
        """What is due at run.step; the next step at which anything is (see pacing.py)."""
        step = run.step
        progress.update(step, run.losses[-1])
        out.notice_closed_pipe()
        if save_every and step % save_every == 0 and step < run.num_steps:
            save.periodic(run)
        if held_out is not None and held_out.due(run) and not stop.requested and out.lost is None:
            progress.close()  # a terminal's progress line ends; the next update starts a new one
            out.print(held_out.line(run))
        if stop.requested or (out.lost is not None and save is None):
            raise _StopTraining
        return min(pacer.next_step(step), progress.next_due(step),
                   next_multiple(step, save_every) if save_every else run.num_steps,
                   held_out.next_due(step, run.num_steps) if held_out is not None else run.num_steps)

    try:
        if stop.requested:  # before the first step
            raise _StopTraining
        due = run.step + 1
        while run.step < run.num_steps:
            run.train(until=due)  # the steps up to the next due one, with no Python between them
            due = after_steps(run)
    except _StopTraining:
        pass
    except DivergenceError as exc:  # the run is at its last good state
        return exc
    finally:
        progress.close()
    return None


def _output_lost(out: Console, kept: Optional[str]) -> int:
    """The exit code once stdout is gone; `kept`: what the command wrote to disk, if anything."""
    if out.reader_left:  # `| head`: the reader chose to stop reading; say nothing
        return EXIT_OK if kept is not None else EXIT_OUTPUT_CLOSED
    note = f"; {kept} was written" if kept is not None else ""
    return _error(f"cannot write to standard output ({out.lost.strerror or out.lost}){note}", EXIT_FAILURE)


def print_samples(run: Run, num: int, temperature: float, out: Console) -> None:
    for i in range(num):
        if out.lost is not None:
            return
        out.print(f"sample {i + 1:2d}: {run.sample(1, temperature)[0]}")


# --- sample ------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace, out: Console) -> int:
    run = Run.load(args.checkpoint, backend=args.backend)
    if args.seed is not None:
        run.rng = random.Random(args.seed)
    stop_if_interrupted_at_start_up()  # a Ctrl-C that Python ignored while the run loaded
    print_samples(run, args.num, args.temperature, out)
    return _output_lost(out, None) if out.lost is not None else EXIT_OK


# --- eval --------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace, out: Console) -> int:
    run = Run.load(args.checkpoint, backend=args.backend)  # the checkpoint first, as train --resume does
    if args.data is None:
        docs, source = run.docs, "the run trained on"
    else:
        docs, source = load_docs(args.data), f"of {args.data}"
        try:
            run.tokenizer.encode_all(docs)
        except ValueError as exc:
            raise DataError(f"--data {args.data}: {exc}; the checkpoint's model knows only its training "
                            "data's characters") from None
    stop_if_interrupted_at_start_up()  # a Ctrl-C that Python ignored while the run loaded
    loss = run.evaluate(docs)
    out.print(f"eval loss {loss!r} (mean over the {len(docs)} documents {source}, step {run.step} / {run.num_steps})")
    return _output_lost(out, None) if out.lost is not None else EXIT_OK


# --- export ------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace, out: Console) -> int:
    """The checkpoint's weights as a safetensors file; the target checked before the checkpoint is read."""
    check_output_option("export target", args.out, {"the checkpoint": args.checkpoint})
    run = Run.load(args.checkpoint)
    try:
        run.export(args.out)
    except OSError as exc:
        raise Failure(f"cannot write {args.out}: {exc.strerror or exc}") from None
    out.print(f"wrote {args.out}: the {run.num_params} weights (float64) of step {run.step} / {run.num_steps}")
    return _output_lost(out, args.out) if out.lost is not None else EXIT_OK


# --- download ----------------------------------------------------------------------------
def cmd_download(out: Console) -> int:
    """Print the packaged names.txt's path, for --data or other tools; a damaged copy is an error."""
    out.print(str(default_dataset()))
    return _output_lost(out, None) if out.lost is not None else EXIT_OK


# --- bench -------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace, argv: Optional[Sequence[str]], out: Console) -> int:
    if args.compare is not None:
        return cmd_compare(args.compare, out)
    try:
        impls = parse_impls(args.impl)
    except ValueError as exc:
        raise UsageError(f"--impl: {exc}") from None
    sweep: Optional[Sweep] = args.sweep
    config, configs = bench_configs(args, sweep)
    if args.microgpt is not None and not Path(args.microgpt).is_file():
        raise UsageError(f"--microgpt {args.microgpt}: not a file (the path of microgpt.py)")
    programs = ([microgpt_program(Path(args.microgpt))] if args.microgpt is not None else []) + args.program
    baseline = check_rungs(impls, programs, args.baseline)
    if sweep is not None:
        try:
            check_programs(sweep, programs)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if programs and args.steps <= FEW:
        raise UsageError(f"--steps must be more than {FEW} with --program or --microgpt (a program's time per step "
                         f"is T(N) - T({FEW}) over N - {FEW})")
    data_path = data_file(args)
    inputs = {"the data file": data_path, "the microgpt.py script": args.microgpt}
    products = LADDER_PRODUCTS if sweep is None else SWEEP_PRODUCTS
    out_dir = check_bench_outputs(args.out, inputs, products)
    if args.json is not None:
        check_json_output(args.json, out_dir, inputs, products)
    docs = load_docs(data_path)
    vocab_size = Tokenizer.from_docs(docs).vocab_size
    for each in configs:  # the model against this data's vocabulary, from the numbers (run_ladder checks it too, late)
        try:
            check_model_size(each, vocab_size)
        except ValueError as exc:
            swept = f" at --sweep {sweep.label(getattr(each, sweep.param))}" if sweep is not None else ""
            raise UsageError(f"bad model shape for {data_path}{swept}: {exc}") from None
    timing = Timing(repeats=args.repeats, min_time=args.min_time, timeout=args.timeout)
    command = shlex.join([PROG] + list(sys.argv[1:] if argv is None else argv))
    ladder = {"ref_steps": args.ref_steps, "programs": programs, "timing": timing}
    with stop_on_signals() as stop:  # a stop signal ends the measuring; what was measured is written
        if sweep is None:
            rows = run_ladder(docs, config, args.steps, impls, out=out, stop=stop, **ladder)
            tables, row_names = [compare(rows, baseline)], [(row, row.impl) for row in rows]
            out.print("", format_table(tables[0]))
        else:
            points = run_sweep(docs, sweep, configs, args.steps, impls, baseline, out, stop, **ladder)
            tables = [point.table for point in points]
            row_names = [(row, f"{row.impl} at {sweep.label(point.value)}") for point in points for row in point.rows]
            out.print("", format_sweep_table(sweep, points))
        stopped = signal_name(stop.signum) if stop.requested else None
        try:
            if sweep is None:
                notes = write_outputs(out_dir, rows, tables[0], config, command, stopped_by=stopped)
            else:
                notes = write_sweep_outputs(out_dir, sweep, points, config, command, stopped_by=stopped)
        except OSError as exc:
            raise Failure(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
        if args.json is not None:
            write_json(args.json, results(tables, config, data_path, len(docs), args.steps, args.ref_steps, timing,
                                          command, stopped, sweep=sweep and (sweep.param, sweep.values)))
    wrote = (f"wrote {out_dir / LADDER_TABLE}" + ("" if notes else f" and {out_dir / products[1]}")
             + (f" and {args.json}" if args.json is not None else ""))
    if stopped is not None:
        measured = sum(row.status == "ok" for row, _ in row_names)
        planned = (len(impls) + len(programs)) * len(configs)
        print_error(f"{PROG}: interrupted by {stopped} after {measured} of {planned} "
                    f"{'rungs and values' if sweep else 'implementations'}; {wrote} (partial)")
        return 128 + stop.signum
    out.print(*notes, wrote)
    failed = [name for row, name in row_names if row.status.startswith("failed")]
    if failed:
        print_error(f"{PROG}: error: {len(failed)} rung(s) failed ({', '.join(failed)}; their rows say why); {wrote}")
        return EXIT_FAILURE
    return _output_lost(out, str(out_dir / LADDER_TABLE)) if out.lost is not None else EXIT_OK


def bench_configs(args: argparse.Namespace, sweep: Optional[Sweep]) -> tuple[GPTConfig, list[GPTConfig]]:
    """The model of the ladder, and the model at each value of the sweep (that one alone
    without a sweep; with one, the first value's is the ladder's); UsageError for a shape that
    makes no model.  The swept size's own option is replaced by the sweep's values."""
    if sweep is None:
        config = make_config(vars(args))
        return config, [config]
    configs = []
    for value in sweep.values:
        try:
            configs.append(make_config({**vars(args), sweep.param: value}))
        except UsageError as exc:
            raise UsageError(f"--sweep {sweep.label(value)}: {exc}") from None
    return configs[0], configs


def check_json_output(path: str, out_dir: Path, inputs: dict, products: Sequence[str]) -> None:
    """--json's target, checked as --out's products are, and none of them (they may not exist yet)."""
    check_output_option("--json", path, inputs)
    for name in products:
        if Path(path).resolve() == (out_dir / name).resolve():
            raise UsageError(f"--json {path}: is --out's {name}; give the JSON file another name")


def write_json(path: str, result: dict) -> None:
    text = (json.dumps(result, indent=1, allow_nan=False) + "\n").encode("utf-8")
    try:
        write_atomically(path, lambda fh: fh.write(text))
    except OSError as exc:
        raise Failure(f"cannot write --json {path}: {exc.strerror or exc}") from None


def cmd_compare(paths: Sequence[str], out: Console) -> int:
    """--compare A.json B.json: print the two result files compared (see ladder/results.py)."""
    try:
        first, second = (load_results(path) for path in paths)
    except ResultsError as exc:
        raise UsageError(f"--compare {exc}") from None
    out.print(compare_files(first, second, paths))
    return _output_lost(out, None) if out.lost is not None else EXIT_OK


def check_rungs(impls: Sequence[str], programs: Sequence, baseline: Optional[str]) -> Optional[str]:
    """Every rung's name once, and the baseline one of them (UsageError otherwise); the
    baseline, None for the default one (chosen once measured: see default_baseline)."""
    names = list(impls) + [program.name for program in programs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"two rungs named {', '.join(repeated)}: the --impl names, microgpt.py (--microgpt) and "
                         "each --program NAME must all differ")
    if baseline is not None and baseline not in names:
        raise UsageError(f"--baseline {baseline}: no such rung; the rungs are {', '.join(names)}")
    return baseline


def check_bench_outputs(out: str, inputs: dict, products: Sequence[str]) -> Path:
    """--out, made if missing, and each product in it checked as --save's target is (see
    files.check_output), before anything is measured; the folder, resolved."""
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the directory: {exc.strerror or exc}") from None
    for product in products:
        check_output_option("--out", str(out_dir / product), inputs)
    return out_dir
