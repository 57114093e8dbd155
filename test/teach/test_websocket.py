"""The teach station's websocket with a real aiohttp client: no per-message compression.

Frames travel as JPEG, which deflate cannot shrink. Compression would only cost CPU on the robot,
and aiohttp sends a large compressed message from a shielded task that outlives the sender when a
page goes away mid-frame, which then logs "Task exception was never retrieved" with a traceback
when the station stops.
"""

from __future__ import annotations

import asyncio

import aiohttp

from dli_perception.teach.server import ServerOptions, TeachServer


def test_the_websocket_refuses_compression_a_browser_offers():
    server = TeachServer(ServerOptions(host="127.0.0.1", port=0, token=None, namespace="teach_ws_test"))
    server.start()
    try:

        async def connect() -> tuple[int, str | None, str]:
            async with (
                aiohttp.ClientSession() as s,
                s.ws_connect(f"http://127.0.0.1:{server.port}/ws", compress=15) as ws,
            ):
                hello = await ws.receive_json(timeout=10)
                return ws.compress, ws._response.headers.get("Sec-WebSocket-Extensions"), hello["type"]

        compress, extensions, first = asyncio.run(connect())
    finally:
        server.stop()
    assert first == "hello"
    assert compress == 0 and extensions is None, (compress, extensions)
