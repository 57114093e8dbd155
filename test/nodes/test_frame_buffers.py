"""run_nodes keeps frame-sized buffers in the heap for processes whose nodes move frames, and only for them."""

from __future__ import annotations

import functools

import pytest

from dli_perception import transport
from dli_perception.errors import ConfigError
from dli_perception.nodes.camera_node import CameraNode
from dli_perception.nodes.classifier_node import ClassifierNode
from dli_perception.nodes.recorder_node import RecorderNode
from dli_perception.nodes.runtime import run_nodes
from dli_perception.nodes.trainer_node import TrainerNode


class _FramesNode:
    """Stands for a node class that moves frames; refuses to start, so run_nodes returns 1 at once."""

    MOVES_FRAMES = True

    def __init__(self) -> None:
        raise ConfigError("not started in this test")


class _OtherNode:
    def __init__(self) -> None:
        raise ConfigError("not started in this test")


def test_the_nodes_that_move_frames_say_so():
    assert CameraNode.MOVES_FRAMES and ClassifierNode.MOVES_FRAMES and RecorderNode.MOVES_FRAMES
    assert not getattr(TrainerNode, "MOVES_FRAMES", False)


@pytest.mark.parametrize(
    ("factories", "tuned"),
    [
        ([_FramesNode], True),
        ([functools.partial(_FramesNode)], True),  # dli-perception up passes partials
        ([_OtherNode], False),
    ],
)
def test_run_nodes_tunes_the_allocator_only_for_frame_nodes(monkeypatch, factories, tuned):
    calls = []
    monkeypatch.setattr(transport, "keep_frame_buffers", lambda: calls.append(True) or True)
    assert run_nodes(factories, args=["frame_buffers_test"]) == 1
    assert bool(calls) is tuned
