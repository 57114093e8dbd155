"""The recorder's writer queue without ROS: which jobs are queued, refused or dropped, and what a waiting call gets."""

from __future__ import annotations

import threading
import time

from dli_perception.core.recording_jobs import BUSY, SHUTTING_DOWN, Job, JobQueue, Outcome


def run(coro, timeout_s: float = 5.0):
    """Drive a coroutine that awaits NextWake, as an executor does on each wake; returns its result."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value
        time.sleep(0.005)
    raise AssertionError("the coroutine never finished")


def test_frames_beyond_frames_max_are_not_queued():
    jobs = JobQueue(frames_max=2)
    assert jobs.put_frame(Job("save")) and jobs.put_frame(Job("save"))
    assert not jobs.put_frame(Job("save"))
    assert jobs.queue.qsize() == 2 and jobs.unfinished == 2
    job = jobs.take(0.1)
    assert jobs.start(job)
    jobs.done(0.01)
    assert jobs.put_frame(Job("save"))  # room again once the writer took one


def test_a_call_with_nothing_ahead_is_queued_however_slow_the_last_write_was():
    jobs = JobQueue(frames_max=4)
    jobs.put_frame(Job("save"))
    assert jobs.start(jobs.take(0.1))
    jobs.done(took_s=9.0)  # one write took 9 s
    assert jobs.submit_call(Job("save"), timeout_s=1.0) is None
    # one call ahead at 9 s per job: the next one is refused at once, saying why
    refusal = jobs.submit_call(Job("save"), timeout_s=1.0)
    assert refusal is not None and refusal.reason == BUSY and not refusal.success
    assert "1 jobs ahead" in refusal.message and "nothing was done" in refusal.message
    assert jobs.calls_waiting == 1


def test_calls_are_bounded_in_number():
    jobs = JobQueue(frames_max=4, max_calls=3)
    assert [jobs.submit_call(Job("undo"), 10.0) for _ in range(3)] == [None] * 3  # pace unknown yet: 0 s
    refusal = jobs.submit_call(Job("undo"), 10.0)
    assert refusal is not None and refusal.reason == BUSY and "3 jobs ahead" in refusal.message


def test_a_waiting_call_gets_the_writers_outcome():
    jobs = JobQueue(frames_max=4)
    job = Job("undo")
    assert jobs.submit_call(job, 2.0) is None
    done = Outcome(True, "removed cup/000001.jpg")

    def writer() -> None:
        taken = jobs.take(1.0)
        assert jobs.start(taken)
        time.sleep(0.1)
        taken.reply.set_result(done)
        jobs.done(0.1)

    thread = threading.Thread(target=writer)
    thread.start()
    assert run(jobs.wait(job, 2.0, time.monotonic())) is done
    thread.join()
    assert jobs.calls_waiting == 0 and jobs.unfinished == 0 and abs(jobs.job_s - 0.1) < 1e-9


def test_a_call_not_reached_by_its_deadline_is_cancelled_and_the_writer_skips_it():
    jobs = JobQueue(frames_max=4)
    job = Job("save")
    assert jobs.submit_call(job, 0.2) is None
    started = time.monotonic()
    outcome = run(jobs.wait(job, 0.2, started))
    assert 0.2 <= time.monotonic() - started < 1.0
    assert outcome.reason == BUSY and "did not get to it" in outcome.message and "nothing was done" in outcome.message
    assert not jobs.start(jobs.take(0.1))  # the writer skips the cancelled call


def test_a_call_whose_write_runs_past_the_deadline_may_still_complete():
    jobs = JobQueue(frames_max=4)
    job = Job("save")
    assert jobs.submit_call(job, 0.2) is None
    assert jobs.start(jobs.take(0.1))  # the writer is on it and stays on it
    outcome = run(jobs.wait(job, 0.2, time.monotonic()))
    assert outcome.reason == BUSY and "may still complete" in outcome.message


def test_a_call_cancelled_at_shutdown_says_so():
    jobs = JobQueue(frames_max=4)
    job = Job("save")
    assert jobs.submit_call(job, 2.0) is None
    job.reply.cancel()
    outcome = run(jobs.wait(job, 2.0, time.monotonic()))
    assert outcome.reason == SHUTTING_DOWN and not outcome.success
