"""One client of the package's nodes: teach a class, capture, train, wait for a model, react, stop.

:class:`Teacher` talks to ``recorder_node``, ``trainer_node``, ``classifier_node`` and
``reaction_node`` over their topics and services only, so it works as well with the nodes in
another process or on another machine as in this one. It owns a private rclpy ``Context``
(initialised without signal handlers by :func:`~dli_perception.nodes.runtime.init_rclpy`), one
node and an executor spinning on a thread of its own (:class:`~dli_perception.nodes.runtime.BackgroundSpin`):
call its methods from any thread but that one (they block for at most their deadline).

Every action returns a :class:`Reply` whose :class:`Result` tells the caller what happened
(``SUCCEEDED``, ``REFUSED`` by the node with its reason, ``UNAVAILABLE`` when the node is not on
the graph, ``TIMED_OUT``, ``INVALID`` input refused before anything was sent; these values live in
:mod:`dli_perception.graph_client_types` and are re-exported here); the last failure is kept in
:attr:`Teacher.last_error`. What the nodes publish is decoded into the typed results of
:mod:`dli_perception.core.contracts` and kept, newest only (``history=N`` keeps the last N of each
kind too, for callers that check a sequence: tests, tools); ``on_update(kind, value)`` is called
(on an executor thread) whenever one arrives. The watches and the waits on results are in
:mod:`dli_perception.graph_client_watch`, the regression and multi-label targets and results in
:mod:`dli_perception.graph_client_tasks`.

    teacher = Teacher()
    teacher.wait_for_nodes(timeout_s=10)
    teacher.set_label("thumbs_up"); teacher.capture()
    teacher.start_training(); status = teacher.wait_for_training(timeout_s=600)
    teacher.enable_reaction(True) ... teacher.stop()
    teacher.close()
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from dli_perception.core.contracts import (
    ClassList,
    Counts,
    LabelSet,
    ReactionState,
    Scores,
    TrainProgress,
    TrainStatus,
    XYResult,
)
from dli_perception.errors import BadMessageError, InvalidLabelError
from dli_perception.graph_client_tasks import TaskTargets
from dli_perception.graph_client_types import HEALTH_STALE_S, LEVELS, NodeHealth, NodeNames, Reply, Result
from dli_perception.graph_client_watch import Watching
from dli_perception.nodes.runtime import BackgroundSpin, init_rclpy

__all__ = ["HEALTH_STALE_S", "LABEL_REPEAT_S", "LEVELS", "NodeHealth", "NodeNames", "Reply", "Result", "Teacher"]

LABEL_REPEAT_S = 0.3
"""How often :meth:`Teacher.set_label` publishes again until the recorder confirms the label."""


_SAVED = re.compile(r"^saved (?P<path>.+) as ['\"]")
_REMOVED = re.compile(r"^removed (?P<path>.+?) \(")


class Teacher(Watching, TaskTargets):
    """Teaches, trains and drives the robot through its nodes; see the module docstring.

    The watches (frames, camera, models, velocity, log), the histories kept with ``history=N`` and the waits
    on them are in :class:`~dli_perception.graph_client_watch.Watching`; the regression and multi-label
    targets and results in :class:`~dli_perception.graph_client_tasks.TaskTargets`.
    """

    def __init__(
        self,
        namespace: str = "",
        *,
        names: NodeNames | None = None,
        node_name: str = "dli_teacher",
        on_update: Callable[[str, Any], None] | None = None,
        stamped_cmd_vel: bool = False,
        context: Any | None = None,
        history: int = 0,
    ) -> None:
        from geometry_msgs.msg import Twist, TwistStamped
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String
        from std_srvs.srv import SetBool, Trigger

        from dli_perception import transport
        from dli_perception.nodes.qos import EVENTS, LATCHED

        transport.apply_default_profile()
        transport.keep_frame_buffers()
        self.names = names or NodeNames()
        self.namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.on_update = on_update
        self.last_error = ""
        self.bad_messages = 0
        self._lock = threading.Lock()
        self._latest: dict[str, Any] = {}
        self._health: dict[str, NodeHealth] = {}
        self._stamped = stamped_cmd_vel
        self._twist_types = (Twist, TwistStamped)
        self._frame_subs: list = []
        self._watching: set[str] = set()
        self._history: dict = {}
        self._history_limit = max(0, int(history))  # values kept per kind; 0: the newest only

        # A caller's initialised Context (nodes of the same process then share its participant); else a private one.
        self._owns_context = context is None
        if context is None:
            from rclpy.context import Context

            context = Context()
            init_rclpy([], context=context)  # no signal handlers: the caller's process owns them
        self.context = context
        from rclpy.node import Node

        self.node = Node(node_name, namespace=self.namespace or None, context=self.context)
        n, node = self.names, self.node
        self._label_pub = node.create_publisher(String, "teach_label", EVENTS)
        self._model_pub = node.create_publisher(String, "model_updated", EVENTS)
        self._cmd_pub = node.create_publisher(TwistStamped if stamped_cmd_vel else Twist, "cmd_vel", EVENTS)
        subs = (
            ("counts", f"{n.recorder}/counts", Counts.decode, LATCHED),
            ("progress", f"{n.trainer}/progress", TrainProgress.decode, EVENTS),
            ("train_status", f"{n.trainer}/status", TrainStatus.decode, LATCHED),
            ("scores", f"{n.classifier}/scores", Scores.decode, EVENTS),
            ("classes", f"{n.classifier}/classes", ClassList.decode, LATCHED),
            ("label", "label", str, EVENTS),
            ("reaction_state", f"{n.reaction}/state", ReactionState.decode, LATCHED),
            ("xy_result", f"{n.classifier}/xy_result", XYResult.decode, EVENTS),
            ("label_set", f"{n.classifier}/label_set", LabelSet.decode, EVENTS),
        )
        self._subs = [
            node.create_subscription(String, topic, self._decoder(kind, decode), qos)
            for kind, topic, decode, qos in subs
        ]
        from diagnostic_msgs.msg import DiagnosticArray

        self._diag_sub = node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, EVENTS)
        self._clients = {
            "capture": node.create_client(Trigger, f"{n.recorder}/capture"),
            "undo": node.create_client(Trigger, f"{n.recorder}/undo"),
            "set_recording": node.create_client(SetBool, f"{n.recorder}/set_recording"),
            "train": node.create_client(Trigger, f"{n.trainer}/train"),
            "cancel": node.create_client(Trigger, f"{n.trainer}/cancel"),
            "enable": node.create_client(SetBool, f"{n.reaction}/enable"),
        }
        self._owner = {
            "capture": n.recorder,
            "undo": n.recorder,
            "set_recording": n.recorder,
            "train": n.trainer,
            "cancel": n.trainer,
            "enable": n.reaction,
        }
        self._executor = SingleThreadedExecutor(context=self.context)  # callbacks only store
        self._executor.add_node(node)
        self._stop = threading.Event()
        self._interrupted = threading.Event()  # interrupt(): waits end now, spinning goes on
        self._spin = BackgroundSpin(self._executor, self.context, name="dli_teacher_spin")

    # -- plumbing -------------------------------------------------------------------------------
    def _decoder(self, kind: str, decode: Callable[[str], Any]) -> Callable[[Any], None]:
        def on_msg(msg: Any) -> None:
            try:
                value = decode(msg.data)
            except BadMessageError as exc:
                with self._lock:
                    self.bad_messages += 1
                    self.last_error = f"{kind}: {exc}"
                return
            with self._lock:
                self._latest[kind] = value
                self._latest[f"{kind}@"] = time.monotonic()
                self._record(kind, value)
            self._notify(kind, value)

        return on_msg

    def _notify(self, kind: str, value: Any) -> None:
        if self.on_update is not None:
            try:
                self.on_update(kind, value)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the client
                self.last_error = f"on_update({kind}) failed: {type(exc).__name__}: {exc}"

    def _on_diagnostics(self, msg: Any) -> None:
        now = time.monotonic()
        changed = []
        for status in msg.status:
            level = status.level if isinstance(status.level, int) else int.from_bytes(status.level, "little")
            health = NodeHealth(
                name=status.name,
                level=LEVELS.get(level, "error"),
                message=status.message,
                values={kv.key: kv.value for kv in status.values},
                received=now,
            )
            with self._lock:
                self._health[status.name] = health
                self._record("health", health)
            changed.append(health)
        for health in changed:
            self._notify("health", health)

    def _fail(self, reply: Reply) -> Reply:
        if not reply.ok:
            self.last_error = reply.message
        return reply

    def _call(self, what: str, request: Any, timeout_s: float) -> tuple[Reply, Any]:
        """Call one of the nodes' services with a deadline; (reply, response or None)."""
        client = self._clients[what]
        owner = self._owner[what]
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() >= deadline or self._ending():
                return self._fail(
                    Reply(Result.UNAVAILABLE, f"{owner} is not running: no {client.srv_name} service on the graph")
                ), None
            time.sleep(0.02)
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        while not done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() < deadline and not self._ending():
                continue  # closing or interrupt() (the teach station stops) ends the wait at once
            future.cancel()
            return self._fail(
                Reply(Result.TIMED_OUT, f"{owner} did not answer {client.srv_name} within {timeout_s:g} s")
            ), None
        response = future.result()
        if response is None:
            return self._fail(Reply(Result.UNAVAILABLE, f"{client.srv_name}: the call failed")), None
        ok = bool(response.success)
        return self._fail(Reply(Result.SUCCEEDED if ok else Result.REFUSED, response.message)), response

    def _ending(self) -> bool:
        return self._stop.is_set() or self._interrupted.is_set()

    def _wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() >= deadline or self._ending():
                return bool(predicate())
            time.sleep(0.02)
        return True

    def latest(self, kind: str) -> Any:
        """The newest decoded value of ``kind`` (counts, progress, train_status, scores, ...), or None."""
        with self._lock:
            return self._latest.get(kind)

    def received_at(self, kind: str) -> float | None:
        """time.monotonic() when ``kind`` last arrived, or None."""
        with self._lock:
            return self._latest.get(f"{kind}@")

    # -- graph ----------------------------------------------------------------------------------
    def nodes_present(self) -> set[str]:
        """Names of this namespace's nodes that are on the graph now."""
        ns = self.namespace or "/"
        return {name for name, node_ns in self.node.get_node_names_and_namespaces() if node_ns == ns}

    def wait_for_nodes(self, names: Iterable[str] | None = None, timeout_s: float = 10.0) -> list[str]:
        """Wait (at most ``timeout_s``) until the nodes are on the graph; returns those still missing."""
        wanted = set(names if names is not None else self.names.all())
        self._wait(lambda: wanted <= self.nodes_present(), timeout_s)
        missing = sorted(wanted - self.nodes_present())
        if missing:
            self.last_error = f"not on the graph after {timeout_s:g} s: {', '.join(missing)}"
        return missing

    def wait_for_services(self, timeout_s: float = 10.0, services: Iterable[str] | None = None) -> list[str]:
        """Wait until the services the client calls are ready; returns the names still missing.

        ``services``: which (``capture``, ``undo``, ``set_recording``, ``train``, ``cancel``, ``enable``); all when None.
        """
        clients = [self._clients[name] for name in (services if services is not None else self._clients)]
        self._wait(lambda: all(c.service_is_ready() for c in clients), timeout_s)
        return sorted(c.srv_name for c in clients if not c.service_is_ready())

    # -- teaching -------------------------------------------------------------------------------
    def set_label(self, label: str | None, timeout_s: float = 3.0) -> Reply:
        """Publish the class being shown on ``teach_label`` (None clears it) until the recorder confirms it."""
        from std_msgs.msg import String

        from dli_perception.core.dataset import validate_label

        if label is not None:
            try:
                label = validate_label(label)
            except InvalidLabelError as exc:
                return self._fail(Reply(Result.INVALID, str(exc)))
        wanted = label or ""
        recorder = self.names.recorder

        def confirmed() -> bool:
            health = self.health().get(self._status_name(recorder))
            return health is not None and health.values.get("label") == wanted and health.age_s() < HEALTH_STALE_S

        deadline = time.monotonic() + timeout_s
        while True:
            self._label_pub.publish(String(data=wanted))
            if self._wait(confirmed, min(LABEL_REPEAT_S, max(0.0, deadline - time.monotonic()))):
                return Reply(Result.SUCCEEDED, f"teach label {wanted!r}" if wanted else "teach label cleared")
            if time.monotonic() >= deadline or self._ending():
                known = self._status_name(recorder) in self.health()
                result = Result.TIMED_OUT if known else Result.UNAVAILABLE
                why = "did not confirm" if known else "is not running (no diagnostics from it)"
                return self._fail(Reply(result, f"{recorder} {why} the teach label {wanted!r} within {timeout_s:g} s"))

    def capture(self, timeout_s: float = 10.0) -> Reply:
        """Save the newest frame under the current teach label; ``path`` is the saved file."""
        from std_srvs.srv import Trigger

        reply, _ = self._call("capture", Trigger.Request(), timeout_s)
        match = _SAVED.match(reply.message) if reply.ok else None
        return Reply(reply.result, reply.message, match["path"] if match else "")

    def undo(self, timeout_s: float = 10.0) -> Reply:
        """Remove the dataset's last saved image; ``path`` is the removed file (relative to the dataset)."""
        from std_srvs.srv import Trigger

        reply, _ = self._call("undo", Trigger.Request(), timeout_s)
        match = _REMOVED.match(reply.message) if reply.ok else None
        return Reply(reply.result, reply.message, match["path"] if match else "")

    def set_recording(self, on: bool, timeout_s: float = 5.0) -> Reply:
        """Start or stop continuous capture under the current teach label."""
        from std_srvs.srv import SetBool

        return self._call("set_recording", SetBool.Request(data=bool(on)), timeout_s)[0]

    def counts(self) -> Counts | None:
        return self.latest("counts")

    # -- training -------------------------------------------------------------------------------
    def start_training(self, timeout_s: float = 10.0) -> Reply:
        """Ask the trainer to start a run on its dataset (answers at once; progress follows)."""
        from std_srvs.srv import Trigger

        return self._call("train", Trigger.Request(), timeout_s)[0]

    def cancel_training(self, timeout_s: float = 10.0) -> Reply:
        from std_srvs.srv import Trigger

        return self._call("cancel", Trigger.Request(), timeout_s)[0]

    def progress(self) -> TrainProgress | None:
        return self.latest("progress")

    def train_status(self) -> TrainStatus | None:
        return self.latest("train_status")

    def wait_for_training(self, timeout_s: float, after_run: int | None = None) -> TrainStatus | None:
        """The status of the run after ``after_run`` (default: the last one seen now), or None at the deadline."""
        if after_run is None:
            last = self.train_status()
            after_run = last.run if last is not None else 0

        def finished() -> bool:
            status = self.train_status()
            return status is not None and status.run > after_run

        if not self._wait(finished, timeout_s):
            self.last_error = f"no training run ended within {timeout_s:g} s"
            return None
        return self.train_status()

    # -- the classifier -------------------------------------------------------------------------
    def switch_model(self, model_dir: str) -> Reply:
        """Tell the classifier to load ``model_dir`` (published on ``model_updated``)."""
        from std_msgs.msg import String

        if not model_dir:
            return self._fail(Reply(Result.INVALID, "no model directory to switch to: train a model first"))
        if self._model_pub.get_subscription_count() == 0:
            return self._fail(
                Reply(Result.UNAVAILABLE, f"{self.names.classifier} is not running: nobody listens on model_updated")
            )
        self._model_pub.publish(String(data=model_dir))
        return Reply(Result.SUCCEEDED, f"asked {self.names.classifier} to load {model_dir}")

    def wait_for_model(self, model_dir: str | None = None, timeout_s: float = 60.0) -> Reply:
        """Wait until the classifier publishes results from ``model_dir`` (any model when None)."""

        def serving() -> bool:
            result = self.served_result()
            if result is None:
                return False
            return model_dir is None or result.model.rstrip("/") == model_dir.rstrip("/")

        if self._wait(serving, timeout_s):
            return Reply(Result.SUCCEEDED, f"{self.names.classifier} serves {self.served_result().model}")
        return self._fail(
            Reply(
                Result.TIMED_OUT,
                f"{self.names.classifier} did not serve {model_dir or 'a model'} within {timeout_s:g} s",
            )
        )

    def scores(self) -> Scores | None:
        return self.latest("scores")

    def classes(self) -> ClassList | None:
        return self.latest("classes")

    # -- reacting -------------------------------------------------------------------------------
    def enable_reaction(self, on: bool, timeout_s: float = 5.0) -> Reply:
        """Allow (True) or forbid (False) the reaction node to move the robot."""
        from std_srvs.srv import SetBool

        return self._call("enable", SetBool.Request(data=bool(on)), timeout_s)[0]

    def stop(self, timeout_s: float = 2.0) -> Reply:
        """Stop the robot now: a zero Twist on ``cmd_vel`` at once, then the reaction node disabled."""
        twist_cls, stamped_cls = self._twist_types
        msg = stamped_cls() if self._stamped else twist_cls()
        if self._stamped:
            msg.header.stamp = self.node.get_clock().now().to_msg()
        self._cmd_pub.publish(msg)
        reply = self.enable_reaction(False, timeout_s)
        if reply.ok:
            return Reply(Result.SUCCEEDED, "zero velocity sent; reaction disabled")
        return self._fail(
            Reply(reply.result, f"zero velocity sent, but disabling the reaction failed: {reply.message}")
        )

    def reaction_state(self) -> ReactionState | None:
        return self.latest("reaction_state")

    # -- health ---------------------------------------------------------------------------------
    def _status_name(self, node: str) -> str:
        return f"{self.namespace}/{node}".lstrip("/")

    def health(self) -> dict[str, NodeHealth]:
        """The newest ``/diagnostics`` status of every node heard from, by status name."""
        with self._lock:
            return dict(self._health)

    def node_health(self, node: str) -> NodeHealth | None:
        return self.health().get(self._status_name(node))

    # -- end ------------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """End every wait for a node now (calls answer UNAVAILABLE or TIMED_OUT, later ones at once).

        For a caller that is stopping: its requests in flight finish at once instead of holding the
        stop for up to their deadline. :meth:`close` still has to follow.
        """
        self._interrupted.set()

    def close(self) -> None:
        """Stop spinning, destroy the node and shut the private context down (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._spin.stop(timeout_s=5.0)
        try:
            self._executor.remove_node(self.node)
            self.node.destroy_node()
            self._executor.shutdown(timeout_sec=1.0)
        finally:
            if self._owns_context:
                self.context.try_shutdown()

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
