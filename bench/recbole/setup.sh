#!/usr/bin/env bash
# The RecBole benchmark environment, bench/.venv-recbole, kept apart from the product: RecBole is never a
# coldlabel dependency. recbole 1.2.1 is installed without its declared dependencies because it pins
# ray<=2.6.3 and colorlog/colorama to exact old releases; what its config, data, model, trainer and evaluator
# modules import is installed explicitly below. torch is the same exact CPU pin as the product's (a looser
# pin pulls a multi-GB CUDA build). Re-running is instant. Two limits of RecBole 1.2.1 here:
# - recbole.quick_start (run_recbole) imports ray: drive Config / create_dataset / Trainer directly, as
#   bench/bench_recbole.py does (the export's general.yaml and sequential.yaml work that way);
# - with torch >= 2.6 its Trainer.evaluate(load_best_model=True) fails (torch.load now defaults to
#   weights_only): pass load_best_model=False, or set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
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
