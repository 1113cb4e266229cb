"""A run's life: start, status, resume, cancel, export, and how it ended. Plain functions over the Store.

A run is one labeling job: a dataset, a frozen configuration, the users to label, and an endpoint (which may
change during the run: every switch is logged in the run). Its state is rows in SQL, never the queue: the
queue only says "look at user U of run R", so a lost or duplicated message costs at most a lookup.

A run labels one version of its dataset (``dataset_fingerprint``): it refuses to start on a dataset without
retrieval artefacts, and to resume (or label another user) once the dataset changed under it. When every
user is settled :func:`settle_run` decides how it ended: ``done``, ``degraded`` (some users dead, or more
stage answers fell back than ``labeler.max_fallback_share``) or ``failed`` (no user labeled).
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from coldlabel.config import Settings
from coldlabel.data.workspace import Workspace
from coldlabel.errors import DatasetChanged, RunError, WorkspaceError
from coldlabel.store import Run, RunProgress, Store
from labeler import builtin
from labeler.prompts import version_tag
from retrieval import artefacts

# ---- dataset facts (read without loading the candidate space) -----------------------------------

def dataset_fingerprint(settings: Settings, dataset: str) -> str:
    """Hash of processed/manifest.json: which inputs and settings produced the data this run labels."""
    path = Workspace.of(settings.data.root, dataset).processed / "manifest.json"
    if not path.exists():
        raise WorkspaceError(f"{path} is missing; run `coldlabel data prepare --dataset {dataset}` first")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def check_dataset(settings: Settings, run: Run) -> None:
    """Refuse to label more of ``run`` when its dataset is not the one it started on: after a re-prepare a
    user index may mean another person, and the labels would go to the wrong users."""
    if not run.dataset_fingerprint:  # a run made without one (tests, old versions): nothing to compare
        return
    current = dataset_fingerprint(settings, run.dataset)
    if current != run.dataset_fingerprint:
        raise DatasetChanged(
            f"run {run.id}: dataset {run.dataset!r} changed since the run started (fingerprint "
            f"{run.dataset_fingerprint} then, {current} now): its user indices may mean other people now. "
            f"Start a new run on the new data (`coldlabel label start --dataset {run.dataset}`), or put the "
            f"original inputs back and re-run `coldlabel data prepare --dataset {run.dataset}` to resume this one")


def dataset_users(settings: Settings, dataset: str, limit: int | None = None,
                  only: Sequence[int] | None = None) -> list[tuple[int, str]]:
    """(user_idx, user_id) of the users with a training history, by index (``CandidateSpace.users()``):
    ``limit`` of them, or those of ``only`` (a user without a history is refused by name). Which ``limit``
    users follows ``labeler.user_order``: the first by index (= first appearance in time: the earliest
    users, who rarely come back), or the most recently active, the ones whose future a label can change."""
    ws = Workspace.of(settings.data.root, dataset)
    ids = ws.user_ids
    users = sorted(u for u, seq in ws.sequences.items() if seq)
    if only is not None:
        labelable = set(users)
        missing = [u for u in only if u not in labelable]
        if missing:
            raise RunError(f"dataset {dataset!r}: user(s) {missing[:5]} have no training history to label")
        users = sorted(set(only))
    if limit is not None:
        if settings.labeler.user_order == "recent" and only is None:
            last: dict[int, int] = {}
            for r in ws.train:
                last[r.user_idx] = max(last.get(r.user_idx, 0), r.ts)
            users = sorted(users, key=lambda u: (-last.get(u, 0), u))
        users = sorted(users[:limit])
    return [(u, ids[u]) for u in users]


def add_users(store: Store, settings: Settings, run_id: str, users: Sequence[int]) -> int:
    """Add users to an existing run (``label user`` on a new user); returns how many were new."""
    run = store.get_run(run_id)
    return store.add_users(run_id, dataset_users(settings, run.dataset, only=users))


def prompt_version(settings: Settings) -> str:
    return version_tag(settings.labeler.prompt_version)


# ---- lifecycle ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Enqueued:
    run_id: str
    users: list[int]
    in_flight: list[int]  # users found 'running': a live claim finishes them, an expired one is reaped


def start_run(store: Store, settings: Settings, dataset: str, *, users: int | None = None,
              only: Sequence[int] | None = None, endpoint: str | None = None, name: str = "",
              run_id: str | None = None) -> Run:
    """Create a run (config, model, prompt version, dataset fingerprint) and register its users."""
    endpoint = endpoint or settings.labeler.endpoint
    ep = settings.endpoint(endpoint)  # ConfigError naming the known endpoints
    fingerprint = dataset_fingerprint(settings, dataset)
    # The retrieval artefacts every user needs: missing or stale, refuse now rather than dead-letter everyone.
    artefacts.check_current(Workspace.of(settings.data.root, dataset), settings, "index", "leaves")
    builtin.check(settings, endpoint, dataset)  # the oracle on a dataset without planted truth: refused now
    chosen = dataset_users(settings, dataset, users, only)
    if not chosen:
        raise RunError(f"dataset {dataset!r} has no user with a training history to label")
    config = settings.model_dump(exclude={"endpoints", "store", "workers"})
    config["labeler"]["endpoint"] = endpoint
    config["endpoint"] = ep.model_dump()  # url, model, dialect, limits; the key's env var name only
    run = store.create_run(dataset=dataset, endpoint=endpoint, model=ep.model, prompt_version=prompt_version(settings),
                           config=config, name=name, dataset_fingerprint=fingerprint, run_id=run_id)
    store.add_users(run.id, chosen)
    return run


def prepare_resume(store: Store, settings: Settings, run_id: str, *, endpoint: str | None = None,
                   retry_dead: bool = True) -> Enqueued:
    """Make the run active again (switching endpoint if asked) and list the users still to label. Refused
    (:class:`DatasetChanged`) when the dataset changed since the run started."""
    run = store.get_run(run_id)
    check_dataset(settings, run)
    if endpoint and endpoint != run.endpoint:
        ep = settings.endpoint(endpoint)
        builtin.check(settings, endpoint, run.dataset)
        store.record_endpoint_switch(run_id, endpoint, ep.model, reason="label resume --endpoint")
    if run.status != "active" or run.status_reason:
        store.set_run_status(run_id, "active")
    by_status = store.users_by_status(run_id)
    if retry_dead:
        for user_idx in by_status["dead"]:  # back to claimable ('failed'), the last error kept for status
            store.fail_user(run_id, user_idx, store.get_user(run_id, user_idx).last_error or "dead-lettered",
                            dead=False)
    todo = store.incomplete_users(run_id, include_dead=retry_dead)
    running = set(by_status["running"])
    enq = Enqueued(run_id, todo, [u for u in todo if u in running])
    if not todo:
        settle_run(store, run_id, run_max_fallback_share(run))
    return enq


def run_max_fallback_share(run: Run) -> float:
    """The run's own ``labeler.max_fallback_share`` (as recorded when it started), else the default."""
    value = (run.config.get("labeler") or {}).get("max_fallback_share")
    return float(value) if value is not None else Settings().labeler.max_fallback_share


def settle_run(store: Store, run_id: str, max_fallback_share: float) -> str | None:
    """When no user of an active run is left to label (all done or dead), decide how it ended and record
    it: ``failed`` (nobody labeled), ``degraded`` (dead users, or a fallback share above the limit) or
    ``done``. Returns the new status, or None when users remain or the run is not active."""
    counts = store.run_progress(run_id)
    if counts.remaining:
        return None
    dead, done, total = counts.by_status["dead"], counts.done, counts.total
    stages = store.stage_summary(run_id)
    answers = sum(s["answers"] for s in stages.values())
    share = sum(s["fallbacks"] for s in stages.values()) / answers if answers else 0.0
    hint = f"see `coldlabel label status {run_id}`"
    if total and not done:
        status, reason = "failed", f"all {dead} users were dead-lettered; {hint}, fix the cause, then " \
                                   f"`coldlabel label resume {run_id}`"
    elif dead:
        status, reason = "degraded", f"{dead} of {total} users were dead-lettered; {hint}; " \
                                     f"`coldlabel label resume {run_id}` retries them"
    elif share > max_fallback_share:
        status, reason = "degraded", f"{share:.0%} of stage answers fell back (above labeler.max_fallback_share " \
                                     f"= {max_fallback_share:.0%}): the labels are mostly Two-Tower order, not the " \
                                     f"model's judgement; check the endpoint's answers (`coldlabel llm check`)"
    else:
        status, reason = "done", None
    return status if store.end_run(run_id, status, reason) else None


def cancel_run(store: Store, run_id: str) -> None:
    """Tasks of a cancelled run return without an LLM call (their claim fails); resume re-activates it."""
    store.get_run(run_id)
    store.set_run_status(run_id, "cancelled")


# ---- status ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStatus:
    run: Run
    progress: RunProgress
    stages: int          # stage results stored
    fallback_stages: int
    errors: list[tuple[int, str, str]]  # (user_idx, status, last_error) of failed/dead users, a few

    @property
    def counts(self) -> dict[str, int]:
        return self.progress.by_status

    @property
    def fallback_rate(self) -> float | None:
        return self.fallback_stages / self.stages if self.stages else None

    @property
    def max_fallback_share(self) -> float:
        return run_max_fallback_share(self.run)

    @property
    def warnings(self) -> list[str]:
        """What is wrong with the run's health right now (empty when nothing is)."""
        out = []
        rate = self.fallback_rate
        if rate is not None and rate > self.max_fallback_share:
            out.append(f"{rate:.0%} of stage answers fell back, above labeler.max_fallback_share "
                       f"{self.max_fallback_share:.0%}: the run will end 'degraded' unless this improves")
        if self.counts["dead"]:
            out.append(f"{self.counts['dead']} user(s) dead-lettered: `coldlabel label resume {self.run.id}` "
                       "retries them")
        if self.progress.stalled:
            out.append(f"{self.progress.stalled} claim(s) expired (their worker stopped): they are re-enqueued "
                       "within workers.reap_interval_s by any running worker")
        return out

    @property
    def tokens_per_s(self) -> float | None:
        p = self.progress
        if not (p.first_started_at and p.last_finished_at) or p.last_finished_at <= p.first_started_at:
            return None
        seconds = (p.last_finished_at - p.first_started_at).total_seconds()
        return (p.totals.prompt_tokens + p.totals.completion_tokens) / seconds


def run_status(store: Store, run_id: str, max_errors: int = 5) -> RunStatus:
    run = store.get_run(run_id)
    summary = store.stage_summary(run_id)
    return RunStatus(run, store.run_progress(run_id), sum(s["answers"] for s in summary.values()),
                     sum(s["fallbacks"] for s in summary.values()), store.user_errors(run_id, max_errors))


# ---- export ---------------------------------------------------------------------------------------

EDGE_COLUMNS = ("user", "user_idx", "item", "item_idx", "weight", "score", "subcategory", "from_fallback")
TRIPLET_COLUMNS = ("user", "user_idx", "pos_item", "pos_idx", "neg_item", "neg_idx", "weight", "from_fallback")


def export_run(store: Store, run_id: str, out_dir: Path) -> dict[str, int]:
    """Write edges.tsv, triplets.tsv and run.json (the run's record) under ``out_dir``; returns row counts."""
    run = store.get_run(run_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"edges": 0, "triplets": 0}
    with open(out_dir / "edges.tsv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(EDGE_COLUMNS)
        for e in store.export_edges(run_id):
            writer.writerow((e.user_id, e.user_idx, e.item_id, e.item_idx, f"{e.weight:.6g}",
                             "" if e.score is None else f"{e.score:.6g}", e.subcategory, int(e.from_fallback)))
            counts["edges"] += 1
    with open(out_dir / "triplets.tsv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(TRIPLET_COLUMNS)
        for t in store.export_triplets(run_id):
            writer.writerow((t.user_id, t.user_idx, t.pos_id, t.pos_idx, t.neg_id, t.neg_idx, f"{t.weight:.6g}",
                             int(t.from_fallback)))
            counts["triplets"] += 1
    progress = store.run_progress(run_id)
    record = {"id": run.id, "name": run.name, "dataset": run.dataset, "dataset_fingerprint": run.dataset_fingerprint,
              "endpoint": run.endpoint, "model": run.model, "prompt_version": run.prompt_version,
              "status": run.status, "endpoint_switches": run.endpoint_switches, "users": progress.by_status,
              "config": run.config, **counts}
    (out_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))
    return counts
