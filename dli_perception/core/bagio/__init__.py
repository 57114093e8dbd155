"""rosbag2 bags <-> datasets, through the pure-Python ``rosbags`` library (no ROS install needed).

:func:`bag_to_dataset` reads sqlite3 and mcap bags (the storage is detected from
``metadata.yaml``) and saves their images into a :class:`~dli_perception.core.dataset.DatasetStore`;
:func:`dataset_to_bag` writes a dataset as a bag, so the two convert both ways.

Where each part lives:

- :mod:`.bags`: opening bags, their topics, message definitions (which typestore), label
  messages and the robot a bag came from;
- :mod:`.to_dataset`: :func:`bag_to_dataset`, how images get their time and label;
- :mod:`.targets`: the target topics (class label, XY PointStamped, label set) and their timelines;
- :mod:`.pipeline`: decoding and writing on worker threads in a deterministic order;
- :mod:`.to_bag`: :func:`dataset_to_bag`.
"""

from dli_perception.core.bagio.bags import (
    COMPRESSED_TYPE,
    FALLBACK_DISTRO,
    IMAGE_TYPE,
    IMAGE_TYPES,
    LABEL_TYPE,
    STORAGES,
    available_distros,
    bag_topics,
    robot_name,
    typestore_for,
)
from dli_perception.core.bagio.stats import BagConversionStats
from dli_perception.core.bagio.targets import XY_TYPE
from dli_perception.core.bagio.to_bag import BagWriteStats, dataset_to_bag
from dli_perception.core.bagio.to_dataset import bag_to_dataset
from dli_perception.core.progress import ProgressCallback

__all__ = [
    "COMPRESSED_TYPE",
    "FALLBACK_DISTRO",
    "IMAGE_TYPE",
    "IMAGE_TYPES",
    "LABEL_TYPE",
    "STORAGES",
    "XY_TYPE",
    "BagConversionStats",
    "BagWriteStats",
    "ProgressCallback",
    "available_distros",
    "bag_to_dataset",
    "bag_topics",
    "dataset_to_bag",
    "robot_name",
    "typestore_for",
]
