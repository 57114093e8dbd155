"""Who may use the teach station: a token off localhost, same-origin state changes, bounded requests.

* Bound to a loopback address (the default, ``127.0.0.1``) the page needs no token, but the
  ``Host`` header must name a loopback host, so a web page elsewhere cannot reach the station by
  DNS rebinding.
* Bound to any other address a token is required on every HTTP and WebSocket request: the
  ``?token=`` of the URL printed at start (a cookie then keeps it for the tab), or the
  ``X-Teach-Token`` header. It is compared in constant time.
* Requests that change something are POST with a JSON body, and refused when their ``Origin``
  (or ``Sec-Fetch-Site``) shows another site; a WebSocket from another origin is refused too.
* Bodies are small (:data:`MAX_BODY_BYTES`); class names go through the dataset's label validation.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets

from aiohttp import web

from dli_perception.errors import ConfigError

TOKEN_COOKIE = "dli_teach_token"
TOKEN_HEADER = "X-Teach-Token"
MAX_BODY_BYTES = 16 * 1024
"""Largest request body accepted, bytes (actions carry a class name and a flag)."""
MAX_WS_MESSAGE_BYTES = 4 * 1024
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A random token (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def token_for_bind(host: str, token: str | None, no_token: bool = False) -> str | None:
    """The token the station requires when bound to ``host``: None on loopback unless one was given.

    Raises ConfigError for ``no_token`` on a non-loopback address: anyone on the network could drive the robot.
    """
    if token is not None and not token.strip():
        raise ConfigError("--token must not be empty")
    if is_loopback(host):
        return None if no_token else token
    if no_token:
        raise ConfigError(
            f"binding to {host} without a token would let anyone on the network drive the robot; "
            "drop --no-token (a token is printed at start) or bind to 127.0.0.1"
        )
    return token or new_token()


def _host_name(host_header: str) -> str:
    """``Host`` header without the port (``[::1]:8080`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """The checks every request goes through (an aiohttp middleware)."""

    def __init__(self, bind_host: str, token: str | None) -> None:
        self.bind_host = bind_host
        self.token = token

    def _token_ok(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        for given in (
            request.query.get("token"),
            request.headers.get(TOKEN_HEADER),
            request.cookies.get(TOKEN_COOKIE),
        ):
            if given and hmac.compare_digest(given.encode(), self.token.encode()):
                return True
        return False

    def _same_origin(self, request: web.Request) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser's cross-site request (browsers send Origin on POST and WebSocket)
        return origin in (f"http://{request.host}", f"https://{request.host}")

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if self.token is None and not is_loopback(_host_name(request.host)):
            raise _refuse(403, f"Host {request.host!r} is not this station's address; open http://127.0.0.1")
        if not self._token_ok(request):
            raise _refuse(401, "a token is required: open the URL with ?token=... that dli-perception teach printed")
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method not in ("GET", "HEAD", "POST"):
            raise _refuse(405, f"{request.method} is not allowed")
        if request.method == "POST" or is_ws:
            if not self._same_origin(request):
                raise _refuse(403, "cross-origin request refused")
        if request.method == "POST":
            if request.content_type != "application/json":
                raise _refuse(415, "send the request body as application/json")
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                raise _refuse(413, f"request body over {MAX_BODY_BYTES} bytes")
        response = await handler(request)
        if self.token is not None and request.query.get("token") and isinstance(response, web.Response):
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response


def _refuse(status: int, message: str) -> web.HTTPException:
    cls = {
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        405: web.HTTPMethodNotAllowed,
        413: web.HTTPRequestEntityTooLarge,
        415: web.HTTPUnsupportedMediaType,
    }[status]
    body = json.dumps({"ok": False, "message": message})
    if cls is web.HTTPMethodNotAllowed:
        return cls("", ["GET", "HEAD", "POST"], text=body, content_type="application/json")
    if cls is web.HTTPRequestEntityTooLarge:
        return cls(MAX_BODY_BYTES, 0, text=body, content_type="application/json")
    return cls(text=body, content_type="application/json")
