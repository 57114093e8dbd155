"""``declare`` on a node with post-set parameter callbacks (Iron and newer) and without them (Humble).

rclpy on Humble has no ``add_post_set_parameters_callback``; ``params.declare`` then applies
changes from an on-set callback that must run after every other on-set callback. Humble cannot
run here, so ``HumbleStyleNode`` is a real node of this rclpy with that one method hidden: the
same fallback code runs against rclpy's real parameter machinery.
"""

from __future__ import annotations

import pytest
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from dli_perception.nodes.params import Param, declare

PARAMS = [
    Param("rate_hz", 10.0, "Rate, Hz.", min=0.5, max=100.0),
    Param("mode", "fast", "Mode.", choices=("fast", "slow")),
    Param("low", 1, "Lower bound, count.", min=0, max=100),
    Param("high", 5, "Upper bound, count.", min=0, max=100),
    Param("name", "cam", "Name.", check=lambda v: None if v.strip() else "must not be empty"),
]


class HumbleStyleNode(Node):
    """A node whose rclpy API lacks post-set parameter callbacks, as rclpy on Humble does."""

    def __getattribute__(self, name: str):
        if name == "add_post_set_parameters_callback":
            raise AttributeError(name)
        return super().__getattribute__(name)


class Recorder:
    """A node of either kind with a cross-parameter check registered before ``declare`` (as classifier)."""

    def __init__(self, node_cls, context, overrides=()) -> None:
        self.node = node_cls("params_test", context=context, parameter_overrides=list(overrides))
        self.changes: list[dict] = []
        self.node.add_on_set_parameters_callback(self._low_not_above_high)
        self.values = declare(self.node, PARAMS, on_change=self.changes.append)

    def _low_not_above_high(self, changes: list[Parameter]) -> SetParametersResult:
        values = {n: self.node.get_parameter(n).value for n in ("low", "high") if self.node.has_parameter(n)}
        values.update({c.name: c.value for c in changes if c.name in ("low", "high")})
        if len(values) == 2 and values["low"] > values["high"]:
            return SetParametersResult(successful=False, reason="low must not exceed high")
        return SetParametersResult(successful=True)

    def set(self, **values):
        return self.node.set_parameters([Parameter(k, value=v) for k, v in values.items()])


@pytest.fixture(params=[Node, HumbleStyleNode], ids=["post-set-callback", "humble-fallback"])
def recorder(request, ros_context):
    rec = Recorder(request.param, ros_context, [Parameter("rate_hz", value=20.0)])
    yield rec
    rec.node.destroy_node()


def test_the_fallback_node_really_lacks_post_set_callbacks(ros_context):
    node = HumbleStyleNode("humble_style", context=ros_context)
    assert not hasattr(node, "add_post_set_parameters_callback")
    assert hasattr(Node("plain", context=ros_context), "add_post_set_parameters_callback")


def test_start_values_are_defaults_and_overrides(recorder):
    assert recorder.values == {"rate_hz": 20.0, "mode": "fast", "low": 1, "high": 5, "name": "cam"}
    assert recorder.changes == []


def test_accepted_change_is_applied_once(recorder):
    (result,) = recorder.set(mode="slow")
    assert result.successful
    assert recorder.changes == [{"mode": "slow"}]
    assert recorder.node.get_parameter("mode").value == "slow"


def test_refusals_apply_nothing(recorder):
    refused = [
        recorder.set(mode="turbo")[0],  # not one of the choices: refused by declare's validator
        recorder.set(name="  ")[0],  # the Param's own check
        recorder.set(rate_hz=500.0)[0],  # out of the descriptor's range: refused by rclpy itself
        recorder.set(low=50)[0],  # the node's cross-parameter check, registered before declare
    ]
    assert [r.successful for r in refused] == [False] * 4
    assert all(r.reason for r in refused)
    assert "low must not exceed high" in refused[3].reason
    assert recorder.changes == []
    assert recorder.node.get_parameter("low").value == 1


def test_parameters_that_are_not_ours_pass_through(recorder):
    (result,) = recorder.set(use_sim_time=True)
    assert result.successful
    assert recorder.changes in ([], [{}])  # nothing of ours changed


def test_an_undeclared_parameter_is_refused_with_its_name(recorder, ros_context):
    from rclpy.exceptions import ParameterNotDeclaredException

    with pytest.raises(ParameterNotDeclaredException) as info:
        recorder.set(rate_hx=5.0)
    message = str(info.value)
    assert "'rate_hx'" in message and "did you mean 'rate_hz'?" in message and "[]" not in message, message
    # through the node's parameter service, as `ros2 param set` does: refused with that reason
    from graphutil import Spinner, wait_for
    from rcl_interfaces.srv import SetParameters

    client_node = Node("param_setter", context=ros_context)
    client = client_node.create_client(SetParameters, "/params_test/set_parameters")
    with Spinner(ros_context, recorder.node, client_node):
        assert client.wait_for_service(timeout_sec=20.0)
        request = SetParameters.Request(parameters=[Parameter("nonsense", value=1).to_parameter_msg()])
        future = client.call_async(request)
        assert wait_for(future.done, 10.0)
    (result,) = future.result().results
    assert not result.successful and "'nonsense'" in result.reason and "[]" not in result.reason, result.reason
    assert recorder.changes == []
