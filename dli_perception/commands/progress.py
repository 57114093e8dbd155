"""Progress bars for long CLI work (training, bag conversion), fed by the core's progress callbacks."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """A tqdm bar when stderr is a terminal or tqdm is importable; plain periodic lines otherwise."""

    def __init__(self, total: int | None, desc: str, unit: str = "it") -> None:
        self.total = total
        self.desc = desc
        self._bar = None
        self._last_line = -1
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        except ImportError:
            pass

    def update_to(self, done: int, total: int | None = None, **postfix: Any) -> None:
        """Move the bar to ``done`` of ``total`` and show ``postfix`` values (loss, accuracy, ...)."""
        if self._bar is not None:
            if total is not None and total != self._bar.total:
                self._bar.total = total
            self._bar.n = done
            if postfix:
                self._bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)
            self._bar.refresh()
            return
        total = total or self.total
        step = max(1, (total or 100) // 20)
        if done // step != self._last_line:
            self._last_line = done // step
            extra = " ".join(f"{k}={_short(v)}" for k, v in postfix.items())
            print(f"{self.desc}: {done}/{total or '?'} {extra}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
