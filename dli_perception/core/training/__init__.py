"""Transfer learning for image classification (see :mod:`dli_perception.core.training.loop`)."""

from dli_perception.core.training.loop import *  # noqa: F403
from dli_perception.core.training.loop import _Run  # noqa: F401
