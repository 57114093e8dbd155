"""Text from outside (message fields, paths, exception messages) made safe to put into a log line.

A value that came in a message or names a file may hold a newline followed by something like
``[FATAL] ...``: written into a log as it is, it starts a line the node never wrote. Every node
puts such text through :func:`quoted` (a value: quoted, escaped, cut) or :func:`printable` (a
sentence that may embed one, such as an exception message: escaped, not quoted).
"""

from __future__ import annotations

VALUE_LIMIT = 200
"""Characters of a value kept in a log line (a frame's encoding, a label, a path)."""

TEXT_LIMIT = 1000
"""Characters of a longer text kept in a log line (an exception message)."""


def quoted(value: object, limit: int = VALUE_LIMIT) -> str:
    """``value`` as a quoted Python string literal, cut to ``limit`` characters (``...`` after the quote).

    Newlines, carriage returns, terminal escapes and every other non-printable character appear
    escaped (``\\n``, ``\\x1b``), so the result is one line that cannot pass for another.
    """
    text = str(value)
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def printable(text: object, limit: int = TEXT_LIMIT) -> str:
    """``text`` with every non-printable character written as its escape (``\\n``), cut to ``limit``.

    For sentences (exception messages) that may embed an outside value without quoting it;
    printable characters, non-ASCII letters included, are kept as they are.
    """
    s = str(text)
    cut = len(s) > limit
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s[:limit])
    return out + "..." if cut else out
