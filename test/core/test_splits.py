"""The one train/validation split: the dataset store and training hold out the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dli_perception.core import training as T
from dli_perception.core.dataset import DatasetStore
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS, is_image_name
from dli_perception.core.splits import stratified_split
from dli_perception.errors import DatasetError


def _fill(root: Path, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(7)
    with DatasetStore(root, image_format="png") as store:
        for label, n in counts.items():
            for _ in range(n):
                store.add(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), label)


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_dataset_split_holds_out_what_training_holds_out(tmp_path, seed):
    root = tmp_path / "ds"
    _fill(root, {"b": 7, "a-b": 5, "a": 9})  # "a-b" sorts before "a/" as a path, after "a" as a class
    with DatasetStore(root) as store:
        train, val = store.split(val_fraction=0.3, seed=seed)
    data = T.load_data(root, T.TrainConfig(val_fraction=0.3, seed=seed))
    as_rel = lambda samples: sorted(Path(p).relative_to(root).as_posix() for p, _ in samples)  # noqa: E731
    assert sorted(e.file for e in val) == as_rel(data.val)
    assert sorted(e.file for e in train) == as_rel(data.train)


def test_split_keeps_single_images_in_training_only_when_asked():
    assert stratified_split([0, 0, 0, 1], 0.5, seed=0, allow_single=True)[1] != []
    assert 3 in stratified_split([0, 0, 0, 1], 0.5, seed=0, allow_single=True)[0]
    with pytest.raises(DatasetError, match="at least two"):
        stratified_split([0, 0, 0, 1], 0.5, seed=0)
    with pytest.raises(DatasetError, match="val_fraction"):
        stratified_split([0, 0], 1.0, seed=0)
    assert stratified_split([0, 0, 1, 1], 0.0, seed=0) == ([0, 1, 2, 3], [])


def test_one_extension_list_serves_every_reader():
    from dli_perception.core import dataset
    from dli_perception.core.backends import calibration
    from dli_perception.core.camera import folder

    assert dataset.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert T.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert calibration.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert folder.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert is_image_name("X.JPG") and is_image_name(Path("a/b.webp")) and not is_image_name("notes.txt")
