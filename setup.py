"""Install dli_perception as an ament_python package (colcon) or a plain pip package (off-robot)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dli_perception"

# Node executables: `ros2 run dli_perception <name>` and console scripts of the same name.
NODES = {
    "camera_node": "dli_perception.nodes.camera_node:main",
    "recorder_node": "dli_perception.nodes.recorder_node:main",
    "trainer_node": "dli_perception.nodes.trainer_node:main",
    "classifier_node": "dli_perception.nodes.classifier_node:main",
    "reaction_node": "dli_perception.nodes.reaction_node:main",
}

# Python dependencies. install_requires holds only what is safe to let pip resolve anywhere (on a robot
# rosdep installs these from apt, see package.xml). The rest are extras, so that `pip install` never
# replaces a robot's OpenCV or JetPack's torch: `pip install -e .[all]` off-robot (the set-up script
# uses requirements/*.txt instead, with pinned torch), `.[runtime]` next to an existing torch.
EXTRAS = {
    # inference, export, bags, training reports: none of these pulls in torch
    "runtime": [
        "opencv-python-headless",
        "Pillow",
        "onnx",
        "onnxscript",
        "onnxconverter-common",
        "onnxruntime",
        "rosbags",
        "matplotlib",
        "tqdm",
        "aiohttp",  # the teach station
    ],
    # training and the torch backend; on a Jetson use NVIDIA's JetPack wheels instead
    "torch": ["torch", "torchvision"],
}
EXTRAS["all"] = EXTRAS["runtime"] + EXTRAS["torch"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "benchmarks"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    package_data={PACKAGE: ["py.typed", "teach/static/*"]},  # the teach station page
    install_requires=["setuptools", "numpy", "PyYAML"],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="dli_perception maintainers",
    maintainer_email="maintainers@dli-perception.dev",
    description="ROS 2 perception package: record, fine-tune ResNet-18, classify with TensorRT, react.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        # Nodes start through nodes/launcher.py, which records a Ctrl-C from the first instant.
        "console_scripts": [f"{name}=dli_perception.nodes.launcher:{name}" for name in NODES]
        + ["teach_station=dli_perception.nodes.launcher:teach_station"]  # the teach station's page alone
        + ["dli-perception=dli_perception.cli:main"],
    },
)
