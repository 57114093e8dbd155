"""The node set the demo launches: the package's real nodes in one process, and the graph client it drives them with.

:class:`DemoNodes` owns a private rclpy ``Context`` (initialised without rclpy's signal handlers: the
command owns Ctrl-C), a multi-threaded executor spinning on a thread of its own, the nodes started
one stage at a time, and a :class:`~dli_perception.graph_client.Teacher` sharing the context: the
demo talks to its nodes only through that client, as a user's program would. The ``*_params``
functions give each node's parameters for a :class:`~dli_perception.demo.config.DemoConfig`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dli_perception.demo.config import DemoConfig

logger = logging.getLogger(__name__)


def camera_params(cfg: DemoConfig) -> dict[str, Any]:
    """The synthetic camera: the demo's classes in turn, ``scene_period_s`` each."""
    return {
        "source": "synthetic",
        "width": cfg.width,
        "height": cfg.height,
        "fps": float(cfg.fps),
        "synthetic.classes": list(cfg.classes),
        "synthetic.scene_period_s": float(cfg.scene_period_s),
        "synthetic.seed": cfg.seed,
        "frame_id": "demo_camera",
    }


def recorder_params(cfg: DemoConfig, dataset_dir: Path) -> dict[str, Any]:
    return {
        "dataset_dir": str(dataset_dir),
        "max_per_class": cfg.per_class,
        "max_frame_age_s": cfg.max_frame_age_s,
        "image_format": "jpg",
    }


def trainer_params(cfg: DemoConfig, dataset_dir: Path, model_dir: Path, weights: str) -> dict[str, Any]:
    """Training in the config's mode (head for classification), every epoch run (no early stop), progress at 10 Hz."""
    return {
        "dataset_dir": str(dataset_dir),
        "model_dir": str(model_dir),
        "mode": cfg.resolved_train_mode,
        "epochs": cfg.epochs,
        "lr": float(cfg.lr),
        "batch_size": cfg.batch_size,
        "weights": weights,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
        "early_stop_patience": 0,
        "torch_threads": cfg.torch_threads,
        "progress_rate_hz": 10.0,
    }


class DemoNodes:
    """Start, reach and stop the demo's nodes; ``teacher`` is the graph client (see the module docstring)."""

    def __init__(self, namespace: str, verbose: bool, on_update: Callable[[str, Any], None]) -> None:
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from dli_perception import transport
        from dli_perception.graph_client import Teacher
        from dli_perception.nodes import localframes
        from dli_perception.nodes.runtime import BackgroundSpin, init_rclpy

        self.namespace = namespace
        self.nodes: dict[str, Any] = {}
        # Keep discovery on this machine unless the user chose otherwise: the demo talks to nobody else.
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        transport.apply_default_profile()
        args = ["dli-perception-demo"]
        if not verbose:
            # Node logs reach demo.log through /rosout (errors also the console); no log files elsewhere.
            args += ["--ros-args", "--disable-stdout-logs", "--disable-external-lib-logs"]
        self.context = Context()
        init_rclpy(args, self.context)
        try:
            self.teacher = Teacher(namespace, node_name="demo", on_update=on_update, context=self.context)
        except BaseException:
            self.context.try_shutdown()
            raise
        localframes.enable()  # camera -> classifier frames by direct hand-off, as `dli-perception up` does
        # One thread, as every node process runs (see run_nodes): no callback blocks (training, inference and
        # writes have threads of their own), and rclpy's multi-threaded executor starved the demo's timers.
        self.executor = SingleThreadedExecutor(context=self.context)
        self._spin = BackgroundSpin(self.executor, self.context, name="demo_executor")

    def add(self, name: str, factory: Callable[..., Any], params: dict[str, Any]) -> Any:
        """Create node ``name`` (``factory`` is its class) in the demo's namespace and start spinning it."""
        from rclpy.parameter import Parameter

        extra = {"namespace": self.namespace} if self.namespace else {}
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        node = factory(context=self.context, parameter_overrides=overrides, **extra)
        self.nodes[name] = node
        self.executor.add_node(node)
        return node

    def adopt(self, name: str, node: Any) -> Any:
        """Spin ``node``, made by the caller in this context (the regression demo's scene camera), as node ``name``."""
        self.nodes[name] = node
        self.executor.add_node(node)
        return node

    def remove(self, name: str) -> None:
        """Stop spinning node ``name`` and destroy it (its clean-up runs: files closed, a zero Twist sent)."""
        node = self.nodes.pop(name, None)
        if node is None:
            return
        try:
            self.executor.remove_node(node)
        except Exception as exc:  # noqa: BLE001 - destroy it anyway
            logger.warning("removing %s from the executor: %s", name, exc)
        node.destroy_node()

    def shutdown(self) -> None:
        """Destroy the nodes (newest first: the reaction node stops the robot), stop spinning, shut down."""
        from dli_perception.nodes import localframes

        for name in list(reversed(list(self.nodes))):
            try:
                self.remove(name)
            except Exception as exc:  # noqa: BLE001 - the other nodes' clean-up must still happen
                logger.error("clean-up of %s failed: %s: %s", name, type(exc).__name__, exc)
        time.sleep(0.1)  # let the last /rosout lines and the final zero Twist arrive
        try:
            self.teacher.close()
        finally:
            self._spin.stop()
            self.executor.shutdown(timeout_sec=2.0)
            localframes.disable()
            self.context.try_shutdown()
