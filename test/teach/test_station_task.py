"""A page learns the recorder's task however late the recorder's diagnostics come.

The teach station knows the task (classification, regression, multi-label) only from the recorder's
diagnostics, which it publishes once a second, while the recorder's counts come at once. A page
connected before the recorder started got a state from the counts that still said classification and,
in regression mode, was never told otherwise (the browser test caught it on a quiet machine). Here a
real websocket client connects first; then a real recorder_node starts recording XY targets.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from graphutil import Spinner
from rclpy.parameter import Parameter

from dli_perception.teach.server import ServerOptions, TeachServer

DEADLINE_S = 20.0


def test_a_page_connected_first_is_told_the_recorders_task(ros_context, tmp_path):
    from dli_perception.nodes.recorder_node import RecorderNode

    namespace = "teach_task_test"
    server = TeachServer(ServerOptions(host="127.0.0.1", port=0, token=None, namespace=namespace))
    server.start()
    recorder_params = [Parameter("dataset_dir", value=str(tmp_path / "data")), Parameter("task", value="regression")]

    async def states(ws):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT and (data := json.loads(msg.data))["type"] == "state":
                yield data["task_type"]

    async def watch(spinner: Spinner) -> list[str]:
        seen: list[str] = []
        async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{server.port}/ws") as ws:
            told = states(ws)
            seen.append(await asyncio.wait_for(anext(told), DEADLINE_S))  # before any recorder exists
            spinner.add(RecorderNode(context=ros_context, namespace=namespace, parameter_overrides=recorder_params))
            deadline = time.monotonic() + DEADLINE_S
            while seen[-1] != "regression":
                try:
                    seen.append(await asyncio.wait_for(anext(told), max(0.0, deadline - time.monotonic())))
                except (asyncio.TimeoutError, StopAsyncIteration):
                    break
        return seen

    try:
        with Spinner(ros_context) as spinner:
            seen = asyncio.run(watch(spinner))
    finally:
        server.stop()
    assert seen[0] == "classification", seen
    assert seen[-1] == "regression", f"the page was never told the recorder records regression: {seen}"
