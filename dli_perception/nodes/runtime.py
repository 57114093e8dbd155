"""The one init/spin/shutdown helper behind every node entry point and the one-process runner.

How a process ends matters on a robot: under ``ros2 launch`` a Ctrl-C sends
SIGINT to every process, launch sends another SIGINT (and later SIGTERM), and
the node must still finish its last duties (publish a zero Twist, flush a
file, release the camera) and exit with code 0 and no traceback.

rclpy's own signal handler shuts the context down from another thread, after
which nothing can be published any more. So this helper asks rclpy not to
install it (``SignalHandlerOptions.NO``) and installs Python handlers for
SIGINT and SIGTERM that only set a stop event. The main thread spins in short
slices and notices the event within one slice; cleanup then runs with the
context still valid, with further signals ignored, and ends in
``rclpy.try_shutdown()``. Since further signals are ignored then, a cleanup that
blocks is bounded by :func:`arm_shutdown_watchdog` instead.
"""

from __future__ import annotations

import faulthandler
import inspect
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from dli_perception import transport
from dli_perception.errors import DliPerceptionError
from dli_perception.nodes import launcher

SPIN_SLICE_S = 0.1
"""Longest the main thread waits in the executor before checking the stop event."""

SHUTDOWN_LIMIT_ENV = "DLI_PERCEPTION_SHUTDOWN_LIMIT_S"
SHUTDOWN_LIMIT_S = 10.0
"""Longest a node process's cleanup may take after a stop; then it exits anyway (see :func:`arm_shutdown_watchdog`).

Under ``ros2 launch`` a SIGTERM follows the SIGINT after 5 s and a SIGKILL after 15 s; cleanup ignores
the SIGTERM (it is already stopping), so the limit lies between the two."""

log = logging.getLogger(__name__)

NodeFactory = Callable[..., "object"]

_HARD_EXIT: list[str] = []


def request_hard_exit(reason: str) -> None:
    """From ``destroy_node``: a worker is still inside native code (an ONNX export, a TensorRT build).

    Interpreter finalisation with such a thread alive aborts the process (SIGABRT from the C++
    runtime), so :func:`run_nodes` then ends the process with ``os._exit`` right after the cleanup
    of every node, keeping the exit code. Files are unaffected: they are written atomically.
    """
    _HARD_EXIT.append(reason)


class StopSignal:
    """Python SIGINT/SIGTERM handlers that only record the request to stop."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, _frame) -> None:
        self.received.append(signum)
        self.event.set()

    def install(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def ignore(self) -> None:
        """Ignore further signals while cleanup runs (launch may send a second SIGINT)."""
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)


def init_rclpy(args: Sequence[str] | None, context=None) -> None:
    """``rclpy.init`` without rclpy's signal handlers: the process's own handlers decide when to stop.

    ``context`` None initialises the global context; pass a private ``Context`` to run nodes beside others.
    """
    import rclpy

    kwargs = {"args": list(args) if args is not None else None, "context": context}
    if "signal_handler_options" in inspect.signature(rclpy.init).parameters:
        from rclpy.signals import SignalHandlerOptions

        kwargs["signal_handler_options"] = SignalHandlerOptions.NO
    rclpy.init(**kwargs)


def spin_until_stopped(executor, stop: threading.Event, context=None) -> None:
    """Spin ``executor`` in short slices until ``stop`` is set or the context shuts down."""
    import rclpy

    while not stop.is_set() and rclpy.ok(context=context):
        executor.spin_once(timeout_sec=SPIN_SLICE_S)


class BackgroundSpin:
    """Spins ``executor`` on a daemon thread in short slices until :meth:`stop` or the context shuts down.

    For a process whose main thread does other work (the demo). An exception raised by a callback is
    logged and spinning goes on: one bad message must not stop every node of the process.
    """

    def __init__(self, executor, context=None, name: str = "executor") -> None:
        self.executor = executor
        self.context = context
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import rclpy

        while not self._done.is_set() and rclpy.ok(context=self.context):
            try:
                self.executor.spin_once(timeout_sec=SPIN_SLICE_S / 2)
            except Exception as exc:  # noqa: BLE001 - a callback's error is logged, not fatal
                if self._done.is_set() or not rclpy.ok(context=self.context):
                    return
                log.error("executor: %s: %s", type(exc).__name__, exc)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop spinning and join the thread (at most ``timeout_s``); idempotent."""
        self._done.set()
        self._thread.join(timeout=timeout_s)


def shutdown_limit_s() -> float:
    """The cleanup limit: ``DLI_PERCEPTION_SHUTDOWN_LIMIT_S`` when set to a positive number, else 10 s."""
    try:
        value = float(os.environ.get(SHUTDOWN_LIMIT_ENV, SHUTDOWN_LIMIT_S))
    except ValueError:
        return SHUTDOWN_LIMIT_S
    return value if value > 0 else SHUTDOWN_LIMIT_S


def arm_shutdown_watchdog(code: int, limit_s: float | None = None) -> Callable[[], None]:
    """From the moment a process starts stopping, make sure it ends within ``limit_s``.

    A node's cleanup can block in the middleware (a peer that vanished during the stop, a publisher
    still waiting for acknowledgements); the process then used to ignore launch's SIGTERM (it was
    already stopping) until SIGKILL. Now a daemon thread prints where the main thread is and ends the
    process with ``code`` once the limit has passed. Should the blocked call hold the GIL, so that no
    Python thread can run, faulthandler's native timer dumps every thread's stack 3 s later and exits
    with 1. The final zero Twist is published before anything that can block. Returns a function that
    disarms both (for a caller that goes on living, such as a test calling :func:`run_nodes`).
    """
    limit_s = shutdown_limit_s() if limit_s is None else limit_s
    done = threading.Event()

    def watch() -> None:
        if done.wait(limit_s):
            return
        frame = sys._current_frames().get(threading.main_thread().ident)
        where = "".join(traceback.format_stack(frame)[-4:]) if frame is not None else "(main thread gone)\n"
        print(
            f"[WARN] shutdown still running after {limit_s:g} s ({SHUTDOWN_LIMIT_ENV}); exiting now. It was at:\n{where}",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(code)

    threading.Thread(target=watch, name="shutdown-watchdog", daemon=True).start()
    native = True
    try:
        faulthandler.dump_traceback_later(limit_s + 3.0, exit=True)
    except (RuntimeError, ValueError, OSError):  # no usable stderr: the Python watchdog still runs
        native = False

    def disarm() -> None:
        done.set()
        if native:
            faulthandler.cancel_dump_traceback_later()

    return disarm


def run_nodes(
    factories: Sequence[NodeFactory],
    args: Sequence[str] | None = None,
    *,
    stop: threading.Event | None = None,
    until_exit: bool = False,
) -> int:
    """Initialise rclpy, build the nodes, spin them in one executor, clean up, return an exit code.

    ``factories`` are called with no arguments (node classes work as they are); when one has a true
    ``MOVES_FRAMES`` attribute, frame-sized buffers are kept in the heap (``transport.keep_frame_buffers``). Returns
    0 after a signal or ``stop``; 1 after a :class:`DliPerceptionError` or an invalid
    parameter value during start-up (logged as one clear line, no traceback). Any other exception while rclpy is
    still up propagates (a bug should show its traceback). From the stop on, the process ends within
    :func:`shutdown_limit_s` (:func:`arm_shutdown_watchdog`); ``until_exit`` keeps that limit armed after the
    return, through the interpreter's exit (a node's console script), instead of disarming it.

    The executor is single-threaded: no node's callback blocks (inference, dataset writes and
    training run on threads of their own), and rclpy's MultiThreadedExecutor can fall
    into spinning on ready work it cannot dispatch yet: with the regression demo's four nodes in one
    process it took 92 % of a core and delivered 8.5 of a 20 Hz timer's commands a second, where the
    single-threaded executor took 9 % and delivered 19.9 (``benchmarks/executor.py``, medians of 3).
    """
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from dli_perception.nodes import qos

    transport.apply_default_profile()
    # A node class, or a functools.partial of one (dli-perception up).
    if any(getattr(getattr(factory, "func", factory), "MOVES_FRAMES", False) for factory in factories):
        transport.keep_frame_buffers()  # not for a trainer alone: its tensors are no frames
    _HARD_EXIT.clear()
    signals = StopSignal().install()
    stop_event = signals.event
    if launcher.EARLY_STOP.is_set():  # a signal arrived while the process was still importing
        stop_event.set()
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), stop_event.set()), daemon=True).start()
    nodes: list = []
    executor = None
    code = 0
    try:
        init_rclpy(args)
        executor = SingleThreadedExecutor()
        for factory in factories:
            if stop_event.is_set():
                break
            node = factory()
            nodes.append(node)
            qos.warn_unused_qos_overrides(node)
            executor.add_node(node)
        spin_until_stopped(executor, stop_event)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (DliPerceptionError, ParameterException) as exc:
        # a bad parameter or configuration: one clear line, no traceback (it is not a bug of ours)
        _log_fatal(nodes, exc)
        code = 1
    except Exception:
        if rclpy.ok():
            raise
    finally:
        signals.ignore()
        disarm = arm_shutdown_watchdog(code if sys.exc_info()[0] is None else 1)
        _cleanup(nodes, executor)
        if not signals.received:
            # After a signal the process is ending: keep ignoring, so the second SIGINT that launch
            # sends (it may come 100 ms later, while the interpreter exits) cannot kill it with -2.
            signals.restore()
        if not until_exit:
            disarm()
    if _HARD_EXIT:
        print(f"[WARN] exiting while still busy: {'; '.join(_HARD_EXIT)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)
    return code


def _log_fatal(nodes, exc: Exception) -> None:
    message = f"{type(exc).__name__}: {exc}"
    if nodes:
        nodes[-1].get_logger().fatal(message)
    else:
        print(f"[FATAL] {message}", file=sys.stderr)


def _cleanup(nodes: list, executor) -> None:
    import rclpy

    for node in reversed(nodes):
        try:
            if executor is not None:
                executor.remove_node(node)
            node.destroy_node()
        except Exception as exc:  # noqa: BLE001 - the other nodes' cleanup must still happen
            print(f"[ERROR] cleanup of {type(node).__name__} failed: {exc}", file=sys.stderr)
    if executor is not None:
        try:
            executor.shutdown(timeout_sec=1.0)
        except Exception as exc:  # noqa: BLE001 - shutting down anyway; say why it was not clean
            print(f"[WARN] executor shutdown: {exc}", file=sys.stderr)
    rclpy.try_shutdown()


def node_main(node_cls: NodeFactory) -> Callable[[Sequence[str] | None], int]:
    """Build the console-script ``main(args=None) -> int`` for one node class."""

    def main(args: Sequence[str] | None = None) -> int:
        argv = args if args is not None else sys.argv
        return run_nodes([node_cls], args=argv, until_exit=True)

    main.__doc__ = f"Run {getattr(node_cls, '__name__', node_cls)} until SIGINT/SIGTERM; returns the exit code."
    return main
