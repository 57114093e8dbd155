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
STOP_STEP_S = 1.0
"""Longest one step of :meth:`TeachServer.stop` waits (pages' close handshakes, open requests, each thread).

launch sends SIGTERM 5 s after a Ctrl-C and SIGKILL later: the whole stop stays well inside that."""


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
        self._stop_requested = threading.Event()
        self._stop_now: asyncio.Event | None = None

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
        """Start serving; returns :attr:`url`, or "" when :meth:`stop` came first (nothing started).

        Raises the start-up error (e.g. the port is taken).
        """
        if self._stop_requested.is_set():
            return ""
        self._thread = threading.Thread(target=self._run, name="teach_server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the teach server did not start within {START_TIMEOUT_S:g} s")
        if self._error is not None:
            raise self._error
        return self.url

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._stop_now = asyncio.Event()  # before _loop: stop() sets it once it sees the loop
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        try:
            loop.run_until_complete(self._until_stopped())
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _until_stopped(self) -> None:
        # stop() either saw the loop (and sets _stop_now through it) or set the flag before the loop
        # existed, which this check then sees: no stop request is lost.
        if not self._stop_requested.is_set():
            await self._stop_now.wait()

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
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=STOP_STEP_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, opts.host, opts.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._tick = loop.create_task(hub.tick())
        self._ready.set()

    async def _shutdown(self) -> None:
        """Close the pages' sockets and the listener, cancel what is left; each step bounded."""
        if self._tick is not None:
            self._tick.cancel()
        if self.hub is not None and self.hub.connections:
            closing = [asyncio.ensure_future(conn.ws.close()) for conn in list(self.hub.connections)]
            await asyncio.wait(closing, timeout=STOP_STEP_S)
        if self._runner is not None:
            await self._runner.cleanup()  # waits at most shutdown_timeout for open requests
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        if rest:
            done, _ = await asyncio.wait(rest, timeout=STOP_STEP_S)
            for task in done:  # a page's socket failing as it closes is no news: retrieved, not printed
                if not task.cancelled() and task.exception() is not None:
                    log.debug("at stop: %s", task.exception())

    def stop(self) -> None:
        """Stop serving, close the pages' sockets, the encoder and the graph client (idempotent, bounded)."""
        self._stop_requested.set()
        if self.teacher is not None:
            self.teacher.interrupt()  # requests waiting for a node answer now: the shutdown need not wait
        loop, stop_now = self._loop, self._stop_now
        if loop is not None and stop_now is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop_now.set)
            except RuntimeError:  # closed in between: the thread is ending anyway
                pass
        if self._thread is not None:
            self._thread.join(timeout=4 * STOP_STEP_S)
        if self._encoder is not None:
            self._encoder.close()
        if self.teacher is not None:
            self.teacher.close()
            self.teacher = None
