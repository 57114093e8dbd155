"""Frames taken only when a worker can use them: its own wait set, a gated callback group, drop counting.

A node whose worker spends tens of milliseconds per frame (classification) should not let the
executor take and convert every frame a camera sends: each take costs milliseconds of Python
(an executor round, a task per callback) and holds the GIL the worker needs, and handing the
frame to the worker costs a thread wake-up. With :class:`FrameWaiter` the idle worker sleeps in
its own wait set on the subscription and takes each frame itself as it arrives; while it is busy,
Fast DDS keeps the newest frame (depth-1 history) and the worker takes it with :func:`take_newest`
when done (:class:`SubscriptionFeed` is this, as the frame feed of a
:class:`~dli_perception.core.live_classifier.LiveClassifier`). Where that wait set cannot be
built, :class:`FrameGate` keeps the subscription in the executor's wait set only while the
worker is idle. Frames replaced in the history were never seen
by Python; :class:`DropCounter` counts them from the publishers' sequence numbers, so
``frames_dropped`` still counts every frame not classified.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rclpy.callback_groups import CallbackGroup

from dli_perception.core.live_classifier import FrameFeed


class FrameGate(CallbackGroup):
    """A callback group whose entities the executor waits on and runs only while it is open.

    ``open()`` (from the worker thread) also wakes the node's executor, so that it rebuilds its
    wait set with the subscription in it; ``close()`` only clears the flag (the executor checks
    it again before taking).
    """

    def __init__(self, node: Any) -> None:
        super().__init__()
        self._node = node
        self.is_open = True

    def can_execute(self, entity: Any) -> bool:
        return self.is_open

    def beginning_execution(self, entity: Any) -> bool:
        return self.is_open

    def ending_execution(self, entity: Any) -> None:
        pass

    def open(self) -> None:
        if self.is_open:
            return
        self.is_open = True
        from rclpy.exceptions import InvalidHandle

        executor = getattr(self._node, "executor", None)
        if executor is not None:
            with contextlib.suppress(InvalidHandle):  # an executor shutting down: nothing left to wake
                executor.wake()

    def close(self) -> None:
        self.is_open = False


def take_newest(subscription: Any) -> tuple[Any, Any] | None:
    """``(message, message info)`` of the newest sample waiting in ``subscription``, or None.

    The same take the executor does, run from the caller's thread; None when nothing is waiting
    or the subscription is already destroyed.
    """
    from rclpy.exceptions import InvalidHandle

    try:
        with subscription.handle:
            got = subscription.handle.take_message(subscription.msg_type, subscription.raw)
    except InvalidHandle:
        return None
    return got if got else None


NO_GID = b"publisher gid not reported"


class DropCounter:
    """Frames a publisher sent that were never taken, from the gaps in its sequence numbers."""

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}

    def skipped(self, info: Any) -> int:
        """Frames of the same publisher between the previous taken one and this one (0 when unknown)."""
        if not isinstance(info, dict):
            return 0
        seq = info.get("publication_sequence_number")
        gid = info.get("publisher_gid")
        # Jazzy's rclpy reports sequence numbers without the publisher's gid: the frames are then
        # taken as one publisher's (a camera), and a number that goes back (another publisher, a
        # restarted camera) starts counting afresh instead of counting a gap.
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else NO_GID
        if not isinstance(seq, int) or seq <= 0 or not key:
            return 0
        last = self._last.get(key)
        self._last[key] = seq
        if len(self._last) > 64:  # publishers come and go: keep the newest few
            self._last.pop(next(iter(self._last)))
        return max(0, seq - last - 1) if last is not None else 0


class FrameWaiter:
    """The worker's own wait for a frame: a wait set of the image subscription and a wake-up guard.

    With it the worker sleeps in ``rcl_wait`` (the GIL released) and takes the frame itself as it
    arrives: no executor round (building its wait set, a task per callback) and no hand-over
    between threads. :meth:`wake` ends a wait early (a model to swap in, shutdown).
    """

    def __init__(self, subscription: Any, context: Any) -> None:
        from rclpy.guard_condition import GuardCondition
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

        self._sub = subscription
        self._guard = GuardCondition(None, None, context=context)
        self._wait_set = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, context.handle)

    def wait(self, timeout_s: float) -> None:
        """Return when a frame is waiting, :meth:`wake` was called, or after ``timeout_s``."""
        ws = self._wait_set
        ws.clear_entities()
        with self._sub.handle, self._guard.handle:
            ws.add_subscription(self._sub.handle)
            ws.add_guard_condition(self._guard.handle)
            ws.wait(int(timeout_s * 1e9))

    def wake(self) -> None:
        from rclpy.exceptions import InvalidHandle

        with contextlib.suppress(InvalidHandle):
            self._guard.trigger()

    def close(self) -> None:
        self._guard.destroy()


class SubscriptionFeed(FrameFeed):
    """Frames of an image subscription (or of a direct hand-off) for a :class:`LiveClassifier` worker.

    With a :class:`FrameWaiter` the feed pulls: the idle worker sleeps in the waiter and takes
    frames itself (``poll``: :func:`take_newest`, handed to ``deliver``); without one, the executor
    delivers frames through ``gate``, which is open only while the worker is idle.
    """

    def __init__(self, gate: FrameGate, subscription: Any, deliver: Any, waiter: FrameWaiter | None = None) -> None:
        self._gate = gate
        self._sub = subscription
        self._deliver = deliver
        self._waiter = waiter
        self.pulls = waiter is not None
        if waiter is not None:
            gate.close()  # the worker takes every frame itself

    def wait(self, timeout_s: float) -> None:
        self._waiter.wait(timeout_s)

    def poll(self) -> None:
        if self._sub is None:
            return
        got = take_newest(self._sub)
        if got is not None:
            self._deliver(got[0], got[1])

    def wake(self) -> None:
        if self._waiter is not None:
            self._waiter.wake()

    def hold(self) -> None:
        self._gate.close()

    def release(self) -> None:
        self._gate.open()

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
