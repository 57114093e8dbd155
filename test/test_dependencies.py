"""Every third-party module the package imports is declared for both install paths.

On a robot: a rosdep key in package.xml, or the README's pip line for the few without one. With pip:
setup.py's install_requires or extras, and requirements/runtime.txt for the off-robot set-up. The
README's robot command must not let rosdep pip-install PyTorch over JetPack's.
"""

from __future__ import annotations

import ast
import re
import runpy
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# module -> (rosdep key in package.xml, or None: installed with pip on a robot / comes with JetPack;
#            PyPI distribution for setup.py and requirements, or None: ROS package / JetPack only)
DEPENDENCIES = {
    "rclpy": ("rclpy", None),
    "rcl_interfaces": ("rcl_interfaces", None),
    "std_msgs": ("std_msgs", None),
    "std_srvs": ("std_srvs", None),
    "sensor_msgs": ("sensor_msgs", None),
    "geometry_msgs": ("geometry_msgs", None),
    "diagnostic_msgs": ("diagnostic_msgs", None),
    "ament_index_python": ("ament_index_python", None),
    "cv_bridge": ("cv_bridge", None),
    "launch": ("launch", None),
    "launch_ros": ("launch_ros", None),
    "numpy": ("python3-numpy", "numpy"),
    "yaml": ("python3-yaml", "PyYAML"),
    "cv2": ("python3-opencv", "opencv-python-headless"),
    "PIL": ("python3-pil", "Pillow"),
    "matplotlib": ("python3-matplotlib", "matplotlib"),
    "tqdm": ("python3-tqdm", "tqdm"),
    "onnxruntime": ("python3-onnxruntime-pip", "onnxruntime"),
    "rosbags": ("python3-rosbags-pip", "rosbags"),
    "torch": ("python3-torch", "torch"),
    "torchvision": ("python3-torchvision", "torchvision"),
    "aiohttp": ("python3-aiohttp", "aiohttp"),
    "onnx": (None, "onnx"),
    "onnxconverter_common": (None, "onnxconverter-common"),
    "onnxscript": (None, "onnxscript"),  # not imported: torch.onnx.export(dynamo=True) needs it
}
OPTIONAL = {
    "tensorrt": "JetPack (the tensorrt backend)",
    "vision_msgs": "~/classification is published only when it is installed",
}
ROBOT_PIP_ONLY = [dist for _, (key, dist) in DEPENDENCIES.items() if key is None]  # pip takes distribution names
PIP_TORCH_KEYS = ("python3-pytorch-pip", "python3-torchvision-pip", "python-pytorch-pip")


def imported_third_party() -> dict[str, str]:
    """Top-level third-party modules imported anywhere in dli_perception/ (also inside functions)."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "dli_perception").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "dli_perception":
                    found.setdefault(top, path.relative_to(REPO).as_posix())
    return found


def package_xml_keys(kind: str) -> list[str]:
    return [e.text.strip() for e in ET.parse(REPO / "package.xml").getroot().iter(kind)]


def robot_commands() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### On a robot") : readme.index("### On a Jetson with TensorRT")]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, re.DOTALL))


def setup_py_arguments(monkeypatch) -> dict:
    """The keyword arguments setup.py passes to ``setuptools.setup`` (run for real, ``setup`` captured)."""
    import setuptools

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"))
    return captured


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line)[0].lower())
    return names


def test_every_imported_module_is_accounted_for():
    unknown = {m: where for m, where in imported_third_party().items() if m not in DEPENDENCIES and m not in OPTIONAL}
    assert not unknown, f"declare these in package.xml/setup.py and in DEPENDENCIES here: {unknown}"


def test_package_xml_has_a_rosdep_key_for_every_module_that_has_one():
    keys = set(package_xml_keys("exec_depend"))
    missing = {m: key for m, (key, _) in DEPENDENCIES.items() if key and key not in keys}
    assert not missing, f"package.xml lacks <exec_depend> for {missing}"
    assert {"python3-pytest", "python3-pytest-timeout", "python3-hypothesis"} <= set(package_xml_keys("test_depend"))


def test_no_rosdep_key_pip_installs_pytorch():
    keys = set(package_xml_keys("exec_depend")) | set(package_xml_keys("depend"))
    assert not keys & set(PIP_TORCH_KEYS), keys & set(PIP_TORCH_KEYS)


def test_the_robot_commands_keep_jetpacks_torch_and_install_the_rest():
    commands = robot_commands()
    rosdep = next(line for line in commands.splitlines() if line.startswith("rosdep install"))
    skipped = re.search(r'--skip-keys\s+"([^"]+)"', rosdep)
    assert skipped and {"python3-torch", "python3-torchvision"} <= set(skipped.group(1).split()), rosdep
    pip_lines = [line.split("#")[0] for line in commands.splitlines() if "pip install" in line]
    assert not any(re.search(r"\btorch(vision)?\b", line) for line in pip_lines), pip_lines
    pip_names = {word for line in pip_lines for word in line.split()}
    assert set(ROBOT_PIP_ONLY) <= pip_names, (ROBOT_PIP_ONLY, pip_lines)


def test_pip_metadata_declares_every_library_without_forcing_torch(monkeypatch):
    arguments = setup_py_arguments(monkeypatch)
    install, extras = arguments["install_requires"], arguments["extras_require"]
    declared = {name.lower() for name in install} | {name.lower() for names in extras.values() for name in names}
    for module, (_, dist) in DEPENDENCIES.items():
        assert dist is None or dist.lower() in declared, f"setup.py does not declare {dist} ({module})"
    assert not {"torch", "torchvision"} & {name.lower() for name in install}, install
    assert not {"torch", "torchvision"} & {name.lower() for name in extras["runtime"]}, extras
    assert set(extras["all"]) == set(extras["runtime"]) | set(extras["torch"]), extras


def test_the_off_robot_requirements_cover_every_library():
    off_robot = requirement_names(REPO / "requirements" / "runtime.txt")
    missing = [dist for _, dist in DEPENDENCIES.values() if dist and dist.lower() not in off_robot]
    assert not missing, f"requirements/runtime.txt lacks {missing}"
