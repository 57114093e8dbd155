"""What the synthetic camera shows when: :class:`SceneSchedule`, the demo's ground truth."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from dli_perception.errors import ConfigError


@dataclass(frozen=True)
class SceneSchedule:
    """Which class the synthetic camera shows when.

    ``classes`` cycle, ``period_s`` seconds each, from the moment the source was opened, which
    is only known to lie between ``opened_after_ns`` and ``opened_before_ns`` (wall clock,
    ``time.time_ns``, the clock of the frames' stamps). Every answer accounts for that
    uncertainty: a time is given a class only when it is the same for every possible opening time.
    """

    classes: tuple[str, ...]
    period_s: float
    opened_after_ns: int
    opened_before_ns: int

    def __post_init__(self) -> None:
        if not self.period_s > 0 or self.opened_before_ns < self.opened_after_ns or len(self.classes) < 1:
            raise ConfigError("SceneSchedule needs classes, period_s > 0 and opened_after_ns <= opened_before_ns")

    @property
    def uncertainty_s(self) -> float:
        """Width of the window in which the camera opened (s)."""
        return (self.opened_before_ns - self.opened_after_ns) / 1e9

    def narrowed(self, frame_stamp_ns: int) -> SceneSchedule:
        """This schedule, knowing a frame stamped ``frame_stamp_ns`` exists (the source opened before it)."""
        before = min(self.opened_before_ns, max(int(frame_stamp_ns), self.opened_after_ns))
        return dataclasses.replace(self, opened_before_ns=before)

    def slot(self, t_ns: int, opened_ns: int) -> int:
        """Index of the scene shown at ``t_ns`` if the source opened at ``opened_ns`` (may be negative)."""
        return math.floor((t_ns - opened_ns) / 1e9 / self.period_s + 1e-9)

    def class_between(self, first_ns: int, last_ns: int, guard_s: float = 0.0) -> str | None:
        """The class shown during all of ``[first_ns - guard, last_ns + guard]``, or None when a scene may
        change (or the camera may not have been open yet) inside that interval."""
        guard_ns = round(guard_s * 1e9)
        earliest = self.slot(first_ns - guard_ns, self.opened_before_ns)
        latest = self.slot(last_ns + guard_ns, self.opened_after_ns)
        if earliest < 0 or earliest != latest:
            return None
        return self.classes[earliest % len(self.classes)]

    def class_at(self, stamp_ns: int, guard_s: float = 0.0) -> str | None:
        """The class shown in a frame stamped ``stamp_ns``; None within ``guard_s`` of a possible change."""
        return self.class_between(stamp_ns, stamp_ns, guard_s)

    def scene_index(self, stamp_ns: int, guard_s: float = 0.0) -> int | None:
        """The running number of the scene (0, 1, 2, ...) shown at ``stamp_ns``; None near a change."""
        if self.class_at(stamp_ns, guard_s) is None:
            return None
        return self.slot(stamp_ns, self.opened_after_ns)
