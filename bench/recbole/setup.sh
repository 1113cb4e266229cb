#!/usr/bin/env bash
# The RecBole benchmark environment, bench/.venv-recbole, kept apart from the product: RecBole is never a
# coldlabel dependency. recbole 1.2.1 is installed without its declared dependencies because it pins
# ray<=2.6.3 (only its hyper-parameter search imports ray) and colorlog/colorama to exact old releases;
# what its data, model, trainer and evaluator modules import is installed explicitly below. torch is the
# same exact CPU pin as the product's (a looser pin pulls a multi-GB CUDA build). Re-running is instant.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-recbole
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp=$VENV/.installed
want=$(sha256sum recbole/setup.sh | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo ">> installing recbole 1.2.1 into bench/$VENV"
  "$VENV/bin/python" -m pip install -q -U pip wheel
  "$VENV/bin/python" -m pip install -q torch==2.13.0
  # numpy<2 / pandas<3: recbole 1.2.1 predates both majors (np.float_-era code, pandas 3 copy-on-write).
  "$VENV/bin/python" -m pip install -q "numpy<2" "pandas<3" "scipy<1.15" scikit-learn pyyaml tqdm \
    "colorlog==4.7.2" "colorama==0.4.4" tensorboard texttable psutil tabulate
  "$VENV/bin/python" -m pip install -q --no-deps recbole==1.2.1
  "$VENV/bin/python" -c "import recbole.config, recbole.data, recbole.trainer, recbole.model.sequential_recommender"
  echo "$want" > "$stamp"
fi
