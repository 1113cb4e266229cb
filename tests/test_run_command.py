"""`coldlabel run` on the real `tiny` dataset with the labelers that need no LLM: every step runs once, the
same users are labeled by each labeler, E0/TwoTower are trained once and E3 once per labeler, the report and
the headline appear; a rerun on unchanged inputs labels and trains nothing."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from coldlabel.cli import app
from coldlabel.cli.run import Labeler, parse_labelers, run_id_for, usable
from coldlabel.config import load_settings
from coldlabel.data.workspace import Workspace
from coldlabel.errors import ConfigError
from coldlabel.store import Store
from labeler.runs import dataset_users
from tests.support.datasets import copy_dataset, train_config_file

LABELERS = "random,two_tower,oracle@0.9"


def invoke(config, *args):
    return CliRunner().invoke(app, ["--config", str(config), *args], env={"COLUMNS": "200"})


def _trained_files(root):
    return {p: p.stat().st_mtime_ns for p in (root / "tiny" / "experiments").rglob("*")
            if p.is_file() and ("runs" in p.parts or "checkpoints" in p.parts)}


@pytest.fixture(scope="module")
def ran(tiny_root, tmp_path_factory):
    root = copy_dataset(tiny_root, tmp_path_factory.mktemp("run-cli"))
    config = train_config_file(root, root / "run.toml")
    result = invoke(config, "run", "-d", "tiny", "--labelers", LABELERS, "--users", "20", "--seeds", "0")
    assert result.exit_code == 0, result.output
    return root, config, result.output


def test_run_labels_the_same_users_with_each_labeler_trains_and_reports(ran):
    root, config, output = ran
    settings = load_settings(config, environ={})
    runs = [r for r in Store(settings.store_url()).list_runs(dataset="tiny")]
    assert sorted(r.endpoint for r in runs) == ["oracle", "random", "two_tower"]
    store = Store(settings.store_url())
    users = {r.endpoint: sorted(store.users_by_status(r.id)["done"]) for r in runs}
    assert len(users["random"]) == 20 and users["random"] == users["two_tower"] == users["oracle"]
    experiments = root / "tiny" / "experiments"
    assert json.loads((experiments / "no-labels" / "results.json").read_text())["settings"] == ["E0", "TwoTower"]
    for r in runs:
        result = json.loads((experiments / r.id / "results.json").read_text())
        assert result["settings"] == ["E3"] and result["labels"]["source"] == f"store:{r.id}"
        assert result["labels"]["edges"] > 0
    report = root / "tiny" / "reports" / "run-tiny.md"
    assert report.exists() and report.with_suffix(".html").exists()
    text = report.read_text()
    assert all(r.id in text for r in runs) and "Cold-start results" in text
    labeled = text.split("## On the users each run labeled", 1)[1].split("\n## ", 1)[0]
    assert all(f"| `{r.id}` | {r.endpoint} | {group} | 1 |" in labeled for r in runs
               for group in ("labeled", "not labeled"))
    assert "labeled" in output and output.count(" → ") >= 2 * len(runs)  # E0 → E3 on each run's users, cold and warm
    assert "cold / warm Recall@20" in output and "oracle@0.9" in output and str(report) in output.replace("\n", "")


def test_a_rerun_on_unchanged_inputs_labels_and_trains_nothing(ran):
    root, config, _ = ran
    before = _trained_files(root)
    again = invoke(config, "run", "-d", "tiny", "--labelers", LABELERS, "--users", "20", "--seeds", "0")
    assert again.exit_code == 0, again.output
    assert again.output.count("is complete, reused") == 3
    assert "up to date" in again.output  # prepare, and every retrieval stage
    assert _trained_files(root) == before


def test_a_label_setting_or_the_user_count_changes_the_run_id(ran):
    _, config, _ = ran
    settings = load_settings(config, environ={})
    lb = Labeler("random", "random")
    same = run_id_for(load_settings(config, environ={}), "tiny", lb, 20)
    assert run_id_for(settings, "tiny", lb, 20) == same
    assert run_id_for(settings, "tiny", lb, 21) != same
    changed = load_settings(config, ["labeler.final_top_k=3"], environ={})
    assert run_id_for(changed, "tiny", lb, 20) != same


def test_labelers_are_checked_before_any_work(ran, tmp_path):
    _, config, _ = ran
    settings = load_settings(config, environ={})
    assert [lb.endpoint for lb in parse_labelers("llm,random", settings)] == [settings.labeler.endpoint, "random"]
    assert parse_labelers("oracle@0.3", settings)[0].overrides == ("labeler.oracle_precision=0.3",)
    for bad in ("oracle@high", "oracle@1.5", "random@0.5", "nosuch", ""):
        with pytest.raises(ConfigError):
            parse_labelers(bad, settings)
    no_truth = Workspace.of(tmp_path, "real")
    assert [lb.name for lb in usable(parse_labelers("random,oracle@0.3", settings), no_truth)] == ["random"]
    with pytest.raises(ConfigError):
        usable(parse_labelers("oracle", settings), no_truth)
    result = invoke(config, "run", "-d", "fresh", "--labelers", "nosuch", "--users", "5")
    assert result.exit_code == 2 and "nosuch" in result.output
    assert not (tmp_path.parent / "fresh").exists() and "1/5" not in result.output


@pytest.mark.slow
def test_run_on_your_own_files_leaves_the_oracle_out(tiny_root, tmp_path):
    """`--raw DIR`: Amazon-format files of your own (here tiny's raw files without its planted truth)."""
    own = tmp_path / "my-files"
    own.mkdir()
    for f in (tiny_root / "tiny" / "raw").iterdir():
        (own / f.name).write_bytes(f.read_bytes())
    root = tmp_path / "data"
    config = train_config_file(root, tmp_path / "run.toml")
    result = invoke(config, "run", "-d", "mine", "--raw", str(own), "--labelers", "random,oracle", "--users", "10",
                    "--seeds", "0")
    assert result.exit_code == 0, result.output
    assert "oracle left out" in result.output and (root / "mine" / "reports" / "run-mine.md").exists()
    runs = Store(load_settings(config, environ={}).store_url()).list_runs(dataset="mine")
    assert [r.endpoint for r in runs] == ["random"]


@pytest.mark.llm
def test_demo_labels_with_the_real_local_llm_and_trains_on_its_labels(local_llm, tiny_root, tmp_path):
    """The README's main job (`coldlabel demo` = run with the demo caps) with the real SmolLM2 server."""
    root = copy_dataset(tiny_root, tmp_path)
    config = train_config_file(root, tmp_path / "demo.toml")
    with config.open("a") as fh:
        fh.write(f'[endpoints.local]\nbase_url = "{local_llm.base_url}"\nmodel = "{local_llm.model_alias}"\n')
    result = invoke(config, "demo", "-d", "tiny", "--users", "2", "--labelers", "llm,random", "--seeds", "0")
    assert result.exit_code == 0, result.output
    store = Store(load_settings(config, environ={}).store_url())
    llm_run = next(r for r in store.list_runs(dataset="tiny") if r.endpoint == "local")
    assert llm_run.model == local_llm.model_alias and store.run_progress(llm_run.id).done == 2
    assert store.run_progress(llm_run.id).totals.llm_calls > 0
    assert (root / "tiny" / "experiments" / llm_run.id / "results.json").exists()
    assert "llm" in result.output and "cold / warm Recall@20" in result.output


def test_run_labels_the_most_recently_active_users(ran):
    """`--users N` in run takes the N users whose last training interaction is latest (labeler.user_order =
    recent), not the earliest users by index; `label start` keeps the index order unless told."""
    root, config, _ = ran
    settings = load_settings(config, ["labeler.user_order=recent"], environ={})
    ws = Workspace.of(root, "tiny")
    last: dict[int, int] = {}
    for r in ws.train:
        last[r.user_idx] = max(last.get(r.user_idx, 0), r.ts)
    with_history = [u for u, seq in ws.sequences.items() if seq]
    cutoff = sorted((last[u] for u in with_history), reverse=True)[19]
    chosen = [u for u, _ in dataset_users(settings, "tiny", 20)]
    assert len(chosen) == 20 and min(last[u] for u in chosen) >= cutoff
    assert chosen != sorted(with_history)[:20]
    assert [u for u, _ in dataset_users(load_settings(config, environ={}), "tiny", 20)] == sorted(with_history)[:20]
    store = Store(settings.store_url())
    run = next(r for r in store.list_runs(dataset="tiny") if r.endpoint == "random")
    assert sorted(store.users_by_status(run.id)["done"]) == chosen
