#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it with exactly its declared
# dependencies (pinned by requirements.txt) into a fresh virtual environment outside the
# checkout, with no editable install and no PYTHONPATH, then, from an empty directory, train,
# evaluate and run a Python example against it. A subpackage missing from the wheel or a runtime
# import missing from [project.dependencies] fails here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/keras_cvae_wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
unset PYTHONPATH
export TF_CPP_MIN_LOG_LEVEL=2
export KERAS_CVAE_CACHE="$work/cache"

echo "check_wheel: building the wheel"
"$repo/.venv/bin/python" -m pip wheel -q --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/keras_cvae-*.whl)
"$python" -m venv "$work/venv"
echo "check_wheel: installing $(basename "$wheel") and its declared dependencies into a fresh venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q -c "$repo/requirements.txt" "$wheel"

cd "$work"
bin="$work/venv/bin"
echo "check_wheel: keras-cvae train"
"$bin/keras-cvae" train --dataset fashion_mnist --epochs 1 --limit 1000
echo "check_wheel: keras-cvae evaluate"
"$bin/keras-cvae" evaluate --model saved_models/fashion_mnist-mlp/1 --iw-samples 10 --limit 500 --likelihood-only
test -s saved_models/fashion_mnist-mlp/1-evaluation/metrics.json
echo "check_wheel: the Python API"
VENV="$work/venv" "$bin/python" - <<'EOF'
import os
import sys

import numpy as np

import keras_cvae
from keras_cvae import CVAE, export_saved_model, load

assert keras_cvae.__file__.startswith(os.environ["VENV"]), f"not the installed wheel: {keras_cvae.__file__}"
x = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
y = np.arange(64) % 10
model = CVAE(image_shape=(28, 28, 1), num_classes=10, hidden_units=(32,))
model.compile(optimizer="adam")
model.fit(x, y, epochs=1, batch_size=16, verbose=0)
model.save("mine.keras")
export = export_saved_model(model, "saved_models/mine")
client = load(export)
assert client.generate([1, 2], num=2).shape == (4, 28, 28, 1)
run_model = load("runs/fashion_mnist-mlp")
assert run_model.generate([0, 1], seed=1).shape == (2, 28, 28, 1)
print(f"check_wheel: keras_cvae {keras_cvae.__version__} from {keras_cvae.__file__} works", file=sys.stderr)
EOF
echo "check_wheel: passed"
