"""logger: stdout table, growing progress.csv, log.txt, TensorBoard, and averaging over ranks."""

import csv
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

from guided_diffusion import logger
from launchers import torchrun

_spec = importlib.util.spec_from_file_location("dist_worker_launch", Path(__file__).with_name("dist_worker_launch.py"))
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)


@pytest.fixture(autouse=True)
def _close_logger():
    logger.close()
    yield
    logger.close()


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_header_grows_with_new_keys(tmp_path):
    logger.configure(dir=tmp_path, format_strs=("csv",))
    logger.logkv("step", 1)
    logger.logkv("loss", 0.5)
    logger.dumpkvs()
    assert _rows(tmp_path / "progress.csv") == [["loss", "step"], ["0.5", "1"]]
    logger.logkvs({"step": 2, "loss": 0.25, "grad_norm": 3.0})  # new key: header and old rows widen
    logger.dumpkvs()
    logger.logkv("step", 3)  # missing keys: empty cells
    logger.dumpkvs()
    assert _rows(tmp_path / "progress.csv") == [
        ["loss", "step", "grad_norm"],
        ["0.5", "1", ""],
        ["0.25", "2", "3.0"],
        ["", "3", ""],
    ]


def test_logkv_mean_averages_and_dump_clears(tmp_path):
    logger.configure(dir=tmp_path, format_strs=("csv",))
    for val in (1, 2, 3):
        logger.logkv_mean("loss", val)
    logger.logkv("step", 7)
    assert logger.dumpkvs() == {"loss": 2.0, "step": 7}
    assert logger.dumpkvs() == {}  # values are per dump
    logger.logkv_mean("loss", 10.0)
    assert logger.dumpkvs() == {"loss": 10.0}


def test_stdout_table_and_log_txt(tmp_path, capsys):
    logger.configure(dir=tmp_path, format_strs=("stdout",))
    logger.log("starting", 3)
    logger.warn("lr is high")
    logger.logkv("loss", 0.123456)
    logger.logkv("samples", 100000)
    logger.dumpkvs()
    out = capsys.readouterr().out
    assert "starting 3\n" in out
    assert "WARNING: lr is high\n" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2
    assert "| loss " in table[0] and "0.123" in table[0]
    assert "| samples " in table[1] and "100000" in table[1]  # integers stay exact
    assert len({len(line) for line in table}) == 1  # aligned columns
    log_txt = (tmp_path / "log.txt").read_text()
    assert "starting 3" in log_txt and "| loss " in log_txt
    assert not (tmp_path / "progress.csv").exists()


def test_tensorboard_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger.configure(dir=tmp_path)  # default formats: stdout, csv, tensorboard
    logger.logkv("loss", 0.5)
    logger.logkv("note", "text is not a scalar")
    logger.dumpkvs(step=5)
    logger.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert accumulator.Tags()["scalars"] == ["loss"]
    [event] = accumulator.Scalars("loss")
    assert (event.step, event.value) == (5, 0.5)


def test_missing_tensorboard_is_skipped_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    monkeypatch.setattr(logger, "_warned_no_tensorboard", False)
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        logger.configure(dir=tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logger.configure(dir=tmp_path / "b")  # no second warning
    logger.logkv("loss", 1.0)
    logger.dumpkvs()
    assert _rows(tmp_path / "b" / "progress.csv") == [["loss"], ["1.0"]]
    assert not (tmp_path / "b" / "tb").exists()


def test_other_ranks_write_nothing(tmp_path, capsys):
    logger.configure(dir=tmp_path / "rank1", comm_rank=1)
    logger.log("hidden")
    logger.logkv_mean("loss", 4.0)
    assert logger.dumpkvs() == {"loss": 4.0}
    assert logger.get_dir() == str(tmp_path / "rank1")
    assert not (tmp_path / "rank1").exists()
    assert capsys.readouterr().out == ""


def test_default_logger_prints_without_files(capsys):
    assert logger.get_dir() is None
    logger.log("no configure needed")
    assert capsys.readouterr().out == "no configure needed\n"


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="jsonl"):
        logger.configure(dir=tmp_path, format_strs=("stdout", "jsonl"))


def test_logkv_mean_is_averaged_over_ranks(tmp_path):
    code, output, results = launcher.launch(torchrun(2), "logger", tmp_path)
    assert code == 0, output
    assert sorted(results) == [0, 1]
    for rank, result in results.items():
        # Count-weighted over both ranks, (1 + 3 + 5) / 3; keys logged on one rank only are kept.
        assert result["dumped"]["loss"] == 3.0
        assert result["dumped"]["only_rank1"] == 7.0
        assert result["dumped"]["step"] == 10 + rank  # plain logkv values stay per rank
    assert results[0]["outputs"] > 0 and results[1]["outputs"] == 0
    assert _rows(tmp_path / "logs" / "progress.csv") == [["loss", "only_rank1", "step"], ["3.0", "7.0", "10"]]
