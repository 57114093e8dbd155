"""What a bag -> dataset conversion did: :class:`BagConversionStats`, filled in by the conversion's parts
(:mod:`.to_dataset`, :mod:`.pipeline`, :mod:`.targets`) and printed by ``dli-perception bag2dataset``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BagConversionStats:
    """What :func:`bag_to_dataset` did. ``images`` counts image messages read; each one is
    saved (``saved_images``; ``counts`` per class, ``{"xy": n}``, or per label), a duplicate,
    or skipped for exactly one reason."""

    counts: dict[str, int] = field(default_factory=dict)
    saved_images: int = 0
    images: int = 0
    skipped_no_label: int = 0
    skipped_unknown: int = 0
    skipped_invalid_label: int = 0
    skipped_bad: int = 0
    skipped_full: int = 0
    skipped_invalid_target: int = 0
    duplicates: int = 0
    invalid_labels: dict[str, int] = field(default_factory=dict)
    invalid_targets: dict[str, int] = field(default_factory=dict)
    task: str = ""
    bytes_read: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    distro: str = ""
    definitions: str = ""
    robot: str = ""

    @property
    def saved(self) -> int:
        return self.saved_images

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few lines for people: per-class counts, then skipped counts and speed."""
        lines = [f"  {label}: {n}" for label, n in self.counts.items()] or ["  (no images saved)"]
        targets = ""
        if self.task in ("regression", "multilabel"):
            shown = ", ".join(list(self.invalid_targets)[:5])
            targets = f", invalid target {self.skipped_invalid_target}" + (f" ({shown})" if shown else "")
        skipped = (
            f"saved {self.saved} of {self.images} images; skipped: no label yet {self.skipped_no_label}, "
            f"label none/unknown {self.skipped_unknown}, invalid label {self.skipped_invalid_label}{targets}, "
            f"undecodable {self.skipped_bad}, class full {self.skipped_full}; duplicates {self.duplicates}"
        )
        per = {"regression": "XY targets:", "multilabel": "per label:"}.get(self.task, "per class:")
        speed = f"{self.images_per_s:.0f} images/s, {self.mb_per_s:.1f} MB/s" + (
            " (cancelled)" if self.cancelled else ""
        )
        return "\n".join([per, *lines, skipped, speed])
