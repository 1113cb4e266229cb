#!/usr/bin/env bash
# Our SASRec against RecBole's on the `beauty` preset, in one run (see bench/bench_recbole.py):
#   bench/recbole/compare.sh DATA_ROOT EPOCHS [RECBOLE_EPOCHS]
# EVAL_EVERY=N (environment): test metrics of our side every N epochs (RecBole: every epoch, as its epochs are long).
# DATA_ROOT is the benchmark's own data root (synth, prepare and retrieval build are skipped while current).
# Each side runs alone, one torch thread, one after the other; the table lands in DATA_ROOT/compare-*/table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(realpath -m "${1:?usage: compare.sh DATA_ROOT EPOCHS [RECBOLE_EPOCHS]}")
EPOCHS=${2:?usage: compare.sh DATA_ROOT EPOCHS [RECBOLE_EPOCHS]}
RB_EPOCHS=${3:-$EPOCHS}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
bash bench/recbole/setup.sh
cl() { "$PY" -c 'from coldlabel.cli import main; main()' --set "data.root=$ROOT" "$@"; }
[ -d "$ROOT/beauty/raw" ] || cl data synth --preset beauty
cl data prepare -d beauty
cl retrieval build -d beauty
cl data export-recbole -d beauty
OUT=$ROOT/compare-$EPOCHS-$RB_EPOCHS
"$PY" bench/bench_recbole.py ours --data-root "$ROOT" --epochs "$EPOCHS" --eval-every "${EVAL_EVERY:-1}" --out "$OUT"
bench/.venv-recbole/bin/python bench/bench_recbole.py recbole --data-root "$ROOT" --epochs "$RB_EPOCHS" --eval-every 1 --out "$OUT"
"$PY" bench/bench_recbole.py table --out "$OUT" | tee "$OUT/table.md"
