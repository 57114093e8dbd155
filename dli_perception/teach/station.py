"""What every open page shares: the classes, thumbnails, training curves, health, and the actions.

One :class:`Station` per server. Actions (add a class, capture, undo, record, train, cancel, use
the model, enable the reaction, stop) go through the graph client one at a time (an asyncio lock),
so two tabs never interleave a label change with another tab's capture. Results the nodes publish
arrive through the graph client's ``on_update`` and are pushed to every page; a page opened later
(or again, after it was closed during training) gets the whole state at once.

Nothing here touches the dataset or the trainer directly: everything goes over the nodes' topics and
services, so the station works with the nodes on another machine.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from dli_perception.core import tasks
from dli_perception.core.contracts import TrainProgress, TrainStatus
from dli_perception.errors import ImageConversionError, InvalidLabelError, TargetError
from dli_perception.graph_client import NodeNames, Reply, Result, Teacher

THUMBS_PER_CLASS = 6
MAX_CLASSES = 64
MAX_RECORD_S = 120.0
"""Hold-to-record stops by itself after this long (seconds), in case a release was lost."""
TRAINING_MIN_IMAGES = 2
"""Images a class needs before training (the validation split takes at least one of each)."""

STATUS_CODES = {
    Result.SUCCEEDED: 200,
    Result.INVALID: 400,
    Result.REFUSED: 409,
    Result.UNAVAILABLE: 503,
    Result.TIMED_OUT: 504,
}


@dataclass
class Thumb:
    """A small JPEG of the frame shown when a capture was made, the file the recorder saved, and the
    capture's XY target or label set (regression, multi-label)."""

    path: str
    data_url: str
    xy: tuple[float, float] | None = None
    labels: tuple[str, ...] | None = None

    def json(self) -> dict[str, Any]:
        return {"src": self.data_url, "xy": self.xy, "labels": self.labels}


class Station:
    """Shared state and serialized actions of the teach station (lives on the server's event loop)."""

    def __init__(self, teacher: Teacher, loop: asyncio.AbstractEventLoop, newest_frame: Callable[[], Any]) -> None:
        self.teacher = teacher
        self.loop = loop
        self.newest_frame = newest_frame
        self.names: NodeNames = teacher.names
        self.lock = asyncio.Lock()
        self.added: list[str] = []
        self.thumbs: dict[str, collections.deque[Thumb]] = {}
        self.curves: list[dict[str, Any]] = []
        self.curve_run = 0
        self.message = {"ok": True, "text": "", "at": 0.0}
        self.recording: dict[str, Any] | None = None  # {"class", "client", "since"}
        self.listeners: list[Callable[[str], None]] = []
        self.announced_task = tasks.CLASSIFICATION  # the task the pages were last told (state)

    @property
    def task_type(self) -> str:
        """The task the recorder records (its diagnostics say), classification until it was heard from."""
        task = self.teacher.recorder_task()
        return task if task in tasks.TASKS else tasks.CLASSIFICATION

    # -- events from the graph client (executor threads) -----------------------------------------
    def on_update(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self._apply_update, kind, value)

    def _apply_update(self, kind: str, value: Any) -> None:
        if kind == "progress":
            self._add_curve_point(value)
        elif kind == "train_status" and value.status != "failed":
            self.curve_run = value.run
        if kind in ("scores", "label", "xy_result", "label_set"):
            self._changed("live")
        elif kind == "health":
            self._changed("health")
            recorder = self.teacher.node_health(self.names.recorder)
            if recorder is not None and recorder.name == value.name:
                # The task decides each page's panel, and it is known only from these diagnostics, which
                # can come after the recorder's counts (a state that still said classification). A
                # multi-label dataset's number of images comes with them too.
                task = self.task_type
                if task != self.announced_task or task == tasks.MULTILABEL:
                    self.announced_task = task
                    self._changed("state")
        else:
            self._changed("state")

    def _add_curve_point(self, event: TrainProgress) -> None:
        if event.phase == "load" or (event.epoch <= 1 and event.phase in ("features",)):
            self.curves = []
        if event.phase == "epoch":
            self.curves = [p for p in self.curves if p["epoch"] < event.epoch]
            self.curves.append(
                {
                    "epoch": event.epoch,
                    "loss": event.loss,
                    "accuracy": event.accuracy,
                    "val_loss": event.val_loss,
                    "val_accuracy": event.val_accuracy,
                }
            )

    def _changed(self, what: str) -> None:
        for listener in list(self.listeners):
            listener(what)

    def say(self, reply: Reply | None = None, *, ok: bool = True, text: str = "") -> dict[str, Any]:
        """Record the latest outcome for every page; returns the JSON answer of the request."""
        if reply is not None:
            ok, text = reply.ok, reply.message
        self.message = {"ok": ok, "text": text, "at": time.time()}
        self._changed("state")
        return {"ok": ok, "message": text}

    # -- snapshots -------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        counts = self.teacher.counts()
        names = list(counts.per_class) if counts is not None else []
        return names + [n for n in self.added if n not in names]

    def state(self) -> dict[str, Any]:
        counts = self.teacher.counts()
        per_class = counts.per_class if counts is not None else {}
        progress, status = self.teacher.progress(), self.teacher.train_status()
        reaction = self.teacher.reaction_state()
        training = self._training_running(progress, status)
        task = self.task_type
        images = counts.total if counts is not None else 0  # an image per class (classification, regression)
        if task == tasks.MULTILABEL:  # an image counts once per label it shows: the recorder says how many
            recorder = self.teacher.node_health(self.names.recorder)
            text = recorder.values.get("images", "") if recorder is not None else ""
            images = int(text) if text.isdigit() else 0
        return {
            "type": "state",
            "task_type": task,
            "images": images,
            "classes": [{"name": n, "count": per_class.get(n, 0)} for n in self.class_names()],
            "counts_known": counts is not None,
            "recording": None if self.recording is None else self.recording["class"],
            "training": {
                "running": training,
                "progress": None if progress is None else {**progress.__dict__, "fraction": progress.fraction},
                "status": None if status is None else _status_json(status),
                "curves": self.curves,
            },
            "model": (result.model if (result := self.teacher.served_result()) is not None else ""),
            "reaction": None if reaction is None else reaction.__dict__,
            "message": self.message,
        }

    def _training_running(self, progress: TrainProgress | None, status: TrainStatus | None) -> bool:
        """The trainer's diagnostics say so, or progress came after the last status (diagnostics lag 1 s)."""
        health = self.teacher.node_health(self.names.trainer)
        if health is None or health.current_level() == "gone":
            return False
        if health.values.get("state") == "training":
            return True
        progress_at = self.teacher.received_at("progress") or 0.0
        status_at = self.teacher.received_at("train_status") or 0.0
        return progress is not None and progress.phase != "done" and progress_at > status_at

    def live(self) -> dict[str, Any]:
        for kind in ("xy_result", "label_set"):  # a regression or multi-label model is served
            result = self.teacher.latest(kind)
            age = time.monotonic() - (self.teacher.received_at(kind) or 0.0)
            if result is not None and age < 2.0:
                live = {"type": "live", "label": None, "model": result.model, "age_s": round(age, 2)}
                if kind == "xy_result":
                    return {**live, "xy": [result.x, result.y]}
                return {**live, "labels": list(result.labels), "scores": result.scores}
        scores = self.teacher.scores()
        if scores is None:
            return {"type": "live", "label": None}
        age = time.monotonic() - (self.teacher.received_at("scores") or 0.0)
        return {
            "type": "live",
            "label": scores.label if age < 2.0 else None,
            "score": scores.score,
            "scores": scores.scores,
            "model": scores.model,
            "latency_ms": scores.latency_ms,
            "age_s": round(age, 2),
        }

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        nodes = []
        for name in self.names.all():
            h = self.teacher.node_health(name)
            if h is None:
                nodes.append({"name": name, "level": "missing", "message": "not heard from (is it running?)"})
            else:
                level = h.current_level(now)
                message = h.message if level != "gone" else f"silent for {h.age_s(now):.0f} s: stopped or unreachable"
                nodes.append({"name": name, "level": level, "message": message})
        return {"type": "health", "nodes": nodes}

    def thumbs_message(self) -> dict[str, Any]:
        return {"type": "thumbs", "thumbs": {c: [t.json() for t in d] for c, d in self.thumbs.items()}}

    # -- actions (request handlers call these; each returns (http status, JSON answer)) ----------
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.loop.run_in_executor(None, fn, *args)

    def _answer(self, reply: Reply) -> tuple[int, dict[str, Any]]:
        return STATUS_CODES[reply.result], self.say(reply)

    def _invalid(self, text: str) -> tuple[int, dict[str, Any]]:
        return 400, self.say(ok=False, text=text)

    def check_class(self, name: Any, *, known: bool) -> str:
        """The canonical class name, or InvalidLabelError with the reason (unknown class when ``known``)."""
        from dli_perception.core.dataset import validate_label

        if not isinstance(name, str):
            raise InvalidLabelError("give the class name as a string")
        label = validate_label(name)
        if known and label not in self.class_names():
            raise InvalidLabelError(f"unknown class {label!r}: add it first")
        return label

    async def add_class(self, name: Any) -> tuple[int, dict[str, Any]]:
        try:
            label = self.check_class(name, known=False)
        except InvalidLabelError as exc:
            return self._invalid(str(exc))
        async with self.lock:
            if label in self.class_names():
                return 200, self.say(text=f"class {label!r} is already there")
            if len(self.class_names()) >= MAX_CLASSES:
                return self._invalid(f"at most {MAX_CLASSES} classes")
            self.added.append(label)
        return 200, self.say(text=f"class {label!r} added: show it to the camera and capture")

    async def capture(self, name: Any, xy: Any = None, labels: Any = None) -> tuple[int, dict[str, Any]]:
        """Capture the newest frame: under class ``name``, or with the XY target ``xy`` ([x, y], normalised)
        or the label set ``labels`` (a list of added labels), whichever the recorder's task takes."""
        if xy is not None or labels is not None:
            return await self._capture_target(xy, labels)
        if self.task_type != tasks.CLASSIFICATION:
            return self._invalid(f"the recorder records {self.task_type}: capture with an XY target or a label set")
        try:
            label = self.check_class(name, known=True)
        except InvalidLabelError as exc:
            return self._invalid(str(exc))
        async with self.lock:
            if self.recording is not None:
                return 409, self.say(ok=False, text=f"recording {self.recording['class']!r}: release it first")
            frame = self.newest_frame()
            reply = await self._run(self.teacher.set_label, label)
            if reply.ok:
                reply = await self._run(self.teacher.capture)
            if reply.ok:
                await self._add_thumb(label, reply.path, frame)
        return self._answer(reply)

    async def _capture_target(self, xy: Any, labels: Any) -> tuple[int, dict[str, Any]]:
        try:
            if xy is not None and labels is not None:
                raise TargetError("give either an XY target or a label set, not both")
            if xy is not None:
                if not isinstance(xy, list) or len(xy) != 2:
                    raise TargetError("give the XY target as [x, y], two numbers in [-1, 1]")
                target, task = tasks.validate_xy(*xy), tasks.REGRESSION
            else:
                target, task = self._check_label_set(labels), tasks.MULTILABEL
        except TargetError as exc:
            return self._invalid(str(exc))
        if self.task_type != task:
            return 409, self.say(
                ok=False,
                text=f"the recorder records {self.task_type}, not {task}: start it with task:={task} "
                "(on a new dataset) to capture these targets",
            )
        async with self.lock:
            if self.recording is not None:
                return 409, self.say(ok=False, text=f"recording {self.recording['class']!r}: release it first")
            frame = self.newest_frame()
            if task == tasks.REGRESSION:
                reply = await self._run(self.teacher.set_xy, *target)
            else:
                reply = await self._run(self.teacher.set_labels, target)
            if reply.ok:
                reply = await self._run(self.teacher.capture)
            if reply.ok:
                bucket = tasks.TARGET_DIRS[task]
                if task == tasks.REGRESSION:
                    await self._add_thumb(bucket, reply.path, frame, xy=target)
                else:
                    await self._add_thumb(bucket, reply.path, frame, labels=target)
        return self._answer(reply)

    def _check_label_set(self, labels: Any) -> tuple[str, ...]:
        """A label set from the page: a list of at most :data:`MAX_CLASSES` added labels."""
        if not isinstance(labels, list) or len(labels) > MAX_CLASSES:
            raise TargetError(f"give the label set as a list of at most {MAX_CLASSES} label names")
        return tasks.validate_label_set(labels, self.class_names())

    async def _add_thumb(self, label: str, path: str, frame: Any, **target: Any) -> None:
        if frame is None:
            return
        from dli_perception.teach.frames import THUMB_WIDTH, encode_jpeg

        try:
            jpeg, _, _ = await self._run(encode_jpeg, frame, THUMB_WIDTH, 70)
        except ImageConversionError:
            return
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        self.thumbs.setdefault(label, collections.deque(maxlen=THUMBS_PER_CLASS)).append(Thumb(path, url, **target))
        self._changed("thumbs")

    async def undo(self) -> tuple[int, dict[str, Any]]:
        async with self.lock:
            reply = await self._run(self.teacher.undo)
            if reply.ok and reply.path:
                self._forget_thumb(PurePath(reply.path).parts)
        return self._answer(reply)

    def _forget_thumb(self, removed: tuple[str, ...]) -> None:
        """Drop the thumbnail of an undone capture: the one saved as that file, else the class's newest
        (recorded frames' files are not known here; the removed file's folder is its class)."""
        for thumbs in self.thumbs.values():
            for thumb in thumbs:
                if thumb.path and PurePath(thumb.path).parts[-len(removed) :] == removed:
                    thumbs.remove(thumb)
                    self._changed("thumbs")
                    return
        thumbs = self.thumbs.get(removed[0]) if len(removed) > 1 else None
        if thumbs:
            thumbs.pop()
            self._changed("thumbs")

    async def record(self, name: Any, on: Any, client: str) -> tuple[int, dict[str, Any]]:
        if not isinstance(on, bool):
            return self._invalid("'on' must be true or false")
        if on and self.task_type != tasks.CLASSIFICATION:
            return self._invalid("hold to record is for classes; click the view (regression) or capture (labels)")
        async with self.lock:
            if not on:
                return await self._stop_recording("recording stopped")
            try:
                label = self.check_class(name, known=True)
            except InvalidLabelError as exc:
                return self._invalid(str(exc))
            if self.recording is not None:
                return 409, self.say(ok=False, text=f"already recording {self.recording['class']!r}")
            reply = await self._run(self.teacher.set_label, label)
            if reply.ok:
                reply = await self._run(self.teacher.set_recording, True)
            if reply.ok:
                self.recording = {"class": label, "client": client, "since": time.monotonic()}
                self.loop.create_task(self._watch_recording(self.recording))
        return self._answer(reply)

    async def _stop_recording(self, why: str) -> tuple[int, dict[str, Any]]:
        """Stop continuous capture (call with the lock held)."""
        if self.recording is None:
            return 200, self.say(text="not recording")
        reply = await self._run(self.teacher.set_recording, False)
        self.recording = None
        await self._run(self.teacher.set_label, None)
        if reply.ok:
            reply = Reply(reply.result, f"{why}; {reply.message}")
        return self._answer(reply)

    async def _watch_recording(self, recording: dict[str, Any]) -> None:
        """Add thumbnails while recording; stop after :data:`MAX_RECORD_S` (a lost release)."""
        last = self._count(recording["class"])
        while self.recording is recording:
            await asyncio.sleep(0.25)
            count = self._count(recording["class"])
            if count > last and self.recording is recording:
                await self._add_thumb(recording["class"], "", self.newest_frame())
            last = count
            if time.monotonic() - recording["since"] > MAX_RECORD_S:
                async with self.lock:
                    if self.recording is recording:
                        await self._stop_recording(f"recording stopped after {MAX_RECORD_S:g} s")

    def _count(self, label: str) -> int:
        counts = self.teacher.counts()
        return 0 if counts is None else counts.per_class.get(label, 0)

    async def client_gone(self, client: str) -> None:
        """A page closed: if it was holding the record button, recording stops."""
        async with self.lock:
            if self.recording is not None and self.recording["client"] == client:
                await self._stop_recording("recording stopped: the page that held it closed")

    async def train(self) -> tuple[int, dict[str, Any]]:
        counts = self.teacher.counts()
        if counts is None:
            return 503, self.say(ok=False, text=f"no counts from {self.names.recorder}: is it running?")
        ready = [n for n, c in counts.per_class.items() if c >= TRAINING_MIN_IMAGES]
        if self.task_type != tasks.CLASSIFICATION:
            images = self.state()["images"]
            if images < 2 * TRAINING_MIN_IMAGES:
                return 409, self.say(
                    ok=False, text=f"training needs at least {2 * TRAINING_MIN_IMAGES} images; now: {images}"
                )
        elif len(ready) < 2:
            return 409, self.say(
                ok=False,
                text=(
                    "training needs at least two classes with "
                    f"{TRAINING_MIN_IMAGES} images or more each; now: "
                    + (", ".join(f"{n} {c}" for n, c in counts.per_class.items()) or "no images")
                ),
            )
        async with self.lock:
            if self.recording is not None:
                await self._stop_recording("recording stopped for training")
            self.curves = []
            reply = await self._run(self.teacher.start_training)
        return self._answer(reply)

    async def cancel(self) -> tuple[int, dict[str, Any]]:
        async with self.lock:
            reply = await self._run(self.teacher.cancel_training)
        return self._answer(reply)

    async def use_model(self) -> tuple[int, dict[str, Any]]:
        status = self.teacher.train_status()
        model_dir = status.model_dir if status is not None and status.exported else ""
        async with self.lock:
            reply = await self._run(self.teacher.switch_model, model_dir)
        if not reply.ok:
            return self._answer(reply)
        self.say(text=f"{reply.message}; waiting for it to serve")
        reply = await self._run(self.teacher.wait_for_model, model_dir, 60.0)
        return self._answer(reply)

    async def react(self, on: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(on, bool):
            return self._invalid("'enabled' must be true or false")
        async with self.lock:
            reply = await self._run(self.teacher.enable_reaction, on)
        return self._answer(reply)

    async def stop(self) -> tuple[int, dict[str, Any]]:
        # Not behind the lock: stopping the robot never waits for another tab's action.
        return self._answer(await self._run(self.teacher.stop))


def _status_json(status: TrainStatus) -> dict[str, Any]:
    data = dict(status.__dict__)
    data["classes"] = list(status.classes)
    data["confusion"] = [list(r) for r in status.confusion]
    data["succeeded"] = status.succeeded
    return data
