"""common/stages.py: a chain of stages in threads yields what the serial loop yields, in order,
runs its stages at the same time, holds a bounded number of items, raises a stage's error in the
consumer and stops its threads when the consumer stops."""

import threading
import time

import pytest

from common.stages import run_stages


def test_same_items_in_order_as_the_serial_loop():
    stages = [lambda x: x * 3, lambda x: x + 1, lambda x: [x, -x]]
    serial = [stages[2](stages[1](stages[0](i))) for i in range(50)]
    assert list(run_stages(range(50), stages)) == serial
    assert list(run_stages(iter([]), stages)) == []
    assert list(run_stages(range(3), [str])) == ["0", "1", "2"]


def test_the_stages_run_at_the_same_time():
    # While the consumer holds item k, the middle stage already works on item k + 1: a serial
    # loop would reach k + 1 only after the consumer let go of k, and this would time out.
    started = [threading.Event() for _ in range(6)]

    def middle(k):
        started[k].set()
        return k

    for k in run_stages(range(6), [middle, lambda k: k]):
        if k < 5:
            assert started[k + 1].wait(timeout=10), f"item {k + 1} did not start while {k} was consumed"


def test_the_source_runs_at_most_a_few_items_ahead():
    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    stream = run_stages(source(), [lambda x: x, lambda x: x], depth=1)
    assert next(stream) == 0
    time.sleep(0.3)  # let every thread fill what it may
    # One item per queue (2), one in the middle stage, one being pulled: far from the 100.
    assert len(pulled) <= 5, pulled
    stream.close()


@pytest.mark.parametrize("where", ["source", "middle", "last"])
def test_an_error_in_any_stage_is_raised_in_the_consumer(where):
    def source():
        yield 1
        if where == "source":
            raise OSError("disk gone")
        yield 2

    def middle(x):
        if where == "middle" and x == 2:
            raise ValueError("bad frame 2")
        return x

    def last(x):
        if where == "last" and x == 2:
            raise KeyError("no box")
        return x

    got = []
    error = {"source": OSError, "middle": ValueError, "last": KeyError}[where]
    with pytest.raises(error):
        for x in run_stages(source(), [middle, last]):
            got.append(x)
    assert got == [1]


def test_closing_the_stream_ends_its_threads():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = {t.name for t in threading.enumerate()}
    stream = run_stages(endless(), [lambda x: x, lambda x: x], name="closing")
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    time.sleep(0.3)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("closing") and t.name not in before]
