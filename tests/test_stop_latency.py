"""How soon `cymicrogpt train` stops after a stop signal when its steps suddenly slow down.

README: a stop signal ends the run "at the end of the step under way".  The CLI trains
from one due step to the next (pacing.py), the stride to the next clock reading decided
from the steps before it; were the signal read only at due steps, then when steps become
much slower right after a reading (a run of long documents after short ones, a machine
that got busy) it would wait for the whole stride of slow steps (336 steps, 1.3 s here,
before Run.stop_soon).
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from command import TINY

from cymicrogpt import cli
from cymicrogpt.training import Run, Training, start_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SLOW_FROM = 600  # fast steps (tens of us) up to here, then SLOW_STEP_S each
SLOW_STEP_S = 0.004


def test_a_signal_as_steps_slow_down_stops_within_about_10_ms_of_training(capsys, tmp_path: Path,
                                                                          tiny_data_file: Path, monkeypatch) -> None:
    train_step = Training.train_step

    def slowing_down(self, tokens):
        loss = train_step(self, tokens)
        if self.step >= SLOW_FROM:
            time.sleep(SLOW_STEP_S)
        if self.step == SLOW_FROM:
            signal.raise_signal(signal.SIGINT)
        return loss

    part = tmp_path / "part.npz"
    monkeypatch.setattr(Training, "train_step", slowing_down)
    code = cli.main([str(a) for a in ["train", "--data", tiny_data_file, "--steps", 20_000, *TINY,
                                      "--backend", "fused", "--samples", 0, "--save", part]])
    capsys.readouterr()
    assert code == 130
    slow_steps_after_the_signal = Run.load(part).step - SLOW_FROM
    # about 10 ms of training: 2-3 slow steps, not a stride measured on the fast ones
    assert slow_steps_after_the_signal * SLOW_STEP_S <= 0.015, slow_steps_after_the_signal


def test_stop_soon_between_two_trains_ends_the_next_one_before_its_first_step(tiny_docs, tiny_config) -> None:
    """The CLI's handler can run after it last looked at the request and before the next
    train() starts: that train() must not run its stretch of steps."""
    run = start_run(tiny_docs, config=tiny_config, steps=50, backend="fused")
    run.train(until=5)
    run.stop_soon()
    run.train(until=40)
    assert run.step == 5
    run.train(until=10)  # the request was consumed: training goes on
    assert run.step == 10
