#!/usr/bin/env bash
# Off-robot set-up: create a virtual environment with ROS 2 from PyPI wheels, the ML stack and
# dli_perception itself (editable), plus the test tools.
#
#   bash scripts/setup_venv.sh [DISTRO] [VENV_DIR]     DISTRO: kilted (default) or jazzy; VENV_DIR: .venv
#   bash scripts/setup_venv.sh jazzy .venv-jazzy       a second venv with the ROS 2 Jazzy (LTS) wheels
#
# DISTRO picks requirements/ros-DISTRO.txt; everything else installed is the same for every distribution.
#
# Never run this on a robot with system ROS 2: there, build with colcon (README, "On a robot").
set -euo pipefail
distro="${1:-${DLI_ROS_DISTRO:-kilted}}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${2:-$root/.venv}"
ros_req="$root/requirements/ros-$distro.txt"
if [ ! -f "$ros_req" ]; then
  echo "setup_venv: no wheels for ROS distribution '$distro'; available:" \
    "$(cd "$root/requirements" && ls ros-*.txt | sed 's/ros-//; s/\.txt//' | tr '\n' ' ')" >&2
  exit 2
fi
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup_venv: the ROS 2 wheels need Python 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
echo "setup_venv: creating $venv (ROS 2 $distro wheels)"
"$python" -m venv "$venv"
# pip prints a warning per package for local index folders that do not exist; keep the log readable.
"$venv/bin/python" -m pip install --disable-pip-version-check \
  -r "$ros_req" -r "$root/requirements/runtime.txt" -r "$root/requirements/dev.txt" \
  --use-pep517 -e "$root" 2>&1 | grep -v "^WARNING: Location 'file:" || true
check='import rclpy, sensor_msgs.msg, std_msgs.msg, std_srvs.srv, geometry_msgs.msg, diagnostic_msgs.msg
import torch, torchvision, onnxruntime, cv2, rosbags, dli_perception'
"$venv/bin/python" -c "$check" \
  || { echo "setup_venv: the environment in $venv is incomplete (see the pip output above)" >&2; exit 1; }
shown="${venv#"$PWD"/}"
echo "setup_venv: ready (ROS 2 $distro). Run the tests with: $shown/bin/python -m pytest"
