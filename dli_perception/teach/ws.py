"""The WebSocket every page keeps open: live frames (binary) and state updates (JSON), server to page.

Frames go one at a time: the next is sent only after the page acknowledged drawing the previous one
(``{"type": "ack", "seq": n}``) or after :data:`ACK_TIMEOUT_S`, and it is always the newest, so a
slow page or network drops frames instead of falling behind. A binary message is a 4-byte big-endian
header length, a JSON header (``seq``, ``stamp_ns`` of the source image, ``source``, ``width``,
``height``, ``encoded_ns``, ``sent_ns``: wall-clock nanoseconds) and the JPEG.

JSON messages: ``hello`` (the page's client id), ``state``, ``health``, ``live`` (the classifier's
latest label, at most :data:`LIVE_HZ` a second) and ``thumbs``; each is sent again only when it
changed, newest only.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import struct
import time
from typing import Any

from aiohttp import WSMsgType, web

from dli_perception.teach.frames import Frame, FrameEncoder
from dli_perception.teach.security import MAX_WS_MESSAGE_BYTES
from dli_perception.teach.station import Station

ACK_TIMEOUT_S = 1.0
LIVE_HZ = 10.0
HEALTH_PERIOD_S = 1.0
KINDS = ("state", "health", "live", "thumbs")


class Connection:
    """One page: what it still needs to be sent, and whether a frame is in flight."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.client_id = secrets.token_hex(8)
        self.dirty: set[str] = set(KINDS)
        self.frame: Frame | None = None
        self.sent_seq = 0
        self.in_flight_since: float | None = None
        self.last_live = 0.0
        self.wake = asyncio.Event()


class Hub:
    """All open pages; fans frames and state changes out to them."""

    def __init__(self, station: Station, encoder: FrameEncoder, loop: asyncio.AbstractEventLoop) -> None:
        self.station = station
        self.encoder = encoder
        self.loop = loop
        self.connections: set[Connection] = set()
        self.frames_sent = 0
        station.listeners.append(self.changed)
        encoder.on_frame = self.on_frame_threadsafe

    def changed(self, what: str) -> None:
        for conn in self.connections:
            conn.dirty.add(what)
            conn.wake.set()

    def on_frame_threadsafe(self, frame: Frame) -> None:
        self.loop.call_soon_threadsafe(self._on_frame, frame)

    def _on_frame(self, frame: Frame) -> None:
        for conn in self.connections:
            conn.frame = frame
            conn.wake.set()

    async def tick(self) -> None:
        """Health ages change without messages: refresh every page's health once a period."""
        while True:
            await asyncio.sleep(HEALTH_PERIOD_S)
            self.changed("health")
            self.changed("live")

    def _message(self, kind: str) -> dict[str, Any]:
        station = self.station
        return {
            "state": station.state,
            "health": station.health,
            "live": station.live,
            "thumbs": station.thumbs_message,
        }[kind]()

    async def _send_loop(self, conn: Connection) -> None:
        ws = conn.ws
        await ws.send_str(json.dumps({"type": "hello", "client_id": conn.client_id}))
        while not ws.closed:
            timeout = ACK_TIMEOUT_S
            if "live" in conn.dirty:
                timeout = max(0.0, 1.0 / LIVE_HZ - (time.monotonic() - conn.last_live))
            try:
                await asyncio.wait_for(conn.wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass
            conn.wake.clear()
            now = time.monotonic()
            for kind in KINDS:
                if kind not in conn.dirty or (kind == "live" and now - conn.last_live < 1.0 / LIVE_HZ):
                    continue
                conn.dirty.discard(kind)
                if kind == "live":
                    conn.last_live = now
                await ws.send_str(json.dumps(self._message(kind)))
            frame = conn.frame
            in_flight = conn.in_flight_since is not None and now - conn.in_flight_since < ACK_TIMEOUT_S
            if frame is not None and frame.seq != conn.sent_seq and not in_flight:
                await ws.send_bytes(_frame_bytes(frame))
                conn.sent_seq = frame.seq
                conn.in_flight_since = time.monotonic()
                self.frames_sent += 1

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        # timeout: how long close() waits for the page's answer when the server stops.
        # compress=False: frames are JPEG, which deflate cannot shrink, so compressing them only costs CPU;
        # and aiohttp sends a large compressed message from a shielded task of its own, which outlives
        # this sender when the page goes away and then logs "Task exception was never retrieved".
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE_BYTES, heartbeat=10.0, timeout=1.0, compress=False)
        await ws.prepare(request)
        conn = Connection(ws)
        self.connections.add(conn)
        self.encoder.watchers = len(self.connections)
        self.encoder.wake()
        sender = asyncio.ensure_future(self._send_loop(conn))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                if isinstance(data, dict) and data.get("type") == "ack" and data.get("seq") == conn.sent_seq:
                    conn.in_flight_since = None
                    conn.wake.set()
        finally:
            self.connections.discard(conn)
            self.encoder.watchers = len(self.connections)
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, ConnectionError, RuntimeError):
                pass
            await self.station.client_gone(conn.client_id)
        return ws


def _frame_bytes(frame: Frame) -> bytes:
    header = json.dumps(
        {
            "seq": frame.seq,
            "stamp_ns": frame.stamp_ns,
            "source": frame.source,
            "width": frame.width,
            "height": frame.height,
            "encoded_ns": frame.encoded_ns,
            "sent_ns": time.time_ns(),
        }
    ).encode()
    return struct.pack(">I", len(header)) + header + frame.jpeg
