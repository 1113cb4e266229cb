"""The five-stage labeling of one user (thesis §4.3), resumable stage by stage.

    profile ─▶ categories ─▶ subcategories ─▶ items (one call per subcategory, concurrently) ─▶ rerank
                                                                                           │
                                         pseudo edges (u, i, w) + triplets (u, pos, neg, w) ◀┘

Every stage is: build the prompt (static part first, for prefix caching) → ask (cached) → parse onto the
allowed set → if unusable, one format retry → if still unusable, the stage's fallback, recorded as such.
Each finished stage is written to SQL, so a crashed or redelivered task continues from the last finished
stage; the request cache makes even a recomputed stage free. Stored stages parsed by an older parser
version are parsed again from the cached raw answers, without a single new call.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from coldlabel.config import Settings
from coldlabel.data.workspace import PATH_SEP, Workspace, subcategory_name
from coldlabel.store import Edge, Store, Triplet, UserCounters
from labeler import builtin, extract, prompts
from labeler.builtin import Answerer
from labeler.client import Completion, LLMClient
from labeler.parsing import PARSER_VERSION, ParseResult, rank_scores
from labeler.prompts import CandidateView, ItemRef, Prompt, UserView
from retrieval.evidence import render
from retrieval.space import CandidateItem, CandidateSpace, UserSpace

log = logging.getLogger("coldlabel.pipeline")


@dataclass
class StageReport:
    """What one stage call produced, for `label user` and the audit trail."""
    stage: str
    part: str
    values: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    invalid: int = 0
    fallback: bool = False
    reason: str = ""
    calls: int = 0          # HTTP requests made (0 when cached or resumed)
    resumed: bool = False   # taken from a stored stage result
    profile: dict | None = None  # stage 1 only


@dataclass
class UserOutcome:
    user_idx: int
    user_id: str
    edges: list[Edge] = field(default_factory=list)
    triplets: list[Triplet] = field(default_factory=list)
    counters: UserCounters = field(default_factory=UserCounters)
    stages: list[StageReport] = field(default_factory=list)


@dataclass
class LabelContext:
    settings: Settings
    store: Store
    space: CandidateSpace
    client: Answerer        # the LLM client, or a builtin labeler (labeler/builtin.py)
    endpoint: str


_SPACES: dict[tuple[str, str], CandidateSpace] = {}


def load_space(settings: Settings, dataset: str) -> CandidateSpace:
    """One candidate space per process and dataset (loading vectors and indexes is the slow part)."""
    ws = Workspace.of(settings.data.root, dataset)
    key = (str(ws.root.resolve()), settings.fingerprint("data", "retrieval", "labeler"))
    if key not in _SPACES:
        _SPACES[key] = CandidateSpace.load(ws, settings)
    return _SPACES[key]


def open_context(settings: Settings, dataset: str, endpoint: str | None = None, *,
                 store: Store | None = None, slot: Callable | None = None) -> LabelContext:
    """Everything ``label_user`` needs. The client belongs to the event loop it is first used in."""
    name = endpoint or settings.labeler.endpoint
    store = store or Store(settings.store_url())
    client = (builtin.answerer(settings, name, dataset) if builtin.is_builtin(settings, name)
              else LLMClient.from_settings(settings, name, cache=store, slot=slot))
    return LabelContext(settings, store, load_space(settings, dataset), client, name)


# ---- one stage ------------------------------------------------------------------------------------

class _Tally:
    """Counters of one user's labeling, summed over its calls."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {k: 0 for k in UserCounters.names()}

    def call(self, c: Completion) -> None:
        self.values["cache_hits" if c.cache_hit else "llm_calls"] += 1
        if not c.cache_hit:
            self.values["prompt_tokens"] += c.prompt_tokens
            self.values["completion_tokens"] += c.completion_tokens
            self.values["latency_ms"] += c.latency_ms

    def counters(self) -> UserCounters:
        v = self.values
        return UserCounters(**{k: (float(x) if k == "latency_ms" else int(x)) for k, x in v.items()})


async def _ask(ctx: LabelContext, prompt: Prompt, tally: _Tally,
               cache_writes: list[dict]) -> tuple[ParseResult, list[str], str, int]:
    """Ask, parse, and (once) ask again when the answer is unusable.

    Returns (result, cache keys of the calls, why, HTTP calls made); ``result.usable`` is False when every
    try was unusable, and the caller falls back. The usable answer's cache row goes to ``cache_writes``,
    for the caller to store with the stage (one transaction).

    A retry is triggered only by the answer's form (no JSON, nothing allowed left, cut off by max_tokens),
    never by its content compared with any ground truth.
    """
    s = ctx.settings.labeler
    version = prompts.version_tag(s.prompt_version)
    messages, keys, invalid, calls, reason = prompt.messages, [], 0, 0, ""

    parsed: dict[str, ParseResult] = {}  # the client's usability check and this loop parse each text once

    def parse(text: str) -> ParseResult:
        if text not in parsed:
            parsed[text] = prompt.parse(text, score_scale=s.score_scale)
        return parsed[text]

    def usable(text: str) -> bool:  # only answers this parser can use are cached (and are cache hits)
        return parse(text).usable

    for attempt in range(1 + s.format_retries):
        completion = await ctx.client.complete_prompt(prompt, messages=messages, prompt_version=version,
                                                      validate=usable, cache_writes=cache_writes)
        tally.call(completion)
        keys.append(completion.key)
        calls += 0 if completion.cache_hit else 1
        result = replace(parse(completion.text))
        if completion.truncated:  # its last value is a fragment, not an invention: not counted
            reason = "cut off at max_tokens"
        elif not result.usable:
            invalid += result.invalid_count
            reason = result.reason or "unusable"
        else:
            result.invalid_count += invalid
            return result, keys, "ok" if attempt == 0 else f"ok after retry ({reason})", calls
        messages = prompts.retry_messages(prompt, completion.text, reason)
    return ParseResult(values=[], invalid_count=invalid, reason=reason), keys, reason, calls


def _resumable(stored: dict, stage: str, part: str) -> bool:
    """Is this stage's stored outcome the one to use (parsed by this parser version)?"""
    previous = stored.get((stage, part))
    return previous is not None and previous.parser_version == PARSER_VERSION


async def _stage(ctx: LabelContext, run_id: str, user_idx: int, stored: dict, tally: _Tally,
                 stage: str, part: str, prompt: Prompt, fallback: Callable[[], tuple[list[str], dict]],
                 ) -> StageReport:
    """Run (or resume) one stage and store its outcome: values (+scores), fallback flag, invalid count."""
    if _resumable(stored, stage, part):
        previous = stored[(stage, part)]
        out = previous.output
        if previous.used_fallback:
            tally.values["fallbacks"] += 1
        tally.values["invalid_ids"] += previous.invalid_count
        return StageReport(stage, part, out["values"], out.get("scores", {}), previous.invalid_count,
                           previous.used_fallback, out.get("reason", ""), 0, resumed=True,
                           profile=out.get("profile"))
    cache_writes: list[dict] = []
    result, keys, reason, calls = await _ask(ctx, prompt, tally, cache_writes)
    used_fallback = not result.usable
    if used_fallback:
        values, scores = fallback()
        reason = f"fallback: {reason}"
        tally.values["fallbacks"] += 1
    else:
        values, scores = result.values, result.scores
    output: dict[str, Any] = {"values": values, "scores": scores, "reason": reason}
    if stage == "profile":
        output["profile"] = result.profile if result.usable else None
    tally.values["invalid_ids"] += result.invalid_count
    ctx.store.save_stage(run_id, user_idx, stage, output, part=part, parser_version=PARSER_VERSION,
                         call_keys=keys, used_fallback=used_fallback, invalid_count=result.invalid_count,
                         calls=cache_writes)
    return StageReport(stage, part, values, scores, result.invalid_count, used_fallback, reason, calls,
                       profile=output.get("profile"))


# ---- the five stages --------------------------------------------------------------------------------

def _view(c: CandidateItem) -> CandidateView:
    return CandidateView(id=c.asin, title=c.title, category_path=PATH_SEP.join(c.category_path),
                         evidence=tuple(ItemRef(it.asin, render(it)) for it in c.similar), brand=c.brand)


def _shown_order(items: list, user_id: str, part: str, shuffle: bool) -> list:
    """The order candidates are shown in. LLMs favour list positions (anchors A2: LLMRank shuffles), so the
    display order is shuffled, seeded by user and subcategory: the same prompt every time, hence cacheable.
    Fallbacks keep the Two-Tower order."""
    if not shuffle:
        return list(items)
    seed = int(hashlib.sha256(f"{user_id}|{part}".encode()).hexdigest()[:16], 16)
    shown = list(items)
    random.Random(seed).shuffle(shown)
    return shown


def _profile_fallback(space: UserSpace) -> dict:
    """A profile written from the history alone, when the model gives none. It names the last three history
    items by their handles (``h18``): the history block right above it already spells them out."""
    cats = list(dict.fromkeys(PATH_SEP.join(it.category_path[:2]) for it in reversed(space.history)))
    n = len(space.history)
    return {"profile": "Recently bought: " + ", ".join(f"h{i}" for i in range(max(1, n - 2), n + 1)),
            "keywords": [], "preferred_categories": [c for c in cats if c in space.categories][:3]}


def _best_score(space: UserSpace, subs: list[str]) -> float:
    return max((c.score for s in subs for c in space.candidates.get(s, ())), default=float("-inf"))


def _labels(user_id: str, rerank: StageReport, by_asin: dict[str, tuple[CandidateItem, str]],
            profile: dict | None, s) -> tuple[list[Edge], list[Triplet]]:
    """Stage-5 ranking → (asin, score, keywords, subcat) tuples → stored edges and triplets (§4.3.3);
    flagged items follow ``labeler.flagged_items`` (``extract`` says how)."""
    values = [a for a in rerank.values if a in by_asin]
    scores = {a: rerank.scores.get(a) for a in values}
    if any(v is None for v in scores.values()):  # no score given: derive it from the rank
        scores = dict(zip(values, rank_scores(len(values), s.score_scale)))
    keywords = [str(k) for k in (profile or {}).get("keywords") or ()]
    ranking = extract.to_ranking(values, scores, subcat_of={a: by_asin[a][1] for a in values}, keywords=keywords)
    labels = extract.extract(user_id, ranking, min_score=s.min_score, score_scale=s.score_scale,
                             max_triplets=s.max_triplets, fallback=rerank.fallback, fallback_weight=s.fallback_weight,
                             flagged={a for a in values if by_asin[a][0].flagged}, flagged_policy=s.flagged_items,
                             flagged_weight=s.flagged_weight)
    edges = [Edge(item_idx=by_asin[e.item][0].item_idx, item_id=e.item, weight=e.weight,
                  score=scores[e.item], subcategory=by_asin[e.item][1], from_fallback=rerank.fallback)
             for e in labels.edges]
    triplets = [Triplet(pos_idx=by_asin[t.pos][0].item_idx, neg_idx=by_asin[t.neg][0].item_idx, pos_id=t.pos,
                        neg_id=t.neg, weight=t.weight, from_fallback=rerank.fallback)
                for t in labels.triplets]
    return edges, triplets


async def _all_or_nothing(coros: list) -> list:
    """Run concurrently; when one fails, cancel the rest before raising, so no orphaned call of this user
    wakes up later inside the next user's event-loop run."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def label_user(ctx: LabelContext, run_id: str, user_idx: int) -> UserOutcome:
    """Label one user end to end and save the resulting edges and triplets (idempotent)."""
    s = ctx.settings.labeler
    space = ctx.space.for_user(user_idx)
    ctx = replace(ctx, client=builtin.for_user(ctx.client, space))
    stored = ctx.store.load_stages(run_id, user_idx)
    tally = _Tally()
    reports: list[StageReport] = []
    user = UserView(space.user_id, tuple(it.text for it in space.history),
                    history_ids=tuple(it.asin for it in space.history))
    constrained = s.constrained
    levels = tuple(ctx.settings.data.subcategory_levels)

    # Stage 1: profile.
    r = await _stage(ctx, run_id, user_idx, stored, tally, "profile", "",
                     prompts.profile_prompt(user, space.categories, constrained=constrained),
                     lambda: ([], {}))
    user = replace(user, profile=r.profile or _profile_fallback(space))
    reports.append(r)

    # Stage 2: categories, fallback = the categories holding the best Two-Tower candidates.
    by_tt = sorted(space.categories, key=lambda c: -_best_score(space, list(space.subcategories.get(c, ()))))
    r = await _stage(ctx, run_id, user_idx, stored, tally, "categories", "",
                     prompts.categories_prompt(user, space.categories, s.top_k_categories, constrained=constrained),
                     lambda: (by_tt[: s.top_k_categories], {}))
    reports.append(r)
    chosen_categories = r.values

    # Stage 3: subcategories under the chosen categories, fallback = Two-Tower order.
    allowed_subs = [sub for c in chosen_categories for sub in space.subcategories.get(c, ())]
    subs_by_tt = sorted(allowed_subs, key=lambda sub: -_best_score(space, [sub]))
    names = {sub: subcategory_name(sub, levels) for sub in allowed_subs}
    r = await _stage(ctx, run_id, user_idx, stored, tally, "subcategories", "",
                     prompts.subcategories_prompt(user, allowed_subs, s.top_k_subcategories, names=names,
                                                  constrained=constrained),
                     lambda: (subs_by_tt[: s.top_k_subcategories], {}))
    reports.append(r)
    chosen_subs = [sub for sub in r.values if space.candidates.get(sub)]

    # Stage 4: items inside each chosen subcategory, all subcategories at once: prompts built first, their
    # cache rows looked up in one query, then asked concurrently.
    def stage4_prompt(sub: str) -> tuple[Prompt, Callable[[], tuple[list[str], dict]]]:
        cands = space.candidates[sub][: s.max_candidates_per_subcategory]
        ctx.space.evidence.prefetch(c.item_idx for c in cands)  # one batched search for what is shown
        k = min(s.items_per_subcategory, len(cands))
        shown = _shown_order(list(cands), space.user_id, sub, s.shuffle_candidates)
        prompt = prompts.items_prompt(user, names.get(sub, sub), [_view(c) for c in shown], k,
                                      constrained=constrained, evidence_k=ctx.settings.retrieval.evidence_k)
        return prompt, lambda: ([c.asin for c in cands[:k]], {})

    item_prompts = {sub: stage4_prompt(sub) for sub in chosen_subs}
    to_ask = [p for sub, (p, _) in item_prompts.items() if not _resumable(stored, "items", sub)]
    await ctx.client.prefetch_prompts(to_ask, prompt_version=prompts.version_tag(s.prompt_version))
    item_reports = await _all_or_nothing([_stage(ctx, run_id, user_idx, stored, tally, "items", sub, prompt, fallback)
                                          for sub, (prompt, fallback) in item_prompts.items()])
    reports.extend(item_reports)

    # Stage 5: global rerank over the merged preselection, fallback = the flattened preselection.
    by_asin: dict[str, tuple[CandidateItem, str]] = {}
    for sub, rep in zip(chosen_subs, item_reports):
        cands = {c.asin: c for c in space.candidates[sub]}
        for asin in rep.values:
            if asin in cands and asin not in by_asin:
                by_asin[asin] = (cands[asin], sub)
    preselection = list(by_asin)
    final_k = min(s.final_top_k, len(preselection))
    outcome = UserOutcome(user_idx, space.user_id)
    if preselection:
        def flattened() -> tuple[list[str], dict]:
            top = preselection[:final_k]
            return top, dict(zip(top, rank_scores(len(top), s.score_scale)))

        shown = _shown_order(preselection, space.user_id, "rerank", s.shuffle_candidates)
        prompt = prompts.rerank_prompt(user, [_view(by_asin[a][0]) for a in shown], final_k,
                                       score_scale=s.score_scale, constrained=constrained)
        r = await _stage(ctx, run_id, user_idx, stored, tally, "rerank", "", prompt, flattened)
        reports.append(r)
        outcome.edges, outcome.triplets = _labels(space.user_id, r, by_asin, user.profile, s)
    ctx.store.save_labels(run_id, user_idx, outcome.edges, outcome.triplets)
    outcome.counters = tally.counters()
    outcome.stages = reports
    return outcome
