"""In-process frame hand-off: camera_node -> classifier_node without a ROS subscription; registry rules.

The classifier's results are read through the package's graph client; the frames a ROS subscriber gets
are read raw (their stamps are what is compared).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures_models import build_colour_model_dir, solid
from graphutil import Collector, Spinner, graph_client, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from dli_perception.nodes import localframes
from dli_perception.nodes.camera_node import CameraNode
from dli_perception.nodes.classifier_node import ClassifierNode
from dli_perception.nodes.qos import SENSOR_DATA

pytestmark = pytest.mark.graph
DEADLINE_S = 20.0


@pytest.fixture
def hand_off():
    localframes.enable()
    yield
    localframes.disable()


@pytest.fixture(scope="module")
def red_scene(tmp_path_factory):
    """A model dir (red/green/blue) and a folder of red frames for the camera's folder source."""
    root = tmp_path_factory.mktemp("localframes")
    folder = root / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), solid("red", 48, 64)[:, :, ::-1])
    return build_colour_model_dir(root / "model"), folder


def _camera(context, folder, **kw) -> CameraNode:
    values = {"source": "folder", "path": str(folder), "width": 64, "height": 48, "fps": 30.0}
    return CameraNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()], **kw)


def _classifier(context, model, **kw) -> ClassifierNode:
    values = {"model_dir": str(model), "backend": "onnxruntime", "threads": 1}
    return ClassifierNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()], **kw)


def test_classifier_takes_camera_frames_in_process_and_ros_subscribers_still_get_them(ros_context, red_scene, hand_off):
    model, folder = red_scene
    camera = _camera(ros_context, folder)
    classifier = _classifier(ros_context, model)
    assert classifier.image_sub is None  # no ROS subscription: frames come by direct call
    with Spinner(ros_context, camera, classifier) as spinner:
        client = spinner.own(graph_client(ros_context))
        assert wait_for(lambda: len(client.history("scores")) >= 5, DEADLINE_S), classifier.status()
        assert camera.image_pub.get_subscription_count() == 0
        # a ROS subscriber that joins later gets the same frames through DDS
        images = Collector(ros_context, Image, "image_raw", SENSOR_DATA, name="images")
        with Spinner(ros_context, images):
            assert wait_for(lambda: images.count() >= 3, DEADLINE_S)
            ros_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in list(images.msgs)}
            assert wait_for(
                lambda: any(divmod(r.stamp_ns, 1_000_000_000) in ros_stamps for r in client.history("scores")),
                DEADLINE_S,
            )
        results = client.history("scores")
    assert {r.label for r in results} == {"red"}
    assert classifier.received >= len(results) and classifier.bad == 0


def test_without_enable_or_with_the_classifier_first_frames_go_through_ros(ros_context, red_scene):
    model, folder = red_scene
    classifier = _classifier(ros_context, model)
    camera = _camera(ros_context, folder)
    try:
        assert classifier.image_sub is not None
    finally:
        camera.destroy_node()
        classifier.destroy_node()
    localframes.enable()
    try:
        first = _classifier(ros_context, model)  # no camera advertised yet: it must subscribe through ROS
        camera = _camera(ros_context, folder)
        other_ns = _classifier(ros_context, model, namespace="/elsewhere")  # another topic: ROS as well
        try:
            assert first.image_sub is not None and other_ns.image_sub is not None
        finally:
            for node in (other_ns, camera, first):
                node.destroy_node()
    finally:
        localframes.disable()


class _Stub(Node):
    pass


def test_registry_delivers_isolates_failures_and_forgets_unused_topics(ros_context, hand_off):
    pub_node = _Stub("pub", context=ros_context)
    sub_node = _Stub("sub", context=ros_context)
    try:
        assert localframes.subscribe(sub_node, "image_raw", print) is None  # nothing advertised
        local = localframes.advertise(pub_node, "image_raw")
        assert local is not None and local.name == "/image_raw"
        got: list = []

        def broken(_msg) -> None:
            raise RuntimeError("subscriber bug")

        assert localframes.subscribe(sub_node, "image_raw", broken) is local
        assert localframes.subscribe(sub_node, "/image_raw", got.append) is local  # same resolved name
        frame = np.zeros((2, 2, 3), np.uint8)
        assert local.publish(frame) == 1 and got == [frame] and got[0] is frame  # the object itself, no copy
        assert local.errors == 1
        localframes.unsubscribe(local, broken)
        assert local.publish(frame) == 1 and local.errors == 1
        localframes.unsubscribe(local, got.append)
        localframes.withdraw(local)
        assert localframes.subscribe(sub_node, "image_raw", got.append) is None  # forgotten
    finally:
        pub_node.destroy_node()
        sub_node.destroy_node()
