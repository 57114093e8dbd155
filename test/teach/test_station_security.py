"""The teach station's security rules, with a real HTTP client (aiohttp) against the real server.

No node is needed for these: the server answers every request itself first (token, origin, size,
input checks), and actions that reach the graph find no node and say so.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from dli_perception.errors import ConfigError
from dli_perception.teach import security
from dli_perception.teach.server import ServerOptions, TeachServer

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def server_on(request):
    """A started server bound as asked; stopped at teardown."""
    servers: list[TeachServer] = []

    def start(host: str, token: str | None) -> TeachServer:
        server = TeachServer(ServerOptions(host=host, port=0, token=token, namespace="teach_security_test"))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _run(coro):
    return asyncio.run(coro)


async def _get(url: str, **kw) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False, **kw) as r:
        return r.status, await r.text(), {k: v.value for k, v in r.cookies.items()}


async def _post(url: str, body=None, *, data=None, headers=None, cookies=None) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession(cookies=cookies) as s:
        kwargs = {"json": body} if data is None else {"data": data}
        async with s.post(url, headers=headers or {}, **kwargs) as r:
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                return r.status, await r.text()


def test_bind_rules_token_needed_off_localhost():
    assert security.token_for_bind("127.0.0.1", None) is None
    assert security.token_for_bind("::1", "given") == "given"
    assert len(security.token_for_bind("0.0.0.0", None)) >= 32  # a random one
    assert security.token_for_bind("0.0.0.0", "mine") == "mine"
    with pytest.raises(ConfigError, match="anyone on the network"):
        security.token_for_bind("192.168.1.5", None, no_token=True)


def test_token_required_on_every_request_off_localhost(server_on):
    server = server_on("0.0.0.0", TOKEN)
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/", "/static/teach.js", "/api/state", "/ws"):
        status, text, _ = _run(_get(base + path))
        assert status == 401 and "token is required" in text, (path, status)
    status, _, _ = _run(_get(base + "/?token=wrong"))
    assert status == 401
    status, text, cookies = _run(_get(f"{base}/?token={TOKEN}"))
    assert status == 200 and "teach station" in text
    assert cookies.get(security.TOKEN_COOKIE) == TOKEN  # later requests of the tab carry it
    status, _, _ = _run(_get(base + "/api/state", cookies={security.TOKEN_COOKIE: TOKEN}))
    assert status == 200
    status, _, _ = _run(_get(base + "/api/state", headers={security.TOKEN_HEADER: TOKEN}))
    assert status == 200
    status, body = _run(_post(base + "/api/classes", {"name": "cup"}))
    assert status == 401

    async def websocket(url: str, **kw) -> str:
        async with aiohttp.ClientSession() as s, s.ws_connect(url, **kw) as ws:
            return (await ws.receive_json(timeout=10))["type"]

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        _run(websocket(base + "/ws"))
    assert refused.value.status == 401
    assert _run(websocket(f"{base}/ws?token={TOKEN}")) == "hello"


def test_cross_origin_posts_and_websockets_are_refused(server_on):
    server = server_on("127.0.0.1", None)
    base = f"http://127.0.0.1:{server.port}"
    evil = {"Origin": "http://evil.example"}
    status, body = _run(_post(base + "/api/classes", {"name": "cup"}, headers=evil))
    assert status == 403 and "cross-origin" in body["message"]
    status, body = _run(_post(base + "/api/stop", {}, headers={"Sec-Fetch-Site": "cross-site"}))
    assert status == 403
    # a form post (what a cross-site page can send without CORS) is refused by its content type
    status, body = _run(_post(base + "/api/classes", data="name=cup", headers={"Content-Type": "text/plain"}))
    assert status == 415
    status, body = _run(_post(base + "/api/classes", {"name": "cup"}, headers={"Origin": base}))
    assert status == 200 and body["ok"]
    # state changes are POST only
    status, _, _ = _run(_get(base + "/api/classes"))
    assert status in (404, 405)

    async def ws_from(origin: str) -> int:
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(base + "/ws", headers={"Origin": origin}):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert _run(ws_from("http://evil.example")) == 403
    assert _run(ws_from(base)) == 101
    # DNS rebinding: a page of another site resolving its name to 127.0.0.1 sends its own Host
    status, _, _ = _run(_get(base + "/", headers={"Host": "evil.example"}))
    assert status == 403


def test_bad_input_gets_a_clear_message_and_changes_nothing(server_on):
    server = server_on("127.0.0.1", None)
    base = f"http://127.0.0.1:{server.port}"
    for name, says in [
        ("../etc", "path separator"),
        ("", "empty"),
        ("unknown", "reserved"),
        ("x" * 65, "at most 64"),
        (7, "as a string"),
    ]:
        status, body = _run(_post(base + "/api/classes", {"name": name}))
        assert status == 400 and says in body["message"], (name, body)
    status, body = _run(_post(base + "/api/capture", {"name": "never_added"}))
    assert status == 400 and "unknown class 'never_added': add it first" in body["message"]
    status, body = _run(_post(base + "/api/classes", data=b"{not json", headers={"Content-Type": "application/json"}))
    assert status == 400 and "not valid JSON" in body["message"]
    status, body = _run(_post(base + "/api/classes", {"name": "a" * (security.MAX_BODY_BYTES + 10)}))
    assert status == 413
    status, body = _run(_post(base + "/api/react", {"enabled": "yes"}))
    assert status == 400 and "true or false" in body["message"]
    # XY targets and label sets: junk refused before anything reaches a node; a good one for another task: 409
    for target, says in [
        ({"xy": [1.5, 0.0]}, "outside [-1, 1]"),
        ({"xy": [0.0]}, "as [x, y]"),
        ({"xy": ["0.1", 0.2]}, "must be a number"),
        ({"xy": "0.1,0.2"}, "as [x, y]"),
        ({"labels": "cup"}, "as a list"),
        ({"labels": ["cup"] * 65}, "at most 64"),
        ({"labels": ["../x"]}, "path separator"),
        ({"labels": ["cup"]}, "unknown label(s) ['cup']"),
        ({"xy": [0.1, 0.2], "labels": []}, "not both"),
    ]:
        status, body = _run(_post(base + "/api/capture", target))
        assert status == 400 and says in body["message"], (target, body)
    status, body = _run(
        _post(base + "/api/capture", data=b'{"xy": [NaN, 0.5]}', headers={"Content-Type": "application/json"})
    )
    assert status == 400 and "outside [-1, 1]" in body["message"], body
    status, body = _run(_post(base + "/api/capture", {"xy": [0.5, 0.5]}))
    assert status == 409 and "records classification, not regression" in body["message"], body
    status, text, _ = _run(_get(base + "/static/..%2Fserver.py"))
    assert status == 404
    # no node runs in this namespace: the station says which one is missing
    status, body = _run(_post(base + "/api/train", {}))
    assert status == 503 and "recorder_node" in body["message"]
    status, text, _ = _run(_get(base + "/api/state"))
    assert status == 200 and '"classes": []' in text
