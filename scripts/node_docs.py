"""Print the parameter table of every node as Markdown, from the nodes' own PARAMS tables.

The README's parameter tables are generated with this script, and test/test_docs.py checks that
every declared parameter is documented, so the two cannot drift apart.

    .venv/bin/python scripts/node_docs.py [NODE ...]
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def node_modules() -> dict[str, str]:
    """setup.py's NODES table: executable -> 'module:main'."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("setup.py has no NODES table")


def _default(value) -> str:
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[" + ", ".join(map(str, value)) + "]`"
    return f"`{value}`"


def table(executable: str, target: str) -> str:
    module = importlib.import_module(target.split(":")[0])
    lines = [f"#### {executable} parameters", "", "| parameter | default | meaning |", "|---|---|---|"]
    for p in module.PARAMS:
        desc = p.description.replace("|", "\\|")
        if p.choices:
            desc += " One of: " + ", ".join(f"`{c}`" for c in p.choices) + "."
        elif p.min is not None and p.max is not None:
            desc += f" Range {p.min} to {p.max}."
        if p.read_only:
            desc += " Start-up only."
        lines.append(f"| `{p.name}` | {_default(p.default)} | {desc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    nodes = node_modules()
    for name in argv or nodes:
        print(table(name, nodes[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
