"""How each other microgpt port is built and run: one table, read by compare_peers.py.

The project ships none of these ports' code.  A recipe only says what their README says:
the build commands, the program, its arguments, where it expects the names file, how to
set its number of training steps and how to read the losses it prints.  The user clones
the port and points compare_peers.py at the clone (``--port KEY=PATH``).

Placeholders in commands and arguments, filled in per build or run:
    {src}         the clone (or, when the recipe sets ``steps_in_source``, a patched copy of it)
    {build}       an empty build directory, outside the clone
    {steps}       the number of training steps of this build or run
    {data}        the names file (absolute path)
    {loss_flags}  the recipe's ``loss_flags`` in the untimed build whose losses are checked,
                  nothing in the timed builds (an argument that formats to "" is dropped)
Every command runs with the build directory as its working directory; every program runs in
a scratch directory holding the names file under ``data_as`` (so none of them downloads it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class StepsInSource:
    """The step count is a compile-time constant: rewrite it in a copy of the sources."""

    path: str  # file, relative to the clone
    pattern: str  # regex whose single group is the number; must match exactly once


@dataclass(frozen=True)
class Recipe:
    repo: str  # owner/name on GitHub, shown in the table
    label: str  # the row's name in the table (a mode or build variant of the repo)
    kind: str  # what the implementation is, from reading its source
    build: tuple[tuple[str, ...], ...]  # commands, run in {build}
    program: str  # the built executable, relative to {build}
    losses: str  # regex over the output: groups (step number, loss as printed)
    args: tuple[str, ...] = ()  # the program's arguments
    data_as: Optional[str] = None  # file name the program reads the names from, in its cwd
    steps_in_source: Optional[StepsInSource] = None  # how {steps} reaches the program otherwise
    loss_flags: str = ""  # extra build flag that makes the program print its losses
    loss_args: tuple[str, ...] = ()  # extra run arguments for the (untimed) loss run
    note: str = ""  # where we depart from the README, and why

    @property
    def needs_loss_run(self) -> bool:
        """The timed runs do not show every loss: a separate, untimed run prints them."""
        return bool(self.loss_flags or self.loss_args)


def single_file_cpp(repo: str, kind: str, compile_command: tuple[str, ...], steps_pattern: str) -> Recipe:
    """A one-file C++ port: built with its README's command, the data read from input.txt,
    the step count a constant, the losses logged to stderr by the -DDEBUG build (its README's
    switch "to see how it learns"), which is built apart and never timed."""
    return Recipe(
        repo=repo, label=repo.replace("/", " "), kind=kind,
        build=((*compile_command, "{src}/microgpt.cpp", "-o", "microgpt", "{loss_flags}"),),
        program="microgpt", data_as="input.txt", steps_in_source=StepsInSource("microgpt.cpp", steps_pattern),
        loss_flags="-DDEBUG", losses=r"Step (\d+) / \d+ \| loss (\S+)",
        note="NUM_STEPS is a constant: rewritten in a copy of the source; losses from a -DDEBUG build.",
    )


KRISTIANMK_CMAKE = ("cmake", "-S", "{src}", "-B", "{build}/b", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    # never download at configure time: the CMakeLists verifies our file's sha256
                    "-DGPT_ATOMIC_DOWNLOAD_DATASET=OFF", "-DGPT_ATOMIC_DATASET_PATH={data}")

# GptAtomic in its exact mode; its --fast mode is the same build run with another flag.
KRISTIANMK_COMPAT = Recipe(
    repo="kristianmk/microgpt.cpp", label="kristianmk GptAtomic --karpathy-py-compat",
    kind="f64 arena, Python's RNG and DFS topological order",
    build=(KRISTIANMK_CMAKE, ("cmake", "--build", "{build}/b", "--target", "GptAtomic")),
    program="b/GptAtomic", args=("--karpathy-py-compat", "{data}"),
    steps_in_source=StepsInSource("microgpt.cpp", r"constexpr int numSteps\{(\d+)\};"),
    losses=r"step\s+(\d+) /\s+\d+ \| loss (\S+)",
    note="numSteps is a constant: rewritten in a copy of the source.",
)

# Keys are what --port takes.  One clone can give several rows (kristianmk: three modes).
RECIPES: dict[str, tuple[Recipe, ...]] = {
    "anton": (single_file_cpp(
        "AntonTimofeev/microgpt.cpp", "f32 tape, creation-order backward, Python's RNG",
        ("g++", "-std=c++20", "-O3", "-ffast-math", "-march=native", "-mtune=native"),
        r"constexpr uint_t NUM_STEPS = (\d+);"),),
    # its README's first build has -DDEBUG, "remove -DDEBUG for slightly faster execution": timed without
    "charbel": (single_file_cpp(
        "Charbel199/microgpt.cpp", "f32 tape, op enum, FMA node, std::mt19937",
        ("g++", "-std=c++17", "-Ofast", "-march=native"), r"constexpr int NUM_STEPS = (\d+);"),),
    "mplekh": (
        Recipe(
            repo="mplekh/rust-microgpt", label="mplekh rust-microgpt",
            kind="f64 tape, reverse creation-order scan, own xorshift RNG",
            # README: `cargo run --release`; we build with cargo and run the binary it runs
            build=(("cargo", "build", "--release", "--offline", "--quiet",
                    "--manifest-path", "{src}/Cargo.toml", "--target-dir", "{build}/target"),),
            program="target/release/rust-microgpt", data_as="input.txt",
            steps_in_source=StepsInSource("src/main.rs", r"let num_steps = (\d+);"),
            losses=r"step\s+(\d+) \| loss (\S+)",
            note="num_steps is a constant: rewritten in a copy of the source; "
                 "the binary `cargo run --release` would run.",
        ),
    ),
    "enjector": (
        Recipe(
            repo="enjector/microgpt-c", label="enjector microgpt-c (names demo, batch 1)",
            kind="no graph, f32, SIMD, -ffast-math, LR warm-up",
            build=(("cmake", "-S", "{src}", "-B", "{build}/b",
                    # microgpt's model is the header's default; its batch is 8, microgpt's is 1
                    "-DCMAKE_C_FLAGS=-DBATCH_SIZE=1 -DNUM_STEPS={steps}"),
                   ("cmake", "--build", "{build}/b", "--target", "c_names_demo", "-j", "2")),
            program="b/c_names_demo", data_as="c_names.txt",
            losses=r"step\s+(\d+) / \d+ \| loss (\S+)",
            note="built with -DBATCH_SIZE=1 (microgpt's batch; the demo's default is 8); "
                 "prints the loss at step 1 and every 100 steps only.",
        ),
    ),
    "kristianmk": (
        KRISTIANMK_COMPAT,
        replace(KRISTIANMK_COMPAT, label="kristianmk GptAtomic --fast", kind="f64 arena, creation-order backward",
                args=("--fast", "{data}")),
        Recipe(
            repo="kristianmk/microgpt.cpp", label="kristianmk GptAtomicTurbo",
            kind="no graph, f32 kernels",
            build=(KRISTIANMK_CMAKE, ("cmake", "--build", "{build}/b", "--target", "GptAtomicTurbo")),
            program="b/GptAtomicTurbo", args=("--steps", "{steps}", "{data}"),
            loss_args=("--log-every", "1"),  # timed as the README runs it (a loss every 25 steps)
            losses=r"step\s+(\d+) /\s+\d+ \| loss (\S+)",
        ),
    ),
}
