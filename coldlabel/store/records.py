"""The plain values the store hands out and takes in. No SQL here: these are what callers see."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Mapping


@dataclass(frozen=True)
class CachedCall:
    key: str
    model: str
    dialect: str
    prompt_version: str
    endpoint: str
    request: dict
    response_text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    created_at: datetime


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    dataset: str
    dataset_fingerprint: str
    endpoint: str
    model: str
    prompt_version: str
    config: dict
    status: str
    endpoint_switches: list[dict]
    created_at: datetime
    updated_at: datetime
    status_reason: str | None = None  # why it is paused, degraded or failed


@dataclass(frozen=True)
class UserCounters:
    """What labeling one user cost; summed by :meth:`Store.run_progress`. The ``run_users`` table has one
    column per field (``schema.py`` builds them from this class), so a new counter is added here only."""
    llm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallbacks: int = 0
    invalid_ids: int = 0
    latency_ms: float = 0.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The counter names: the one list the schema's columns, the sums and the tallies are made from."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, value: "UserCounters | Mapping[str, Any] | None") -> "UserCounters":
        if value is None or isinstance(value, cls):
            return value or cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown user counter(s) {unknown}; known: {sorted(known)}")
        return cls(**value)


@dataclass(frozen=True)
class RunUser:
    run_id: str
    user_idx: int
    user_id: str
    status: str
    attempts: int
    last_error: str | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    counters: UserCounters
    lease_expires_at: datetime | None = None


@dataclass(frozen=True)
class StageRecord:
    stage: str
    part: str
    output: Any
    parser_version: str
    call_keys: list[str]
    used_fallback: bool
    invalid_count: int
    created_at: datetime


@dataclass(frozen=True)
class Edge:
    """A pseudo edge user -> item to save; ``subcategory`` is the stage-3 node it came from."""
    item_idx: int
    item_id: str
    weight: float
    score: float | None = None
    subcategory: str = ""
    from_fallback: bool = False


@dataclass(frozen=True)
class Triplet:
    """A preference triplet (user prefers pos over neg) to save."""
    pos_idx: int
    neg_idx: int
    pos_id: str
    neg_id: str
    weight: float
    from_fallback: bool = False


@dataclass(frozen=True)
class EdgeRow(Edge):
    """An exported edge: the saved fields plus whose it is."""
    user_idx: int = -1
    user_id: str = ""


@dataclass(frozen=True)
class TripletRow(Triplet):
    user_idx: int = -1
    user_id: str = ""


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    total: int
    by_status: dict[str, int]  # 'running' counts live claims only; expired ones are ``stalled``
    totals: UserCounters  # summed over all users (done or not)
    first_started_at: datetime | None  # over done users
    last_finished_at: datetime | None
    users_per_min: float | None  # done users / (last finish, or now while users remain - first start)
    eta_s: float | None  # remaining (pending + running + stalled + failed) at that rate
    stalled: int = 0  # 'running' users whose lease expired: their worker is gone, the reaper re-enqueues them

    @property
    def done(self) -> int:
        return self.by_status["done"]

    @property
    def remaining(self) -> int:
        return self.by_status["pending"] + self.by_status["running"] + self.by_status["failed"] + self.stalled
