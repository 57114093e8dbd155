"""The teach station: a web page served from the robot for look -> label -> train -> watch -> react.

``dli-perception teach`` starts it (see :mod:`dli_perception.commands.teach`). The server
(:mod:`.server`) is a client of the nodes through :class:`dli_perception.graph_client.Teacher` only;
:mod:`.security` guards every request, :mod:`.routes` holds the HTTP actions, :mod:`.ws` the live
WebSocket, :mod:`.frames` the JPEG live view and :mod:`.station` the state every page shares. The
page itself is plain HTML/JS/CSS in ``static/`` (no build step).
"""
