"""The parameter table of every node as Markdown, generated from the nodes' own PARAMS tables.

README.md holds one generated block per node between ``<!-- params:NODE -->`` and
``<!-- /params:NODE -->``. ``--write`` regenerates them; ``--check`` (run by test/test_docs.py)
fails when one is out of date, so the README and the nodes cannot drift apart.

    .venv/bin/python scripts/node_docs.py [NODE ...]      print tables
    .venv/bin/python scripts/node_docs.py --write|--check update or verify README.md
"""

from __future__ import annotations

import ast
import importlib
import re
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
    lines = ["| parameter | default | meaning |", "|---|---|---|"]
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


def update_readme(text: str) -> str:
    """``text`` with every ``params:NODE`` block regenerated."""
    nodes = node_modules()

    def block(match: re.Match) -> str:
        name = match.group(1)
        if name not in nodes:
            raise SystemExit(f"README.md has a params block for unknown node {name!r}")
        return f"<!-- params:{name} -->\n{table(name, nodes[name])}<!-- /params:{name} -->"

    return re.sub(r"<!-- params:(\w+) -->\n.*?<!-- /params:\1 -->", block, text, flags=re.S)


def main(argv: list[str]) -> int:
    readme = REPO / "README.md"
    if argv[:1] in (["--write"], ["--check"]):
        text = readme.read_text()
        new = update_readme(text)
        missing = [n for n in node_modules() if f"<!-- params:{n} -->" not in text]
        if argv[0] == "--write":
            readme.write_text(new)
        elif new != text or missing:
            print(
                f"README.md parameter tables are out of date (missing: {missing}); run scripts/node_docs.py --write",
                file=sys.stderr,
            )
            return 1
        return 0
    nodes = node_modules()
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    unknown = [name for name in argv if name not in nodes]
    if unknown:
        print(f"unknown node(s) {unknown}; the nodes are {', '.join(nodes)} (or --write, --check)", file=sys.stderr)
        return 2
    for name in argv or nodes:
        print(table(name, nodes[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
