"""`coldlabel train` and `coldlabel report` on the real `tiny` dataset with labeling runs stored without an
LLM: reruns reuse every finished pair, an interrupted training resumes, a setting that needs labels asks for
a run, and the report is rebuilt from the stored results with the same numbers."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from coldlabel.cli import app
from coldlabel.config import load_settings
from coldlabel.store import Store
from labeler.runs import export_run
from tests.support.cli import COLDLABEL
from tests.support.datasets import copy_dataset, store_label_run, train_config_file
from trainer.jobs import Events, TrainJob, run_train

ROW = re.compile(r"^\| (?P<label>[^|]+?) \| (?P<seeds>\d+) \| (?P<cells>.+) \|$")


def invoke(config, *args):
    return CliRunner().invoke(app, ["--config", str(config), *args], env={"COLUMNS": "200"})


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in (root / "tiny" / "experiments").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """E0 and TwoTower (no labels) and E3 on the run `good`, two seeds, two epochs, through the CLI."""
    root = copy_dataset(tiny_root, tmp_path_factory.mktemp("train-cli"))
    config = train_config_file(root, root / "train.toml")
    settings = load_settings(config, environ={})
    store_label_run(settings, "good", in_taste=True)
    store_label_run(settings, "bad", in_taste=False)
    first = invoke(config, "train", "-d", "tiny", "--run", "good", "--settings", "E0,TwoTower,E3", "--seeds", "0,1")
    assert first.exit_code == 0, first.output
    return root, config, settings, first.output


def test_train_writes_per_run_and_shared_results_and_a_rerun_trains_nothing(trained):
    root, config, _, output = trained
    experiments = root / "tiny" / "experiments"
    shared = json.loads((experiments / "no-labels" / "results.json").read_text())
    by_run = json.loads((experiments / "good" / "results.json").read_text())
    assert shared["settings"] == ["E0", "TwoTower"] and by_run["settings"] == ["E3"]
    assert by_run["labels"]["source"] == "store:good" and by_run["labels"]["edges"] > 0
    assert "6 (setting, seed) pairs trained, 0 reused" in output and "cold R@20" in output
    before = _mtimes(root)
    again = invoke(config, "train", "-d", "tiny", "--run", "good", "--settings", "E0,TwoTower,E3", "--seeds", "0,1")
    assert again.exit_code == 0 and "0 (setting, seed) pairs trained, 6 reused" in again.output
    after = _mtimes(root)
    assert {p: t for p, t in after.items() if "runs" in p.parts or "checkpoints" in p.parts} == \
        {p: t for p, t in before.items() if "runs" in p.parts or "checkpoints" in p.parts}


def test_a_setting_that_needs_labels_without_a_run_is_one_line(trained):
    _, config, _, _ = trained
    res = invoke(config, "train", "-d", "tiny", "--settings", "E0,E2", "--seeds", "0")
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        "error: E2 train on labels: name a labeling run with --run RUN_ID (or exported files with --labels-tsv DIR)"]
    unknown = invoke(config, "train", "-d", "tiny", "--settings", "E9", "--seeds", "0")
    assert unknown.exit_code == 1 and "unknown setting(s) E9" in unknown.stderr
    no_run = invoke(config, "train", "-d", "tiny", "--run", "nope", "--settings", "E3", "--seeds", "0")
    assert no_run.exit_code == 1 and no_run.stderr.startswith("error: no run 'nope'")


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(trained, tiny_root, tmp_path):
    root, _, _, _ = trained
    fresh = copy_dataset(tiny_root, tmp_path)  # the same data as `trained`, nothing trained yet
    config = train_config_file(fresh, fresh / "train.toml")
    settings = load_settings(config, environ={})

    def stop_after_first_epoch(event, info):
        if event == "epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt  # what Ctrl-C does between two steps
    with pytest.raises(KeyboardInterrupt):
        run_train(TrainJob("tiny", ("E0",), (0,)), settings, Events(hook=stop_after_first_epoch))
    out = fresh / "tiny" / "experiments" / "no-labels"
    assert not (out / "runs").exists() and list(out.glob("checkpoints/E0/*/last.pt"))
    res = invoke(config, "train", "-d", "tiny", "--settings", "E0", "--seeds", "0")
    assert res.exit_code == 0 and "E0 seed 0: resumed after epoch 1" in res.output
    resumed = json.loads((out / "runs" / "E0" / "seed0.json").read_text())
    reference = json.loads((root / "tiny" / "experiments" / "no-labels" / "runs" / "E0" / "seed0.json").read_text())
    assert [h["epoch"] for h in resumed["train"]["history"]] == [1, 2]
    assert resumed["key"] == reference["key"]
    assert resumed["evaluations"]["candidates/hybrid"]["metrics"] == reference["evaluations"]["candidates/hybrid"]["metrics"]


def _tables(md: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{"cold"|"warm": {row label: [(mean, std) per column]}} from the report's two result tables."""
    out, split = {}, None
    for line in md.splitlines():
        if line.startswith("## "):
            split = next((s for s in ("cold", "warm") if line.lower().startswith(f"## {s}-start")), None)
        elif split and (m := ROW.match(line)):
            cells = [tuple(float(x) for x in c.split(" ± ")) for c in m["cells"].split(" | ")]
            out.setdefault(split, {})[m["label"]] = cells
    return out


def test_report_is_rebuilt_from_stored_results_with_the_same_numbers(trained):
    root, config, _, _ = trained
    before = _mtimes(root)
    res = invoke(config, "report", "-d", "tiny", "--run", "good")
    assert res.exit_code == 0, res.output
    md_path = root / "tiny" / "reports" / "experiments-good.md"
    assert str(md_path) in res.output.replace("\n", "")
    assert _mtimes(root) == before  # nothing trained, nothing rewritten
    md = md_path.read_text()
    page = md_path.with_suffix(".html").read_text()
    assert page.count('src="data:image/png;base64,') >= 2 and 'src="experiments-good-figures' not in page
    tables = _tables(md)
    metrics = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")
    experiments = root / "tiny" / "experiments"
    for source, setting, view in (("no-labels", "E0", "candidates/hybrid"), ("no-labels", "TwoTower", "candidates/tw"),
                                  ("good", "E3", "candidates/hybrid")):
        summary = json.loads((experiments / source / "results.json").read_text())["summary"][setting][view]
        for split in ("cold", "warm"):
            got = [x for cell in tables[split][setting] for x in cell]
            want = [x for m in metrics for x in (summary[split][m]["mean"], summary[split][m]["std"])]
            assert got == pytest.approx(want, abs=5e-5), (setting, split)
    seed_row = next(line for line in md.splitlines() if line.startswith("| E3 | cold |"))
    per_seed = [json.loads((experiments / "good" / "runs" / "E3" / f"seed{s}.json").read_text())
                ["evaluations"]["candidates/hybrid"]["metrics"]["cold"]["recall@20"] for s in (0, 1)]
    assert [float(x) for x in seed_row.split(" | ")[2:4]] == pytest.approx(per_seed, abs=5e-5)
    assert "## Labels per run" in md and "| `good` | planted |" in md
    e0_full = json.loads((experiments / "no-labels" / "results.json").read_text())["summary"]["E0"]["full/sas"]
    assert f"| E0 | `full/sas` | {e0_full['cold']['recall@20']['mean']:.4f} ± " in md


def test_report_of_several_runs_plots_cold_gain_against_label_precision(trained):
    root, config, _, _ = trained
    assert invoke(config, "train", "-d", "tiny", "--run", "bad", "--settings", "E3", "--seeds", "0,1").exit_code == 0
    res = invoke(config, "report", "-d", "tiny", "--run", "good,bad", "--name", "both")
    assert res.exit_code == 0, res.output
    md = (root / "tiny" / "reports" / "both.md").read_text()
    assert "| E3 · good |" in md and "| E3 · bad |" in md
    gains = {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        r"^\| `(\w+)` \| ([\d.]+)% \| ([+-][\d.]+) \| (?:[+-][\d.]+|—) \|$", md, re.M)}
    assert gains["good"][0] == 100.0 and gains["bad"][0] == 0.0  # edges inside / outside the planted tastes
    assert (root / "tiny" / "reports" / "both-figures" / "gain_vs_precision.png").stat().st_size > 1000
    assert (root / "tiny" / "reports" / "both-figures" / "label_precision.png").exists()
    # the same comparison over only the users each run labeled, E0 read from its stored per-user metrics
    section = md.split("## On the users each run labeled", 1)[1].split("\n## ", 1)[0]
    rows = {(m[1], m[2]): m[3].split(" | ") for m in re.finditer(r"^\| `(\w+)` \| \w+ \| (labeled|not labeled) \| 2 \| "
                                                                  r"(.+) \|$", section, re.M)}
    assert set(rows) == {(r, g) for r in ("good", "bad") for g in ("labeled", "not labeled")}
    experiments = root / "tiny" / "experiments"
    counted = 0
    for (run_id, group), cells in rows.items():
        for split, at in (("cold", 0), ("warm", 4)):  # columns: users, E0, E3, change per split
            e0 = []
            for seed in (0, 1):
                with np.load(experiments / run_id / "runs" / "E3" / f"seed{seed}.users.npz") as mine, \
                        np.load(experiments / "no-labels" / "runs" / "E0" / f"seed{seed}.users.npz") as base:
                    keep = (np.isin(base["users"], mine["labeled"]) == (group == "labeled")) \
                        & ~np.isnan(base[f"{split}/recall@20"])
                    assert int(cells[at]) == keep.sum()
                    e0.append(base[f"{split}/recall@20"][keep].mean() if keep.any() else None)
            if e0[0] is not None:
                counted += 1
                assert cells[at + 1].startswith(f"{np.mean(e0):.4f} ± ")
    assert counted >= 4


def test_report_without_results_is_one_line(trained):
    _, config, _, _ = trained
    res = invoke(config, "report", "-d", "nothing-here")
    assert res.exit_code == 1 and res.stderr.startswith("error: no stored results for nothing-here")


def test_labels_from_exported_files_train_the_same_as_from_the_store(trained, tmp_path):
    root, config, settings, _ = trained
    with Store(settings.store_url()) as store:
        export_run(store, "good", tmp_path / "good-export")
    res = invoke(config, "train", "-d", "tiny", "--labels-tsv", str(tmp_path / "good-export"), "--settings", "E3",
                 "--seeds", "0")
    assert res.exit_code == 0, res.output
    experiments = root / "tiny" / "experiments"
    from_tsv = json.loads((experiments / "tsv-good-export" / "runs" / "E3" / "seed0.json").read_text())
    from_store = json.loads((experiments / "good" / "runs" / "E3" / "seed0.json").read_text())
    assert from_tsv["labels"]["source"].startswith("tsv:") and from_tsv["key"] == from_store["key"]
    for view, evaluation in from_store["evaluations"].items():
        assert from_tsv["evaluations"][view]["metrics"] == evaluation["metrics"]


@pytest.mark.slow  # two `coldlabel train` processes, one killed with SIGKILL mid-training
def test_a_killed_train_process_resumes_from_its_last_epoch(tiny_root, tmp_path):
    root = copy_dataset(tiny_root, tmp_path)
    config = train_config_file(root, root / "train.toml")
    args = [*COLDLABEL, "--config", str(config), "--set", "trainer.batch_size=8", "train", "-d", "tiny",
            "--settings", "E0", "--seeds", "0", "--epochs", "40"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = root / "tiny" / "experiments" / "no-labels" / "checkpoints" / "E0"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("*/last.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("*/last.pt")), "no checkpoint before the kill"
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert again.returncode == 0, again.stderr
    assert re.search(r"E0 seed 0: resumed after epoch \d+", again.stdout)
    run = json.loads((checkpoints.parent.parent / "runs" / "E0" / "seed0.json").read_text())
    assert [h["epoch"] for h in run["train"]["history"]] == list(range(1, 41))
