"""pipelines.execution.recorder: records made beside the driver, in order, bounded, stopping
at the first failure, dropped on an interruption."""

from __future__ import annotations

import threading
import time

import pytest

from pipelines.execution.recorder import Recorder


def test_records_are_made_in_submission_order_in_one_other_thread():
    made: list[tuple[int, str]] = []

    def record(i: int) -> int:
        time.sleep(0.002 * (5 - i % 5))  # later records are quicker: order must still hold
        made.append((i, threading.current_thread().name))
        return i * i

    with Recorder(background=True, name="test-recorder") as recorder:
        futures = [recorder.submit(record, i) for i in range(20)]
    assert [i for i, _ in made] == list(range(20))
    assert {name for _, name in made} == {"test-recorder"}
    assert [f.result() for f in futures] == [i * i for i in range(20)]
    assert recorder.busy_seconds > 0


def test_submit_returns_before_the_record_is_made_and_blocks_when_the_queue_is_full():
    release = threading.Event()
    with Recorder(background=True, capacity=2) as recorder:
        started = time.perf_counter()
        first = recorder.submit(release.wait)
        assert time.perf_counter() - started < 0.5 and not first.done()
        recorder.submit(lambda: None)
        recorder.submit(lambda: None)  # the queue (2) is full now, the first record running
        blocked = threading.Thread(target=recorder.submit, args=(lambda: None,))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive()  # waits for room
        release.set()
        blocked.join(5)
        assert not blocked.is_alive()
    assert recorder.waited_seconds >= 0.2


def test_a_failed_record_stops_the_ones_after_it_and_is_raised_in_the_driver():
    made: list[int] = []

    def record(i: int) -> None:
        if i == 2:
            raise ValueError("record 2 broke")
        made.append(i)

    futures = []
    with pytest.raises(ValueError, match="record 2 broke"), Recorder(capacity=50) as recorder:
        for i in range(6):
            futures.append(recorder.submit(record, i))
            time.sleep(0.01)
    assert made == [0, 1]
    assert isinstance(futures[2].exception(), ValueError)
    assert all(f.cancelled() for f in futures[3:])


def test_an_interruption_drops_the_records_not_started_and_waits_for_the_one_being_made():
    made: list[int] = []
    going = threading.Event()

    def record(i: int) -> None:
        going.set()
        time.sleep(0.3)
        made.append(i)

    futures = []
    with pytest.raises(KeyboardInterrupt), Recorder(capacity=50) as recorder:
        futures = [recorder.submit(record, i) for i in range(5)]
        going.wait(5)
        raise KeyboardInterrupt
    assert made == [0]  # the record under way was finished, nothing after it started
    assert futures[0].result() is None
    assert all(f.cancelled() for f in futures[1:])


def test_in_the_foreground_each_record_is_made_by_submit_itself():
    threads = []
    with Recorder(background=False) as recorder:
        future = recorder.submit(lambda: threads.append(threading.current_thread()) or 7)
        assert future.result() == 7 and threads == [threading.current_thread()]
        with pytest.raises(ZeroDivisionError):
            recorder.submit(lambda: 1 / 0)
    assert recorder.waited_seconds == recorder.busy_seconds > 0
