"""Stages of a stream that run concurrently, in threads joined by bounded queues.

`run_stages(source, stages)` yields `stages[-1](... stages[0](item))` for every item of
`source`, in order, like the serial loop it replaces, but iterating `source` and every stage
except the last in a thread of its own: while the network samples one chunk, the next chunk is
decoded and cropped, and the chunk before is pasted and encoded by the consumer. So the
slowest stage sets the pace, and at most `depth` items wait between two stages: memory stays
flat in the stream's length.

The work is numpy, OpenCV, PyAV and torch, which release the GIL while they compute, so threads
overlap it; processes would have to copy every frame. An exception in any stage (a bad frame,
a full disk) is raised in the consumer, as the serial loop would raise it; closing the generator
(the consumer stopped, or a stop signal unwound it) stops the threads at their next item.

Hand-written: `concurrent.futures` maps one function over independent items, not a chain of
stages with backpressure, and a stream of video frames must keep its order.
"""

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, List, Sequence

_DONE = object()
_POLL_S = 0.1  # how often a blocked stage looks whether the stream was closed


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _put(q: "queue.Queue", item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: "queue.Queue", stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return _DONE


def _feed(source: Iterable, out: "queue.Queue", stop: threading.Event) -> None:
    try:
        for item in source:
            if not _put(out, item, stop):
                return
    except BaseException as e:  # raised again in the consumer
        _put(out, _Failure(e), stop)
        return
    _put(out, _DONE, stop)


def _work(fn: Callable, inp: "queue.Queue", out: "queue.Queue", stop: threading.Event) -> None:
    while True:
        item = _get(inp, stop)
        if item is _DONE or isinstance(item, _Failure):
            _put(out, item, stop)
            return
        try:
            result = fn(item)
        except BaseException as e:
            _put(out, _Failure(e), stop)
            return
        if not _put(out, result, stop):
            return


def run_stages(source: Iterable, stages: Sequence[Callable], depth: int = 2, name: str = "stage") -> Iterator:
    """Every item of `source` through `stages` in order (see the module docstring); the last
    stage runs in the consumer's thread. `depth` >= 1 items wait between two stages."""
    if not stages:
        raise ValueError("run_stages needs at least one stage")
    stop = threading.Event()
    queues: List[queue.Queue] = [queue.Queue(maxsize=depth) for _ in stages]
    threads = [threading.Thread(target=_feed, args=(source, queues[0], stop), name=f"{name}-source", daemon=True)]
    for k, fn in enumerate(stages[:-1]):
        threads.append(threading.Thread(target=_work, args=(fn, queues[k], queues[k + 1], stop),
                                        name=f"{name}-{k}", daemon=True))
    for t in threads:
        t.start()
    last = stages[-1]
    try:
        while True:
            item = _get(queues[-1], stop)
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield last(item)
    finally:
        stop.set()
        for t in threads:
            # A stage inside a long computation (a network pass) finishes it first; the threads
            # are daemons, so a process that is exiting does not wait for them.
            t.join(timeout=1.0)
