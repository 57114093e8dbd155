#!/usr/bin/env bash
# Off-robot set-up: create (or bring up to date) a virtual environment with ROS 2 from PyPI wheels, the
# ML stack, the test tools and dli_perception itself (editable), then check that every module imports.
#
#   bash scripts/setup_venv.sh [DISTRO] [VENV_DIR]     DISTRO: kilted (default) or jazzy; VENV_DIR: .venv
#   bash scripts/setup_venv.sh jazzy .venv-jazzy       a second venv with the ROS 2 Jazzy (LTS) wheels
#   bash scripts/setup_venv.sh --check [DISTRO] [VENV_DIR]   only the import check of an existing venv
#
# DISTRO picks requirements/ros-DISTRO.txt; everything else installed is the same for every distribution.
# Launch wheels (launch, launch_ros, ros2launch, ...; no PyPI wheels exist) are installed too from the
# folder DLI_LAUNCH_WHEELS names, by default ../shared/wheels beside the repository when it holds
# wheels; DLI_LAUNCH_WHEELS= (empty) leaves them out. Their Python dependencies: requirements/launch.txt.
#
# Exit status: 0 only when pip succeeded and every module imports; 1 when pip or the import check failed
# (the log says which); 2 for a usage error. Re-running on an existing venv runs pip again (it installs
# what is missing or changed and re-installs the package) and the same check.
#
# Never run this on a robot with system ROS 2: there, build with colcon (README, "On a robot").
set -euo pipefail
check_only=0
if [ "${1:-}" = "--check" ]; then
  check_only=1
  shift
fi
distro="${1:-${DLI_ROS_DISTRO:-kilted}}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${2:-$root/.venv}"
[[ "$venv" == /* ]] || venv="$PWD/$venv"
ros_req="$root/requirements/ros-$distro.txt"
if [ ! -f "$ros_req" ]; then
  echo "setup_venv: no wheels for ROS distribution '$distro'; available:" \
    "$(cd "$root/requirements" && ls ros-*.txt | sed 's/ros-//; s/\.txt//' | tr '\n' ' ')" >&2
  exit 2
fi

# Launch wheels: an explicit folder must hold wheels; the default one is used only when it does.
wheels=""
if [ -n "${DLI_LAUNCH_WHEELS+set}" ]; then
  wheels="$DLI_LAUNCH_WHEELS"
  if [ -n "$wheels" ] && ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "setup_venv: DLI_LAUNCH_WHEELS=$wheels holds no wheels (*.whl)" >&2
    exit 2
  fi
elif compgen -G "$root/../shared/wheels/*.whl" >/dev/null; then
  wheels="$(cd "$root/../shared/wheels" && pwd)"
fi

# Every module the package, its nodes, its tests and CI import; the check lists every one that fails.
modules=(
  rclpy rclpy.executors sensor_msgs.msg std_msgs.msg std_srvs.srv geometry_msgs.msg diagnostic_msgs.msg
  numpy yaml cv2 PIL torch torchvision onnx onnxscript onnxconverter_common onnxruntime rosbags matplotlib tqdm aiohttp
  playwright.sync_api
  pytest pytest_timeout hypothesis colcon_core colcon_ros catkin_pkg
  dli_perception dli_perception.cli
)
launch_modules=(launch launch_xml launch_yaml launch_ros ros2launch.api osrf_pycommon lark)
programs=(colcon ruff dli-perception)  # each must answer --help
entry_points=(camera_node recorder_node trainer_node classifier_node reaction_node)

check_venv() {  # check_venv WITH_LAUNCH: 0 when every module imports and every program runs
  local with_launch="$1" missing=() program
  local list=("${modules[@]}")
  [ "$with_launch" -eq 1 ] && list+=("${launch_modules[@]}")
  local code='
import importlib, sys
bad = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # a module that is there but broken counts too
        bad.append(f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r})")
print("\n".join(bad))
'
  local bad
  if [ ! -x "$venv/bin/python" ]; then
    echo "setup_venv: $venv/bin/python does not exist" >&2
    return 1
  fi
  # From / with PYTHONPATH unset: the check is of the venv, not of the current folder or the caller's path.
  bad="$(cd / && env -u PYTHONPATH "$venv/bin/python" -c "$code" "${list[@]}" 2>&1)" || bad="${bad:-python failed}"
  [ -n "$bad" ] && while IFS= read -r line; do missing+=("module $line"); done <<<"$bad"
  for program in "${programs[@]}"; do
    if [ ! -x "$venv/bin/$program" ]; then
      missing+=("program $venv/bin/$program (missing)")
    elif ! env -u PYTHONPATH "$venv/bin/$program" --help >/dev/null 2>&1; then
      missing+=("program $venv/bin/$program (--help fails)")
    fi
  done
  for program in "${entry_points[@]}"; do
    [ -x "$venv/bin/$program" ] || missing+=("program $venv/bin/$program (missing)")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup_venv: the environment in $venv is incomplete; these do not work:" >&2
    printf 'setup_venv:   %s\n' "${missing[@]}" >&2
    return 1
  fi
  echo "setup_venv: checked ${#list[@]} modules and $((${#programs[@]} + ${#entry_points[@]})) programs in $venv"
}

has_launch() {  # whether the venv already has the launch wheels (then they are checked too)
  [ -x "$venv/bin/python" ] && (cd / && env -u PYTHONPATH "$venv/bin/python" -c \
    'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("launch_ros") else 1)' 2>/dev/null)
}

if [ "$check_only" -eq 1 ]; then
  with_launch=0
  has_launch && with_launch=1
  check_venv "$with_launch"
  exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup_venv: the ROS 2 wheels need Python 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

# pip, its exit status kept: the filter only drops the warning pip prints per package for a configured
# local index folder that does not exist (sed never fails, and pipefail reports pip's own status).
pip_install() {
  local rc
  set +e
  "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 \
    | sed -u "/^[[:space:]]*WARNING: Location 'file:/d"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "setup_venv: pip install failed with exit status $rc (see above); $venv is not ready" >&2
    exit 1
  fi
}

if [ -d "$venv" ]; then
  echo "setup_venv: updating $venv (ROS 2 $distro wheels)"
else
  echo "setup_venv: creating $venv (ROS 2 $distro wheels)"
fi
"$python" -m venv "$venv"
pip_install -r "$ros_req" -r "$root/requirements/runtime.txt" -r "$root/requirements/dev.txt" \
  --use-pep517 -e "$root"
with_launch=0
if [ -n "$wheels" ]; then
  echo "setup_venv: installing the launch wheels from $wheels"
  # --no-deps: launch_ros declares ament-index-python, which the ROS wheels provide under another name.
  pip_install --no-deps "$wheels"/*.whl -r "$root/requirements/launch.txt"
  with_launch=1
elif has_launch; then
  with_launch=1
fi
check_venv "$with_launch" || {
  echo "setup_venv: pip succeeded but the environment is incomplete (see the list above)" >&2
  exit 1
}
shown="${venv#"$PWD"/}"
echo "setup_venv: ready (ROS 2 $distro). Run the tests with: $shown/bin/python -m pytest"
