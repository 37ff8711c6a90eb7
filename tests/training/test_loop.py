"""training.loop: one policy for checkpoints, stop signals, non-finite losses and logs, with a
stand-in task; the real commands' runs are in tests/training/test_diff2lip.py and
tests/training/test_syncnet_training.py."""

import os
import signal

import pytest

from common.errors import Diff2LipError
from guided_diffusion import logger
from training.checkpoints import list_checkpoints
from training.loop import LoopPolicy, StopSignal, run_loop, run_training, warmup_lr


class CountingTask:
    """Adds 1 to `value` per step; the steps in `nonfinite` report a non-finite loss."""

    def __init__(self, nonfinite=(), signal_at=None):
        self.value, self.nonfinite, self.signal_at, self.after = 0, set(nonfinite), signal_at, []

    def step(self, step):
        if step == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if step in self.nonfinite:
            return False
        self.value += 1
        logger.logkv_mean("loss", 1.0 / (step + 1))
        return True

    def after_step(self, step, last):
        self.after.append((step, last))
        return False

    def log_totals(self, step, elapsed):
        return {"samples": 2 * step}

    def checkpoint(self, step):
        return {"step": step, "value": self.value}


def policy(tmp_path, **changes):
    values = dict(output_dir=str(tmp_path), max_steps=5, save_every=2, keep=2, log_every=10, max_nonfinite=3)
    values.update(changes)
    return LoopPolicy(**values)


@pytest.fixture
def logged(tmp_path):
    logger.configure(str(tmp_path / "log"), format_strs=["csv"])
    yield tmp_path / "log" / "progress.csv"
    logger.close()


def test_saves_every_n_steps_and_at_the_end_keeping_the_newest(tmp_path, logged):
    stop = StopSignal()
    try:
        assert run_loop(CountingTask(), policy(tmp_path), 0, stop, "cpu") == 5
    finally:
        stop.restore()
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["checkpoint_0000004.pt",
                                                                             "checkpoint_0000005.pt"]
    rows = logged.read_text().splitlines()
    assert rows[0].split(",") == ["loss", "samples", "step"] and rows[1].endswith(",10,5")  # at the end only


def test_a_nonfinite_step_is_skipped_and_counted_then_too_many_in_a_row_stop(tmp_path, logged):
    task, stop = CountingTask(nonfinite={1, 2}), StopSignal()
    try:
        assert run_loop(task, policy(tmp_path), 0, stop, "cpu") == 5
        assert task.value == 3 and [s for s, _ in task.after] == [1, 4, 5]  # the skipped steps still count
        with pytest.raises(Diff2LipError, match="non-finite for 3 steps in a row"):
            run_loop(CountingTask(nonfinite={0, 1, 2}), policy(tmp_path / "n"), 0, stop, "cpu")
    finally:
        stop.restore()
    # Step 2 was due a checkpoint: skipped steps change nothing, so it holds the untouched state.
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path / "n"))] == ["checkpoint_0000002.pt"]


def test_a_nonfinite_last_step_still_writes_the_final_checkpoint(tmp_path, logged):
    import torch

    task, stop = CountingTask(nonfinite={4}), StopSignal()
    try:
        assert run_loop(task, policy(tmp_path, save_every=100), 0, stop, "cpu") == 5
    finally:
        stop.restore()
    final = list_checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in final] == ["checkpoint_0000005.pt"]
    assert torch.load(final[0], weights_only=True) == {"step": 5, "value": 4}


def test_a_stop_signal_during_nonfinite_steps_saves_and_returns(tmp_path, logged):
    stop = StopSignal()
    try:
        task = CountingTask(nonfinite={1, 2}, signal_at=1)
        assert run_loop(task, policy(tmp_path, max_steps=0, save_every=100), 0, stop, "cpu") == 2
    finally:
        stop.restore()
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["checkpoint_0000002.pt"]


def test_a_stop_signal_finishes_the_step_saves_and_returns(tmp_path, logged, capsys):
    stop = StopSignal()
    try:
        assert run_loop(CountingTask(signal_at=2), policy(tmp_path, max_steps=0), 0, stop, "cpu") == 3
    finally:
        stop.restore()
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["checkpoint_0000002.pt",
                                                                             "checkpoint_0000003.pt"]


def test_resuming_continues_the_step_count(tmp_path, logged):
    stop = StopSignal()
    try:
        assert run_loop(CountingTask(), policy(tmp_path, max_steps=7), 5, stop, "cpu") == 7
    finally:
        stop.restore()
    assert os.path.basename(list_checkpoints(str(tmp_path))[-1]) == "checkpoint_0000007.pt"


def test_run_training_is_run_command_one_error_line(capsys):
    import argparse

    def fail(args):
        raise Diff2LipError("bad --thing")

    assert run_training(fail, argparse.ArgumentParser(), []) == 1
    assert capsys.readouterr().err == "error: bad --thing\n"
    assert run_training(lambda args: None, argparse.ArgumentParser(), []) == 0


def test_warmup_is_linear_then_constant():
    assert [warmup_lr(1.0, s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lr(1.0, 0, 0) == 1.0
