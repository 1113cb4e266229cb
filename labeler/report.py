"""A labeling run as a report a person reads: Markdown (+ the same as HTML) with a few plots.

What it answers, in order: did the run finish and what did it cost; how often did each stage need its
retry or fallback; what signal did it produce (edges, triplets, how much of it lands on items that have
no training interactions — the point of the exercise — and how much on items whose catalog text was
flagged as instruction-like at prepare time, under which ``labeler.flagged_items`` policy); and, as
*evaluation only*, how the labels compare with the held-out test interactions and, for synthetic data, with
the planted tastes (label precision: the share of edges on the user's planted taste leaves, the measure the
oracle labeler's ``labeler.oracle_precision`` aims at) — beside what the Two-Tower alone would have picked
for the same users. A run of a builtin labeler (``labeler/builtin.py``) is worded as one: no LLM was asked.
"""
from __future__ import annotations

import html
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # plots go to files, never to a window
import matplotlib.pyplot as plt  # noqa: E402

from coldlabel.data.workspace import Workspace
from coldlabel.store import LABEL_STAGES, Run, Store
from labeler import builtin
from labeler.builtin import Planted
from retrieval.index import CandidateIndex

PLOTS = ("stages.png", "weights.png", "coverage.png")


@dataclass
class LabelEval:
    """Agreement of a set of (user, item) picks with held-out signals."""
    picks: int
    test_hits: int
    taste_hits: int | None  # None when the dataset has no truth file

    def rate(self, hits: int | None) -> str:
        return "—" if hits is None or not self.picks else f"{100 * hits / self.picks:.1f}%"


def _evaluate(ws: Workspace, picks: dict[int, list[int]], truth: Planted | None) -> LabelEval:
    test_pos = {(x.user_idx, x.item_idx) for x in ws.test if x.weight > 0}
    user_ids = ws.user_ids
    n = hits = taste = 0
    for user, items in picks.items():
        for item in items:
            n += 1
            hits += (user, item) in test_pos
            if truth:
                taste += truth.on_taste(user_ids[user], ws.items[item].asin)
    return LabelEval(n, hits, taste if truth else None)


@dataclass(frozen=True)
class Labeler:
    """Who answered the run, in the report's words: an LLM, or a builtin labeler (and its knobs)."""
    builtin: str  # "" for an LLM endpoint, else random | two_tower | oracle
    knobs: str    # e.g. "p = 0.9, seed 0"

    @property
    def edges(self) -> str:
        return f"`{self.builtin}` edges (builtin)" if self.builtin else "LLM edges"


def _labeler(run: Run, settings, labeler: dict) -> Labeler:
    ep = settings.endpoints.get(run.endpoint)
    recorded = run.config.get("endpoint") or {}
    dialect = ep.dialect if ep is not None else recorded.get("dialect")
    if dialect != builtin.DIALECT:
        return Labeler("", "")
    kind = ep.model if ep is not None else run.model
    knobs = f"p = {labeler['oracle_precision']:g}, " if kind == "oracle" else ""
    return Labeler(kind, knobs + f"seed {labeler['seed']}")


def _two_tower_picks(ws: Workspace, settings, per_user: dict[int, int]) -> dict[int, list[int]]:
    """The Two-Tower's own top-n for each labeled user (n = that user's number of edges): the baseline."""
    index = CandidateIndex.load(ws, settings)
    users = sorted(per_user)
    if not users:
        return {}
    ids, _ = index.search(users, max(per_user.values()))
    return {u: [i for i in row.tolist() if i >= 0][: per_user[u]] for u, row in zip(users, ids)}


def _plots(out: Path, stages: dict, weights: list[float], fallback_weights: list[float],
           new_share: tuple[float, float]) -> None:
    names = [s for s in LABEL_STAGES if s in stages]
    fig, ax = plt.subplots(figsize=(6, 3))
    rates = [100 * stages[s]["fallbacks"] / max(stages[s]["answers"], 1) for s in names]
    bars = ax.bar(names, rates, color="#c0504d")
    ax.bar_label(bars, fmt="%.0f%%")
    ax.set_ylabel("answers that fell back (%)")
    ax.set_ylim(0, max(rates + [10]) * 1.2)
    ax.set_title("Fallback rate per stage")
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist([weights, fallback_weights], bins=10, range=(0, 1), stacked=True,
            label=["from the stage-5 ranking", "from a fallback"], color=["#4f81bd", "#bbbbbb"])
    ax.set_xlabel("pseudo-edge weight (score / score_scale)")
    ax.set_ylabel("edges")
    ax.legend()
    ax.set_title("Pseudo-edge weights")
    fig.tight_layout()
    fig.savefig(out / "weights.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 2.6))
    catalog, edges = new_share
    bars = ax.barh(["catalog", "labeled edges"], [100 * catalog, 100 * edges], color=["#bbbbbb", "#9bbb59"])
    ax.bar_label(bars, fmt="%.1f%%")
    ax.set_xlabel("share on items with no training interactions (%)")
    ax.set_title("Signal for new items")
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=110)
    plt.close(fig)


def write_report(store: Store, run_id: str, settings, out: Path) -> Path:
    """Write ``report.md``, ``report.html`` and the plots into ``out``; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    run = store.get_run(run_id)
    ws = Workspace.of(settings.data.root, run.dataset)
    progress = store.run_progress(run_id)
    stages = store.stage_summary(run_id)
    edges = list(store.export_edges(run_id))
    triplets = list(store.export_triplets(run_id))
    cold_items = ws.cold_items
    per_user: dict[int, list[int]] = defaultdict(list)
    for e in edges:
        per_user[e.user_idx].append(e.item_idx)
    on_new = sum(e.item_idx in cold_items for e in edges)
    flagged_items = {it.idx for it in ws.items if it.flagged}
    on_flagged = [e for e in edges if e.item_idx in flagged_items]
    labeler = {**settings.labeler.model_dump(), **(run.config.get("labeler") or {})}  # what the run used
    who = _labeler(run, settings, labeler)
    policy = labeler["flagged_items"] + (f" (x{labeler['flagged_weight']:g})"
                                         if labeler["flagged_items"] == "downweight" else "")
    new_share = (len(cold_items) / max(len(ws.items), 1), on_new / max(len(edges), 1))
    _plots(out, stages, [e.weight for e in edges if not e.from_fallback],
           [e.weight for e in edges if e.from_fallback], new_share)

    truth = planted_truth(ws)
    llm_eval = _evaluate(ws, per_user, truth)
    tt_eval = _evaluate(ws, _two_tower_picks(ws, settings, {u: len(v) for u, v in per_user.items()}), truth)
    t = progress.totals
    calls = t.llm_calls + t.cache_hits
    if who.builtin:
        answered_by = (f"Builtin labeler `{who.builtin}` (endpoint `{run.endpoint}`; no LLM; {who.knobs}) · "
                       f"prompt version `{run.prompt_version}` · status **{run.status}**")
        note = ("(A builtin labeler is a measuring instrument, not a model: `random` is the floor, `two_tower` the "
                "retriever alone, `oracle` picks on the planted taste with probability p, so its planted-taste "
                "share should sit near p. Planted tastes exist only for synthetic datasets.)")
    else:
        answered_by = (f"Endpoint `{run.endpoint}` · model `{run.model}` · prompt version `{run.prompt_version}` · "
                       f"status **{run.status}**")
        note = ("(Planted tastes exist only for synthetic datasets. A small model such as SmolLM2-135M is not "
                "expected to beat the retriever; the table is how you find out whether yours does.)")
    lines = [
        f"# Labeling run `{run.id}` on `{run.dataset}`",
        "",
        answered_by,
        "",
        "## Progress and cost",
        "",
        f"| users | done | failed | dead | pending/running | {'builtin answers' if who.builtin else 'LLM calls'} "
        "| cache hits | prompt tokens | completion tokens |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {progress.total} | {progress.done} | {progress.by_status['failed']} | {progress.by_status['dead']} | "
        f"{progress.by_status['pending'] + progress.by_status['running']} | {t.llm_calls} | {t.cache_hits} | "
        f"{t.prompt_tokens:,} | {t.completion_tokens:,} |",
        "",
        "## Stages",
        "",
        "| stage | answers | fell back | invented ids dropped |",
        "|---|---|---|---|",
        *[f"| {s} | {stages[s]['answers']} | {stages[s]['fallbacks']} "
          f"({100 * stages[s]['fallbacks'] / max(stages[s]['answers'], 1):.0f}%) | {stages[s]['invalid_ids']} |"
          for s in LABEL_STAGES if s in stages],
        "",
        f"Invented ids per call: {sum(v['invalid_ids'] for v in stages.values()) / max(calls, 1):.2f}.",
        "",
        "![fallback rate per stage](stages.png)",
        "",
        "## Labels",
        "",
        f"- **{len(edges)} pseudo edges** for {len(per_user)} users "
        f"({len(edges) / max(len(per_user), 1):.1f} per user; "
        f"{sum(e.from_fallback for e in edges)} from fallbacks, kept at a small weight)",
        f"- **{len(triplets)} triplets** ({len(triplets) / max(progress.done, 1):.1f} per labeled user)",
        f"- **{100 * new_share[1]:.1f}% of edges land on cold items** "
        f"({len({e.item_idx for e in edges} & cold_items)} distinct cold items), against "
        f"{100 * new_share[0]:.1f}% of the catalog. A cold item is one that appears in the test split and "
        "never in the training split, at any rating (`Workspace.cold_items`, the one definition coldlabel uses).",
        f"- **{100 * len(on_flagged) / max(len(edges), 1):.1f}% of edges land on flagged items** "
        f"({len(on_flagged)} edges on {len({e.item_idx for e in on_flagged})} of the {len(flagged_items)} items "
        f"whose catalog text reads like an instruction to a model; policy `{policy}`, "
        f"summed weight {sum(e.weight for e in on_flagged):.2f}).",
        "",
        "![edge weights](weights.png)",
        "",
        "![signal for new items](coverage.png)",
        "",
        "## Evaluation only (held-out data; never read by the labeler)",
        "",
        "Each labeled user's edges beside the Two-Tower's own top picks, the same number per user:",
        "",
        "| picks | count | in the user's test interactions | in the user's planted taste leaves |",
        "|---|---|---|---|",
        f"| {who.edges} | {llm_eval.picks} | {llm_eval.rate(llm_eval.test_hits)} | "
        f"{llm_eval.rate(llm_eval.taste_hits)} |",
        f"| Two-Tower top-n | {tt_eval.picks} | {tt_eval.rate(tt_eval.test_hits)} | {tt_eval.rate(tt_eval.taste_hits)} |",
        "",
        note,
    ]
    md = "\n".join(lines) + "\n"
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(md, run.id))
    return out / "report.md"


def _html(md: str, title: str) -> str:
    """A dependency-free rendering: headings, tables, lists, images; enough for a browser."""
    body, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}">')
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:52em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.3em .6em}img{max-width:100%}")
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{style}</style>\n"
            + "\n".join(body) + "\n")


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


# ---- a run's label figures for other reports (the experiment report of trainer/report.py) ------------

@dataclass
class RunLabelStats:
    """A run's labels in numbers, with their agreement with held-out data beside the Two-Tower's own picks."""
    run_id: str
    endpoint: str
    model: str
    status: str
    users_done: int
    users_with_edges: int
    edges: int
    triplets: int
    edges_on_cold: int
    edges_from_fallback: int
    labels: LabelEval          # the run's pseudo edges
    two_tower: LabelEval       # the Two-Tower's top-n for the same users, n = that user's number of edges

    @property
    def taste_precision(self) -> float | None:
        """Share of the run's edges inside the user's planted taste leaves (synthetic data only)."""
        e = self.labels
        return None if e.taste_hits is None or not e.picks else e.taste_hits / e.picks


def planted_truth(ws: Workspace) -> Planted | None:
    """The synthetic dataset's planted tastes (``truth/truth.json.gz``, read once per process); None for real
    data. The one "on taste" test (``Planted.on_taste``) of the run report, this and the oracle labeler."""
    return builtin.planted(ws) if ws.has_truth else None


def run_label_stats(store: Store, run_id: str, settings) -> RunLabelStats:
    """The numbers :func:`write_report` shows for a run's labels, without writing anything."""
    run = store.get_run(run_id)
    ws = Workspace.of(settings.data.root, run.dataset)
    edges = list(store.export_edges(run_id))
    per_user: dict[int, list[int]] = defaultdict(list)
    for e in edges:
        per_user[e.user_idx].append(e.item_idx)
    truth = planted_truth(ws)
    cold = ws.cold_items
    return RunLabelStats(
        run.id, run.endpoint, run.model, run.status, store.run_progress(run_id).done, len(per_user), len(edges),
        sum(1 for _ in store.export_triplets(run_id)), sum(e.item_idx in cold for e in edges),
        sum(e.from_fallback for e in edges), _evaluate(ws, per_user, truth),
        _evaluate(ws, _two_tower_picks(ws, settings, {u: len(v) for u, v in per_user.items()}), truth))


def html_page(md: str, title: str) -> str:
    """The HTML rendering :func:`write_report` uses (headings, tables, lists, images), for other reports."""
    return _html(md, title)
