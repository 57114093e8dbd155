"""The one train/validation split: stratified per class, seeded, the same everywhere.

Training, ``dli-perception dataset split`` and data-parallel training all call
:func:`stratified_split`, so one dataset and one seed always give one split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dli_perception.errors import DatasetError


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int, *, allow_single: bool = False
) -> tuple[list[int], list[int]]:
    """Split sample indices into sorted ``(train, val)`` lists, class by class.

    ``labels[i]`` is the class index of sample ``i``. Each class is permuted with a generator
    seeded by ``(seed, class index)``; a class of n samples gives ``round(n * val_fraction)`` to
    validation, at least one and at most n - 1 (none when ``val_fraction`` is 0). A class of one
    sample raises :class:`DatasetError` (training needs one to learn from and one to check) unless
    ``allow_single``, which keeps it in training.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels_arr = np.asarray(labels, dtype=np.int64)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == label)
        if len(members) < 2 and not allow_single:
            raise DatasetError(
                f"class index {int(label)} has {len(members)} image(s); at least two are needed "
                "(one for training, one for validation)"
            )
        members = np.random.default_rng([int(seed), 1, int(label)]).permutation(members)
        n_val = 0
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        val_idx.extend(int(i) for i in members[:n_val])
        train_idx.extend(int(i) for i in members[n_val:])
    return sorted(train_idx), sorted(val_idx)
