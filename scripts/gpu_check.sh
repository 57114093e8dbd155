#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, build TensorRT FP16 and INT8 engines for a model
# directory, compare their top-1 with ONNX Runtime fp32 on the validation images, and print
# frames/s beside the naive DLI loop (PIL + torchvision + eager torch) on the same GPU.
#
#   scripts/gpu_check.sh [MODEL_DIR]
#
# Without MODEL_DIR it trains a small model (head only, random weights: no downloads) on synthetic
# scenes first. It makes its own venv (default .gpu-venv; GPU_VENV=... to choose) with CUDA torch
# and `tensorrt` from PyPI (11.x today; TRT_SPEC="tensorrt==10.*" to try another), and installs this
# package into it. Prints the figures; exits non-zero when an engine disagrees with fp32 on more
# than 2 % of the validation images.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPU_VENV:-$HERE/.gpu-venv}"
PYTHON="${PYTHON:-python3}"
TRT_SPEC="${TRT_SPEC:-tensorrt}"
WORK="${GPU_CHECK_DIR:-$(mktemp -d)}"
MODEL_DIR="${1:-}"

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this machine has no NVIDIA GPU driver" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    # CUDA torch: the default PyPI wheels of torch are CUDA builds on Linux x86_64
    grep -v -E '^(#|$)' "$HERE/requirements/runtime.txt" | "$VENV/bin/pip" install -q -r /dev/stdin
    "$VENV/bin/pip" install -q "$TRT_SPEC" pillow
fi
PY="$VENV/bin/python"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, tensorrt; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; \
print('torch', torch.__version__, 'tensorrt', tensorrt.__version__, torch.cuda.get_device_name(0))"

exec "$PY" - "$WORK" "$MODEL_DIR" <<'EOF'
import sys, time
from pathlib import Path

import numpy as np

work, model_dir = Path(sys.argv[1]), sys.argv[2]
from dli_perception.core.backends.onnxruntime import OnnxRuntimeBackend
from dli_perception.core.backends.tensorrt import TensorRTBackend
from dli_perception.core.modeldir import load_metadata
from dli_perception.core.training import read_rgb
from dli_perception.core.variant_build import data_from_dataset

if not model_dir:
    import cv2
    from dli_perception.core.export import export_model_dir
    from dli_perception.core.preprocess import PreprocessConfig
    from dli_perception.core.synthetic import SyntheticScenes
    from dli_perception.core.training import TrainConfig, train

    classes = ("free", "blocked", "thumbs_up")
    scenes = SyntheticScenes(classes, 640, 480)
    data = work / "scenes"
    for c in classes:
        (data / c).mkdir(parents=True, exist_ok=True)
        for i in range(40):
            cv2.imwrite(str(data / c / f"{i}.png"), cv2.cvtColor(scenes.render(c, 1000 + i), cv2.COLOR_RGB2BGR))
    cfg = TrainConfig(mode="head", weights="none", epochs=15, lr=0.05, num_workers=0, val_fraction=0.3,
                      early_stop_patience=0, augment=False, preprocess=PreprocessConfig(size=224))
    model_dir = export_model_dir(train(data, cfg), work / "model", report=False)
model_dir = Path(model_dir)
meta = load_metadata(model_dir)
for name, info in meta.variants.items():
    print(f"variant {name}: {info.get('status')}: {info.get('reason', '')}")
from dli_perception.core.training import TrainConfig
config = TrainConfig.from_dict(meta.training["config"]) if meta.training.get("config") else None
split = data_from_dataset(meta.dataset["root"], config) if meta.dataset.get("root") else None
images = [read_rgb(p) for p, _ in split.validation] if split else []
if not images:
    sys.exit("gpu_check: no validation images (the model's dataset is not on this machine)")
labels = np.asarray([meta.classes.index(split.classes[label]) for _, label in split.validation])

def top1(backend):
    return np.concatenate([[p.index for p in backend.classify(images[i:i + 8])] for i in range(0, len(images), 8)])

def fps(step, n=200):
    step(); start = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - start)

frame = images[0]
ref_backend = OnnxRuntimeBackend.load(model_dir, device="cpu", precision="fp32")
ref = top1(ref_backend)
print(f"onnxruntime fp32 (CPU): accuracy {np.mean(ref == labels):.3f} on {len(images)} validation images")
rows = [("onnxruntime fp32 CPU", fps(lambda: ref_backend.classify([frame]), 50))]

import torch
from PIL import Image
from torchvision import transforms
from dli_perception.core.export import load_checkpoint_model
naive_model = load_checkpoint_model(model_dir, device="cuda").eval()
tf = transforms.Compose([transforms.Resize((meta.preprocess.size,) * 2), transforms.ToTensor(),
                         transforms.Normalize(meta.preprocess.mean, meta.preprocess.std)])
def naive():
    with torch.no_grad():
        torch.softmax(naive_model(tf(Image.fromarray(frame)).unsqueeze(0).cuda()), 1).cpu()
rows.insert(0, ("naive DLI loop (PIL + torchvision + eager torch, CUDA)", fps(naive)))

failed = False
for precision in ("fp16", "int8", "auto"):
    try:
        backend = TensorRTBackend.load(model_dir, precision=precision, cache_dir=work / "engines")
    except Exception as exc:
        print(f"tensorrt precision={precision}: FAILED: {type(exc).__name__}: {exc}")
        failed = True
        continue
    pred = top1(backend)
    agree = float(np.mean(pred == ref))
    print(f"tensorrt precision={precision}: {backend.variant_reason}")
    print(f"  top-1 agreement with onnxruntime fp32 {100 * agree:.1f} %, accuracy {np.mean(pred == labels):.3f}")
    failed |= agree < 0.98
    rows.append((f"tensorrt {precision} ({backend.variant})", fps(lambda: backend.classify([frame]))))
    backend.close()
base = rows[0][1]
print(f"\n{'pipeline (one 640x480 frame per call)':<58} {'frames/s':>9} {'vs naive':>9}")
for label, value in rows:
    print(f"{label:<58} {value:9.1f} {value / base:8.2f}x")
sys.exit(1 if failed else 0)
EOF
