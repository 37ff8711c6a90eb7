"""common/command.py: how every entry point ends (one error line, signals, output checks)."""

import ctypes
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from common.command import Interrupted, check_output_folder, check_outputs, run_command, sigterm_unwinds, stop_signals
from common.errors import Diff2LipError, MediaError, ReportedError
from launchers import REPO_ROOT


def test_bad_input_is_one_error_line_and_exit_code_1(capsys):
    def body() -> int:
        raise MediaError("video 'x.mp4' has no video stream; give a video file")

    assert run_command(body) == 1
    assert capsys.readouterr().err == "error: video 'x.mp4' has no video stream; give a video file\n"


def test_an_error_whose_line_was_printed_already_exits_1_without_a_second_line(capsys):
    def body() -> int:
        print("error: no space left on the disk of 'run'", file=sys.stderr)  # as each rank prints it
        raise ReportedError("no space left on the disk of 'run'")

    assert run_command(body) == 1
    assert capsys.readouterr().err == "error: no space left on the disk of 'run'\n"


def test_the_body_exit_code_passes_through():
    assert run_command(lambda: 0) == 0
    assert run_command(lambda: 3) == 3


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_unwinds_the_body_and_exits_with_128_plus_the_signal(signum, capsys):
    cleaned = []

    def body() -> int:
        try:
            os.kill(os.getpid(), signum)
            signal.pause()
            return 0
        finally:
            cleaned.append(True)

    assert run_command(body) == 128 + signum
    assert cleaned == [True]
    assert capsys.readouterr().err.startswith(f"stopped by {signal.Signals(signum).name}")


def test_interrupted_is_not_swallowed_by_except_exception():
    assert not issubclass(Interrupted, Exception)
    with pytest.raises(Interrupted):
        with stop_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()
            except Exception:  # a per-item handler of a list run
                pytest.fail("Interrupted was caught as an Exception")


def test_handlers_are_restored_after_the_command():
    before = signal.getsignal(signal.SIGTERM)
    run_command(lambda: 0)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_pool_item_stopped_inside_a_ctypes_callback_still_ends_when_the_item_returns(capsys):
    """ctypes prints and drops an exception raised in a callback (numba's compiler calls back into
    Python while librosa's kernels compile): the item then goes on, and a worker that ignores the
    one SIGTERM `Pool.terminate` sends would keep the parent waiting forever."""

    def callback():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10000):  # the Python-level handler runs between these bytecodes
            pass

    steps = []
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as raised:
            with sigterm_unwinds():
                ctypes.CFUNCTYPE(None)(callback)()
                steps.append("the item went on after the callback")
        assert raised.value.code == 128 + signal.SIGTERM
        assert steps == ["the item went on after the callback"]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert "Traceback" not in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_real_process_stopped_by_sigterm_exits_143_after_its_clean_up(tmp_path):
    marker = tmp_path / "cleaned"
    code = textwrap.dedent(f"""
        import signal, sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from common.command import run_command
        def body():
            try:
                print("ready", flush=True)
                time.sleep(60)
            finally:
                open({str(marker)!r}, "w").close()
        sys.exit(run_command(body))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and marker.exists()
    assert "stopped by SIGTERM" in err


def test_sigterm_does_not_wait_for_the_queue_of_a_thread_pool_running_child_processes(tmp_path):
    # As torch.compile's inductor does: a pool of 2 threads, each job a child process (there g++,
    # here a 20 s sleep), 20 jobs queued. The interpreter's exit joins the pool's threads, which run
    # their whole queue first: 200 s. A stop signal cancels the queue and ends the running children.
    started, finished = tmp_path / "started", tmp_path / "finished"
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        from concurrent.futures import ThreadPoolExecutor
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from common.command import run_command
        def job(i):
            open({str(started)!r}, "a").write(f"{{i}}\\n")
            subprocess.run(["sleep", "20"], check=True)
            open({str(finished)!r}, "a").write(f"{{i}}\\n")
        def body():
            pool = ThreadPoolExecutor(2)
            futures = [pool.submit(job, i) for i in range(20)]
            time.sleep(0.5)
            print("ready", flush=True)
            futures[-1].result()
            return 0
        sys.exit(run_command(body))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)  # less than one job: without the clean-up this times out
    assert proc.returncode == 143 and "stopped by SIGTERM" in err
    assert len(started.read_text().split()) == 2  # the two running jobs; the 18 queued never started
    assert not finished.exists()  # and those two children were ended, not waited for


def test_an_output_that_is_an_input_or_a_folder_is_refused(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"x")
    os.symlink(video, tmp_path / "link.mp4")
    with pytest.raises(Diff2LipError, match="is the input .* would destroy the input"):
        check_outputs([str(tmp_path / "link.mp4")], [str(video)])
    with pytest.raises(Diff2LipError, match="is a folder; give a file name such as"):
        check_outputs([str(tmp_path)], [str(video)])
    check_outputs([str(tmp_path / "out.mp4")], [str(video)])  # a new name is fine


def test_an_output_folder_is_checked_before_any_work_and_nothing_is_created(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(Diff2LipError, match=r"^--sample_path: '.*file' is a file, not a folder"):
        check_output_folder(str(tmp_path / "file"), "--sample_path")
    with pytest.raises(Diff2LipError, match=r"cannot be created, '.*file' is a file"):
        check_output_folder(str(tmp_path / "file" / "sub"), "--sample_path")
    check_output_folder(str(tmp_path / "new" / "deeper"), "--sample_path")
    assert sorted(os.listdir(tmp_path)) == ["file"]
