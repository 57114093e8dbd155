"""``python -m dli_perception.teach [--connect ...]``: the teach station as a process of its own.

What launch/teach.launch.py runs. Its first statement installs the handlers that record a Ctrl-C or
SIGTERM (see :mod:`dli_perception.nodes.launcher`); only then is anything heavy imported, so a stop
at any moment of the start ends the process with exit code 0 and no traceback.
"""

import sys

from dli_perception.nodes import launcher

sys.exit(launcher.teach_station())
