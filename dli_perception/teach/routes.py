"""HTTP routes of the teach station: the page, its static files, the state, and the POST actions.

Every action is ``POST /api/<action>`` with a small JSON body and answers ``{"ok", "message"}``
with 200 on success, 400 for bad input, 409 when a node refused, 503 when a node is not running
and 504 when it did not answer in time; the same message goes to every open page.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from aiohttp import web

from dli_perception.teach.station import Station

STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
STATION_KEY: web.AppKey[Station] = web.AppKey("station", Station)


def static_file(name: str) -> bytes:
    """A file shipped in ``dli_perception/teach/static`` (package data; also under colcon)."""
    return resources.files("dli_perception.teach").joinpath("static", name).read_bytes()


def _static_names() -> set[str]:
    folder = resources.files("dli_perception.teach").joinpath("static")
    return {entry.name for entry in folder.iterdir() if entry.is_file()}


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"ok": False, "message": "the request body is not valid JSON"}),
            content_type="application/json",
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"ok": False, "message": "the request body must be a JSON object"}),
            content_type="application/json",
        )
    return data


def _reply(result: tuple[int, dict[str, Any]]) -> web.Response:
    status, body = result
    return web.json_response(body, status=status)


def build_routes(app: web.Application) -> None:
    """Add the page, static files, ``GET /api/state`` and the POST actions to ``app``."""
    names = _static_names()

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=static_file("index.html"), content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in names:  # only the shipped files, never a path
            raise web.HTTPNotFound()
        suffix = name[name.rfind(".") :]
        return web.Response(
            body=static_file(name),
            content_type=STATIC_TYPES.get(suffix, "application/octet-stream"),
            headers={"Cache-Control": "no-cache"},
        )

    async def state(request: web.Request) -> web.Response:
        station = request.app[STATION_KEY]
        return web.json_response(
            {"state": station.state(), "health": station.health(), "live": station.live(), **station.thumbs_message()}
        )

    async def add_class(request: web.Request) -> web.Response:
        return _reply(await request.app[STATION_KEY].add_class((await _body(request)).get("name")))

    async def capture(request: web.Request) -> web.Response:
        body = await _body(request)  # {"name"} for a class; {"xy": [x, y]} or {"labels": [...]} by task
        return _reply(await request.app[STATION_KEY].capture(body.get("name"), body.get("xy"), body.get("labels")))

    async def undo(request: web.Request) -> web.Response:
        await _body(request)
        return _reply(await request.app[STATION_KEY].undo())

    async def record(request: web.Request) -> web.Response:
        body = await _body(request)
        client = body.get("client")
        return _reply(
            await request.app[STATION_KEY].record(
                body.get("name"), body.get("on"), client if isinstance(client, str) else ""
            )
        )

    async def train(request: web.Request) -> web.Response:
        await _body(request)
        return _reply(await request.app[STATION_KEY].train())

    async def cancel(request: web.Request) -> web.Response:
        await _body(request)
        return _reply(await request.app[STATION_KEY].cancel())

    async def use_model(request: web.Request) -> web.Response:
        await _body(request)
        return _reply(await request.app[STATION_KEY].use_model())

    async def react(request: web.Request) -> web.Response:
        return _reply(await request.app[STATION_KEY].react((await _body(request)).get("enabled")))

    async def stop(request: web.Request) -> web.Response:
        return _reply(await request.app[STATION_KEY].stop())

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/classes", add_class)
    app.router.add_post("/api/capture", capture)
    app.router.add_post("/api/undo", undo)
    app.router.add_post("/api/record", record)
    app.router.add_post("/api/train", train)
    app.router.add_post("/api/cancel", cancel)
    app.router.add_post("/api/use_model", use_model)
    app.router.add_post("/api/react", react)
    app.router.add_post("/api/stop", stop)
