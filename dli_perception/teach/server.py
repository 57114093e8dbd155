"""The teach station's web server: aiohttp on an event loop of its own thread, one graph client.

:class:`TeachServer` builds the graph client (:class:`~dli_perception.graph_client.Teacher`), the
frame encoder, the shared :class:`~dli_perception.teach.station.Station`, the routes and the
WebSocket hub, and serves them until :meth:`TeachServer.stop`. It runs beside nodes in the same
process (``dli-perception teach``) or alone against nodes elsewhere (``--connect``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass

from aiohttp import web

from dli_perception.graph_client import NodeNames, Teacher
from dli_perception.teach import routes, security
from dli_perception.teach.frames import FrameEncoder
from dli_perception.teach.station import Station
from dli_perception.teach.ws import Hub

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServerOptions:
    """Where to listen (``port`` 0: any free port), the token (None: none needed), what to talk to."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    namespace: str = ""
    max_fps: float = 20.0
    names: NodeNames = NodeNames()
    camera_topic: str = "image_raw"


def build_app(station: Station, hub: Hub, guard: security.Guard) -> web.Application:
    """The aiohttp application: security middleware, routes, ``/ws``."""
    app = web.Application(middlewares=[guard.middleware], client_max_size=security.MAX_BODY_BYTES)
    app[routes.STATION_KEY] = station
    routes.build_routes(app)
    app.router.add_get("/ws", hub.handle)
    return app


class TeachServer:
    """Serves the teach station on a thread; :meth:`start` returns once it listens."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self.port = 0
        self.teacher: Teacher | None = None
        self.hub: Hub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._encoder: FrameEncoder | None = None
        self._tick: asyncio.Task | None = None

    @property
    def url(self) -> str:
        """The page's address (with ``?token=`` when one is needed)."""
        host = self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        shown = f"[{host}]" if ":" in host else host
        query = f"/?token={self.options.token}" if self.options.token else "/"
        return f"http://{shown}:{self.port}{query}"

    def start(self) -> str:
        """Start serving; returns :attr:`url`. Raises the start-up error (e.g. the port is taken)."""
        self._thread = threading.Thread(target=self._run, name="teach_server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the teach server did not start within {START_TIMEOUT_S:g} s")
        if self._error is not None:
            raise self._error
        return self.url

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            return
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _serve(self) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        teacher = Teacher(opts.namespace, names=opts.names, node_name="teach_station")
        self.teacher = teacher
        encoder = FrameEncoder(lambda frame: None, max_fps=opts.max_fps)
        self._encoder = encoder
        station = Station(teacher, loop, encoder.newest_raw)
        hub = Hub(station, encoder, loop)
        self.hub = hub
        teacher.on_update = station.on_update
        teacher.watch_frames(opts.camera_topic, encoder.on_raw)
        teacher.watch_frames(f"{opts.names.classifier}/overlay", encoder.on_overlay)
        app = build_app(station, hub, security.Guard(opts.host, opts.token))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, opts.host, opts.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._tick = loop.create_task(hub.tick())
        self._ready.set()

    async def _shutdown(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self.hub is not None:
            for conn in list(self.hub.connections):
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop serving, close the pages' sockets, the encoder and the graph client (idempotent)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._encoder is not None:
            self._encoder.close()
        if self.teacher is not None:
            self.teacher.close()
            self.teacher = None
