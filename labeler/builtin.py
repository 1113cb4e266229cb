"""Labelers that need no LLM: ``random``, ``two_tower`` and ``oracle``, answering where the LLM client answers.

An LLM run's numbers mean little alone: edge precision against the planted truth needs a floor (``random``:
uniform picks), the retriever by itself (``two_tower``: its own top picks) and an instrument of known quality
(``oracle``: synthetic data only, on the planted taste at ``labeler.oracle_precision``). They are endpoints
with ``dialect = "builtin"`` (``[endpoints.random]``, ``[endpoints.two_tower]``, ``[endpoints.oracle]``), so a
run is started, stored, resumed, reported and exported like any other, inline or through Celery workers.

The pipeline asks every stage through :class:`Answerer`; ``LLMClient`` is one, :class:`BuiltinAnswerer` the
other. A builtin answer is JSON in the prompt's own answer form, so it goes through the same parser and
projection onto the allowed set, the same fallbacks and the same extraction as a model's. It issues no HTTP
request and is never written to the request cache: its call key starts with ``builtin:`` and cannot be an
LLM call's (a sha256 hex digest).

How each labeler picks, inside the allowed set of every stage (k = the stage's number of picks):

* ``random``: k values uniformly without replacement;
* ``two_tower``: the k best by Two-Tower score (a category or subcategory scores its best candidate);
* ``oracle``: each pick is on the user's planted taste with probability p, else off it (uniform within the
  kind; the other kind when one is used up). An item is *on taste* when its planted leaf is one of the
  user's taste leaves (the run report's measure); a subcategory or category when it holds at least one such
  candidate of the user. Precision is an item-level knob, so the routing stages (categories, subcategories)
  keep at least one on-taste and one off-taste option open whenever the allowed set has both and k >= 2:
  otherwise p = 0.2 would often route a user away from every taste item, and p = 0.9 away from every
  other one, and the measured precision would not follow p.

Stage 1 answers a fixed profile (nothing reads it). Stage-5 scores come from the rank alone (ceil of
``score_scale * (n - i) / n``), the same for all three, so weights carry nothing the labeler knows. Picks are
seeded by ``labeler.seed``, the user and the stage's allowed set (never its display order), so a resumed
or replayed user gets the same answers.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from coldlabel.config import Settings
from coldlabel.data.workspace import Workspace
from coldlabel.errors import ConfigError, WorkspaceError
from labeler.client import Completion
from labeler.prompts import Prompt
from retrieval.space import UserSpace

DIALECT = "builtin"
KINDS = ("random", "two_tower", "oracle")
ITEM_STAGES = ("items", "rerank")


class Answerer(Protocol):
    """What the pipeline asks a stage through: ``labeler.client.LLMClient`` or a :class:`BuiltinAnswerer`."""

    async def complete_prompt(self, prompt: Prompt, *, messages: list[dict] | None = None,
                              prompt_version: str = "", validate: Callable[[str], bool] | None = None,
                              cache_writes: list[dict] | None = None) -> Completion: ...

    async def prefetch_prompts(self, prompts: list[Prompt], *, prompt_version: str = "") -> None: ...

    async def aclose(self) -> None: ...


def asin_of(prompt: Prompt, value: str) -> str:
    """The item an item-stage answer value stands for: the prompt's own mapping (``Prompt.item_of``, the one
    the parser projects every answer through), so a builtin labeler answers in the prompt's vocabulary —
    ``cN`` handles since prompt version 3 — exactly as a model has to."""
    item = prompt.item_of(value)
    if item is None:
        raise ValueError(f"{value!r} names no item of this {prompt.stage} prompt")
    return item


# ---- the planted truth --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planted:
    """Who likes what in a synthetic dataset: each item's planted leaf, each user's taste leaves."""

    item_leaf: dict[str, tuple[str, ...]]                 # asin -> leaf path
    user_leaves: dict[str, frozenset[tuple[str, ...]]]    # reviewerID -> taste leaf paths

    def on_taste(self, user_id: str, asin: str) -> bool:
        """The item's planted leaf is one of the user's taste leaves (what "planted-taste share" counts)."""
        leaf = self.item_leaf.get(asin)
        return leaf is not None and leaf in self.user_leaves.get(user_id, frozenset())


_PLANTED: dict[tuple[str, int], Planted] = {}
_PLANTED_LOCK = threading.Lock()


def planted(ws: Workspace) -> Planted:
    """The workspace's planted truth, read once per process (per file version). WorkspaceError without one."""
    path = ws.truth_file
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0)
    with _PLANTED_LOCK:
        if key not in _PLANTED:
            truth = ws.read_truth()
            _PLANTED[key] = Planted(
                {asin: tuple(it.get("leaf", ())) for asin, it in truth["items"].items()},
                {uid: frozenset(tuple(p) for p in u.get("leaves", ())) for uid, u in truth["users"].items()})
        return _PLANTED[key]


# ---- picking --------------------------------------------------------------------------------------------------

def rank_scores(n: int, score_scale: float) -> list[int]:
    """Integer scores from the rank alone: ceil(scale * (n - i) / n), at least 1 (10 on 1..5: 5 5 4 4 3 3 2 2 1 1)."""
    top = int(score_scale)
    return [max(1, min(top, math.ceil(score_scale * (n - i) / n))) for i in range(n)]


def oracle_picks(pool: list[str], k: int, on_taste: Callable[[str], bool], precision: float, rng: random.Random,
                 *, keep_both: bool = False) -> list[str]:
    """k picks from ``pool``: each on taste with probability ``precision``, uniform within its kind (the other
    kind when one is used up). ``keep_both``: with k >= 2 and both kinds in the pool, both are picked."""
    taste = [v for v in pool if on_taste(v)]
    other = [v for v in pool if not on_taste(v)]
    picks: list[str] = []
    for _ in range(min(k, len(pool))):
        want, spare = (taste, other) if rng.random() < precision else (other, taste)
        src = want or spare
        picks.append(src.pop(rng.randrange(len(src))))
    if keep_both and len(picks) >= 2:
        for missing, present in ((taste, False), (other, True)):
            # the pool still holds a kind none of the picks has: it takes the last pick's place
            if missing and all(on_taste(v) is present for v in picks):
                picks[-1] = missing.pop(rng.randrange(len(missing)))
    return picks


@dataclass
class BuiltinAnswerer:
    """A labeler without an LLM, bound to one user (:meth:`for_user`) before it answers."""

    endpoint: str
    kind: str                    # random | two_tower | oracle
    seed: int
    precision: float
    score_scale: float
    planted: Planted | None = None
    user: UserSpace | None = None
    _scores: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    _taste: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)

    def for_user(self, space: UserSpace) -> BuiltinAnswerer:
        """This labeler for ``space``'s user: the Two-Tower scores and planted taste of what it may pick."""
        scores: dict[tuple[str, str], float] = {}
        taste: dict[tuple[str, str], bool] = {}
        for cat in space.categories:
            for sub in space.subcategories.get(cat, ()):
                for c in space.candidates.get(sub, ()):
                    hit = self.planted is not None and self.planted.on_taste(space.user_id, c.asin)
                    for key in (("item", c.asin), ("subcategories", sub), ("categories", cat)):
                        scores[key] = max(scores.get(key, -math.inf), c.score)
                        taste[key] = taste.get(key, False) or hit
        return replace(self, user=space, _scores=scores, _taste=taste)

    async def __aenter__(self) -> BuiltinAnswerer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        return None

    async def prefetch_prompts(self, prompts: list[Prompt], *, prompt_version: str = "") -> None:
        return None  # no cache to look in

    async def complete_prompt(self, prompt: Prompt, *, messages: list[dict] | None = None,
                              prompt_version: str = "", validate: Callable[[str], bool] | None = None,
                              cache_writes: list[dict] | None = None) -> Completion:
        """The stage's answer as JSON text, like a model's (no HTTP, no cache: ``cache_writes`` is left alone)."""
        started = time.perf_counter()
        text = json.dumps(self.answer(prompt), ensure_ascii=False)
        key = "builtin:" + hashlib.sha256(f"{self.endpoint}|{self.kind}|{self.precision}|{text}".encode()).hexdigest()
        return Completion(text, "stop", 0, 0, (time.perf_counter() - started) * 1000, attempts=0,
                          cache_hit=False, key=key)

    def answer(self, prompt: Prompt) -> dict:
        if self.user is None:
            raise RuntimeError("a builtin answerer answers for one user: bind it with for_user() first")
        if prompt.stage == "profile":
            return {"profile": f"Built-in {self.kind} labeler: no language model, no profile.", "keywords": [],
                    "preferred_categories": []}
        keyed = {self._key(prompt, v): v for v in prompt.answer_values}
        pool = sorted(keyed, key=lambda kv: kv[1])  # by item/name, never by display order
        k = min(prompt.k, len(pool))
        rng = random.Random(hashlib.sha256(json.dumps(
            [self.seed, self.user.user_id, prompt.stage, k, [v for _, v in pool]]).encode()).digest())
        if self.kind == "random":
            picks = rng.sample(pool, k)
        elif self.kind == "two_tower":
            picks = sorted(pool, key=lambda key: -self._scores.get(key, -math.inf))[:k]
        else:
            picks = oracle_picks(pool, k, lambda key: self._taste.get(key, False), self.precision, rng,
                                 keep_both=prompt.stage not in ITEM_STAGES)
        values = [keyed[key] for key in picks]
        if prompt.want_scores:
            return {prompt.field: [{"asin": v, "score": s}
                                   for v, s in zip(values, rank_scores(len(values), self.score_scale))]}
        return {prompt.field: values}

    @staticmethod
    def _key(prompt: Prompt, value: str) -> tuple[str, str]:
        """What an answer value names, as a key of the per-user tables: ("item", asin) or (stage, name)."""
        return ("item", asin_of(prompt, value)) if prompt.stage in ITEM_STAGES else (prompt.stage, value)


# ---- selection like any endpoint ------------------------------------------------------------------------------

def is_builtin(settings: Settings, endpoint: str) -> bool:
    return settings.endpoint(endpoint).dialect == DIALECT


def answerer(settings: Settings, endpoint: str, dataset: str) -> BuiltinAnswerer:
    """The builtin labeler an endpoint names (its ``model``). The oracle needs the dataset's planted truth:
    a WorkspaceError that says so on any other dataset (in a worker, that pauses the run with the message)."""
    kind = settings.endpoint(endpoint).model
    if kind not in KINDS:
        raise ConfigError(f"endpoints.{endpoint}.model: a builtin endpoint's model is one of {', '.join(KINDS)} "
                          f"(got {kind!r})")
    truth = None
    if kind == "oracle":
        ws = Workspace.of(settings.data.root, dataset)
        if not ws.has_truth:
            raise WorkspaceError(
                f"endpoint {endpoint!r} is the oracle labeler: it answers from the planted truth, which only a "
                f"synthetic dataset has, and dataset {dataset!r} has none ({ws.truth_file} is missing). Use it on "
                f"`coldlabel data synth` data, or --endpoint random / two_tower here")
        truth = planted(ws)
    s = settings.labeler
    return BuiltinAnswerer(endpoint, kind, s.seed, s.oracle_precision, s.score_scale, truth)


def check(settings: Settings, endpoint: str, dataset: str) -> None:
    """Refuse a builtin endpoint that cannot label ``dataset`` before a run starts, not user by user."""
    if is_builtin(settings, endpoint):
        answerer(settings, endpoint, dataset)


def for_user(client: Any, space: UserSpace) -> Any:
    """``client`` ready to answer for ``space``'s user: a builtin answerer is bound to it, an LLM client is
    the same for every user."""
    return client.for_user(space) if isinstance(client, BuiltinAnswerer) else client
