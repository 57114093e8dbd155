from dli_perception.core.bagio.to_dataset import *  # noqa: F403
