"""Turn raw model text into values from an allowed set (thesis §4.3.4, "JSON-first parsing").

The order of trust is fixed:

1. find a JSON block (code fences, chatter before/after, truncated output) and repair it with
   ``json_repair``; read the structured field (``categories``, ``subcategories``, ``asins``/``items``);
2. project every value onto the allowed set: exact, then case/whitespace-normalised, then (for names and
   aliases such as titles) ``rapidfuzz`` above a threshold. Anything that does not project is an
   invented value: it is dropped and counted, never passed on;
3. only when no JSON list survives, heuristics over the plain text: mentions of allowed values,
   bracketed/ranked indices, fuzzy lines.

Projection is the safety guarantee: whatever the text says (prompt injection in a title included), the
output is a subset of the allowed set. A text that could mean two allowed values (two candidates with the
same title) means neither: it is counted as invalid, never mapped to an arbitrary one of them. The stage-1
profile is held to the same rule: a string ``profile``, a list of strings ``keywords``, and
``preferred_categories`` projected onto the allowed categories.

``PARSER_VERSION`` is kept apart from the prompt version so a parser change can re-parse cached raw answers
without new LLM calls (anchors B1, curator's parse hash).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import json_repair
from rapidfuzz import fuzz, process

PARSER_VERSION = "2"

Kind = Literal["id", "name"]

# Fields read from a JSON answer, per kind of list. Checked in this order.
LIST_FIELDS = ("asins", "items", "ids", "categories", "subcategories", "selected", "ranking")
ITEM_ID_KEYS = ("asin", "id", "item", "category", "subcategory", "name")
FUZZY_THRESHOLD = 88.0  # rapidfuzz ratio (0-100) a name must reach to count as the same name

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_BRACKETED = re.compile(r"\[([^\[\]\n]{1,80})\]")
_INDEX_LINE = re.compile(r"^\s*(?:\[(\d{1,4})\]|(\d{1,4})[.)]?)\s*$")


@dataclass
class ParseResult:
    """What one model answer yielded. ``values`` is always a duplicate-free subset of the allowed set."""

    values: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    invalid_count: int = 0      # distinct invented values seen (dropped)
    used_json: bool = False     # values came from a JSON field, not from text heuristics
    usable: bool = False        # at least one allowed value (or a valid profile) was recovered
    reason: str = ""            # short why, for the audit log ("ok", "no json", "empty list", ...)
    profile: dict | None = None


# ---- JSON location -----------------------------------------------------------------------------

def _as_container(obj: Any) -> dict | list | None:
    return obj if isinstance(obj, (dict, list)) and obj else None


_KNOWN_KEYS = set(LIST_FIELDS) | {"profile", "keywords", "preferred_categories", "scores"}


def _strict_candidates(chunk: str, limit: int = 64) -> list[dict | list]:
    """Every JSON container that parses strictly at a ``{``/``[`` position, outermost first."""
    found: list[dict | list] = []
    decoder = json.JSONDecoder()
    pos, covered_until, tries = 0, -1, 0
    while tries < limit:
        starts = [i for i in (chunk.find("{", pos), chunk.find("[", pos)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        pos = start + 1
        if start < covered_until:
            continue
        tries += 1
        try:
            obj, end = decoder.raw_decode(chunk, start)
        except json.JSONDecodeError:
            continue
        if _as_container(obj) is not None and _plausible(obj):
            found.append(obj)
            covered_until = end
    return found


def _plausible(obj: dict | list) -> bool:
    """A bare list counts as an answer only with a string/object in it: ``[3]`` in prose is an index."""
    return isinstance(obj, dict) or any(isinstance(v, (str, dict)) for v in obj)


def _known(obj: dict | list) -> bool:
    return isinstance(obj, dict) and any(str(k).strip().lower() in _KNOWN_KEYS for k in obj)


def extract_json(text: str) -> dict | list | None:
    """The JSON answer in ``text``: strict parses first (an object with a known field wins), then
    ``json_repair`` from the first ``{`` for broken or truncated JSON. None when there is none."""
    if not text or not text.strip():
        return None
    chunks = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    strict = [obj for chunk in chunks for obj in _strict_candidates(chunk)]
    for obj in strict:
        if _known(obj):
            return obj
    if strict:
        return strict[0]
    for chunk in chunks:
        # Repair only from an object: a repaired bare list is too often prose ("see [B009]").
        start = chunk.find("{")
        if start < 0:
            continue
        body = chunk[start:]
        try:
            obj = json_repair.loads(body)
        except Exception:  # json_repair is best-effort; any failure just means "no JSON here"
            continue
        if isinstance(obj, list) and obj and isinstance(obj[0], dict):
            obj = obj[0]  # json_repair returns every fragment when there are several; the first is the answer
        if isinstance(obj, dict) and obj:
            return obj
    return None


def _list_field(obj: dict | list, fields: Sequence[str]) -> tuple[list | None, str]:
    """The list of answers inside a JSON answer, and which field it came from."""
    if isinstance(obj, list):
        return obj, "<list>"
    for name in fields:
        for key, value in obj.items():
            if key.strip().lower() == name:
                if isinstance(value, list):
                    return value, key
                if isinstance(value, str):
                    return [value], key
                if isinstance(value, dict):
                    return list(value.keys()), key
                return [], key  # present but the wrong type: counts as an empty answer
    for key, value in obj.items():  # a single list under an unexpected name is still the answer
        if isinstance(value, list):
            return value, key
    for value in obj.values():  # one level of wrapping: {"answer": {"asins": [...]}}
        if isinstance(value, dict):
            inner, key = _list_field(value, fields)
            if inner is not None:
                return inner, key
    return None, ""


# ---- projection onto the allowed set -----------------------------------------------------------

def normalise(text: str) -> str:
    return " ".join(str(text).split()).casefold()


class Projector:
    """Maps model strings onto allowed values; built once per prompt. An alias (a title, a short name) that
    stands for two different allowed values is dropped: it names neither."""

    def __init__(self, allowed: Sequence[str], kind: Kind = "id", aliases: Mapping[str, str] | None = None,
                 threshold: float = FUZZY_THRESHOLD, handles: Mapping[str, str] | None = None):
        self.allowed = list(dict.fromkeys(allowed))
        # Per-prompt handles (c1, c2, ...): matched exactly (case-insensitively), never fuzzily: "c12" is
        # one character away from "c1" and means another item.
        self._handles: dict[str, str] = {normalise(h): v for h, v in (handles or {}).items() if v in self.allowed}
        self.kind = kind
        self.threshold = threshold
        self._exact = set(self.allowed)
        self._norm: dict[str, str] = {}
        for value in self.allowed:
            self._norm.setdefault(normalise(value), value)
        allowed_set = set(self.allowed)
        targets: dict[str, set[str]] = {}
        for alias, target in (aliases or {}).items():
            if target in allowed_set and alias:
                targets.setdefault(normalise(alias), set()).add(target)
        self._alias_norm: dict[str, str] = {a: next(iter(t)) for a, t in targets.items() if len(t) == 1}
        # Fuzzy candidates: names for name lists, aliases (titles, short names) for both kinds.
        self._fuzzy: dict[str, str] = dict(self._alias_norm)
        if kind == "name":
            for norm, value in self._norm.items():
                self._fuzzy.setdefault(norm, value)
        self._fuzzy_keys = list(self._fuzzy)

    def project(self, raw: Any) -> str | None:
        if isinstance(raw, bool) or raw is None or isinstance(raw, (list, dict)):
            return None
        text = str(raw).strip()
        if not text:
            return None
        if text in self._exact:
            return text
        norm = normalise(text)
        if norm in self._handles:
            return self._handles[norm]
        if norm in self._norm:
            return self._norm[norm]
        if norm in self._alias_norm:
            return self._alias_norm[norm]
        if self._fuzzy and len(norm) >= 4:
            hits = process.extract(norm, self._fuzzy_keys, scorer=fuzz.ratio, score_cutoff=self.threshold, limit=2)
            if hits and (len(hits) == 1 or hits[1][1] < hits[0][1] or self._fuzzy[hits[1][0]] == self._fuzzy[hits[0][0]]):
                return self._fuzzy[hits[0][0]]
        return None


# ---- scores --------------------------------------------------------------------------------------

def rank_scores(n: int, score_scale: float) -> list[float]:
    """Scores derived from rank when the model gives none: top = score_scale, then linearly down
    (5 items on a 1..5 scale: 5, 4, 3, 2, 1)."""
    return [score_scale * (n - i) / n for i in range(n)]


def _to_score(raw: Any, score_scale: float) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if value != value:  # NaN
        return None
    return min(max(value, 0.0), float(score_scale))


# ---- main entry points ---------------------------------------------------------------------------

def parse_selection(
    text: str,
    allowed: Sequence[str],
    k: int,
    *,
    kind: Kind = "id",
    fields: Sequence[str] = LIST_FIELDS,
    aliases: Mapping[str, str] | None = None,
    want_scores: bool = False,
    score_scale: float = 5.0,
    projector: Projector | None = None,
) -> ParseResult:
    """Parse a "choose from this list" answer. The result never holds anything outside ``allowed``.
    ``projector``: the prompt's own (``Prompt.projector``, which knows its handles); else one is built."""
    projector = projector or Projector(allowed, kind, aliases)
    obj = extract_json(text)
    raw_items: list | None = None
    if obj is not None:
        raw_items, where = _list_field(obj, fields)
    if raw_items is not None:
        result = _from_json_list(raw_items, obj, projector, k, want_scores, score_scale)
    else:
        result = _from_text(text or "", projector, k)
        if want_scores:
            result.scores = dict(zip(result.values, rank_scores(len(result.values), score_scale)))
        if obj is not None and not result.values:
            result.reason = "json without a list field"
    return result


def _from_json_list(raw_items: list, obj: Any, projector: Projector, k: int, want_scores: bool,
                    score_scale: float) -> ParseResult:
    side_scores: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key.strip().lower() == "scores" and isinstance(value, dict):
                side_scores = value
    values: list[str] = []
    given: dict[str, float] = {}
    invented: set[str] = set()
    for entry in raw_items:
        raw_score: Any = None
        if isinstance(entry, dict):
            raw_id = next((entry[key] for key in entry if key.strip().lower() in ITEM_ID_KEYS), None)
            raw_score = next((entry[key] for key in entry if key.strip().lower() == "score"), None)
        else:
            raw_id = entry
        value = projector.project(raw_id)
        if value is None:
            if isinstance(raw_id, (str, int, float)) and not isinstance(raw_id, bool) and str(raw_id).strip():
                invented.add(normalise(str(raw_id)))
            continue
        if value in values:
            continue
        values.append(value)
        if raw_score is None and side_scores:
            raw_score = side_scores.get(str(raw_id), side_scores.get(value))
        score = _to_score(raw_score, score_scale)
        if score is not None:
            given[value] = score
    values = values[:k]
    scores: dict[str, float] = {}
    if want_scores:
        derived = rank_scores(len(values), score_scale)
        scores = {v: given.get(v, d) for v, d in zip(values, derived)}
    if values:
        reason = "ok"
    elif invented:
        reason = "only invented values"
    else:
        reason = "empty list" if not raw_items else "no usable values (wrong types)"
    return ParseResult(values, scores, len(invented), used_json=True, usable=bool(values), reason=reason)


def _id_shape(allowed: Sequence[str]) -> re.Pattern | None:
    """A regex for tokens that look like the allowed ids (upper-case letters + digits, similar length), so
    invented ids in plain-text answers are counted too. None when the ids have no common shape."""
    if not allowed or not all(re.fullmatch(r"[A-Z0-9]+", a) and re.search(r"\d", a) for a in allowed):
        return None
    lo, hi = min(map(len, allowed)), max(map(len, allowed))
    return re.compile(r"(?<![A-Za-z0-9])[A-Z0-9]{%d,%d}(?![A-Za-z0-9])" % (max(4, lo - 3), hi + 3))


_HANDLE_SHAPE = re.compile(r"(?<![A-Za-z0-9])[cC]\d{1,4}(?![A-Za-z0-9])")  # a candidate handle, real or invented


def _from_text(text: str, projector: Projector, k: int) -> ParseResult:
    """Heuristics for answers without JSON: mentions, bracketed ids/indices, fuzzy lines."""
    found: list[tuple[int, str]] = []  # (position in text, value)
    invented: set[str] = set()
    lowered = text.casefold()
    for value in projector.allowed + list(projector._alias_norm) + list(projector._handles):
        words = value.casefold().split()
        if not words:
            continue
        m = re.search(r"(?<![\w])" + r"\s+".join(map(re.escape, words)) + r"(?![\w])", lowered)
        target = projector.project(value) if m else None
        if target is not None:
            found.append((m.start(), target))
    for m in _BRACKETED.finditer(text):
        inner = m.group(1).strip()
        if inner.isdigit():
            idx = int(inner) - 1
            if 0 <= idx < len(projector.allowed):
                found.append((m.start(), projector.allowed[idx]))
        elif projector.project(inner) is None:
            invented.add(normalise(inner))
    shapes = [_id_shape(projector.allowed) if projector.kind == "id" else None,
              _HANDLE_SHAPE if projector._handles else None]
    for shape in (s for s in shapes if s is not None):
        for m in shape.finditer(text):
            token = m.group(0)
            if any(c.isdigit() for c in token) and projector.project(token) is None:
                invented.add(normalise(token))
    offset = 0
    for line in text.splitlines(keepends=True):
        m = _INDEX_LINE.match(line)
        if m:
            idx = int(m.group(1) or m.group(2)) - 1
            if 0 <= idx < len(projector.allowed):
                found.append((offset, projector.allowed[idx]))
        else:
            stripped = re.sub(r"^\s*(?:[-*•]|\d{1,3}[.)])\s*", "", line).strip().strip('"')
            value = projector.project(stripped) if stripped else None
            if value is not None:
                found.append((offset, value))
        offset += len(line)
    found.sort(key=lambda pair: pair[0])
    values = list(dict.fromkeys(v for _, v in found))[:k]
    reason = "text heuristics" if values else "no json and no recognisable values"
    return ParseResult(values, {}, len(invented), used_json=False, usable=bool(values), reason=reason)


PROFILE_FIELDS = ("profile", "keywords", "preferred_categories")


_PLACEHOLDER = re.compile(r"^\s*<[^<>]*>\s*$")


def _drop_placeholders(value: Any) -> Any:
    """Small models copy the answer template (``"<word>"``); template text is not a profile."""
    if isinstance(value, str):
        return "" if _PLACEHOLDER.match(value) else value
    if isinstance(value, list):
        return [v for v in value if not (isinstance(v, str) and (_PLACEHOLDER.match(v) or not v.strip()))]
    return value


PROFILE_LIMITS = {"profile": 300, "keywords": 8, "keyword_chars": 40, "preferred_categories": 3}  # = the schema


def _string_list(value: Any, split_commas: bool) -> list[str] | None:
    """A list of strings (a lone string is accepted as one, or as comma-separated words); None: wrong type."""
    if isinstance(value, str):
        return [w.strip() for w in value.split(",")] if split_commas else [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def parse_profile(text: str, categories: Sequence[str] | None = None) -> ParseResult:
    """Stage 1: a profile is valid only as a dict with at least one of the profile fields holding something
    (thesis §4.3.1), each of the right type: ``profile`` a string, ``keywords`` a list of strings,
    ``preferred_categories`` a list of strings projected onto ``categories`` (invented ones dropped and
    counted). A wrong type makes the answer unusable (format retry, then the fallback profile): whatever is
    kept here is shown to the model as the shopper's profile in every later stage. Field names are
    normalised (``preferredCategories`` too); lengths are capped as in the schema."""
    obj = extract_json(text)
    if isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], dict):
        obj = obj[0]
    if not isinstance(obj, dict):
        return ParseResult([], reason="no json object")
    raw: dict[str, Any] = {}
    for key, value in obj.items():
        canon = re.sub(r"[^a-z]", "", str(key).lower())
        for name in PROFILE_FIELDS:
            if canon == name.replace("_", ""):
                raw[name] = _drop_placeholders(value)
    raw = {k: v for k, v in raw.items() if v not in (None, "", [], {})}
    wrong = [name for name in PROFILE_FIELDS if name in raw and (
        not isinstance(raw[name], str) if name == "profile" else _string_list(raw[name], name == "keywords") is None)]
    if wrong:
        return ParseResult([], used_json=True, reason=f"wrong type for {', '.join(wrong)}")
    profile: dict[str, Any] = {}
    invented: set[str] = set()
    if "profile" in raw:
        profile["profile"] = " ".join(raw["profile"].split())[:PROFILE_LIMITS["profile"]]
    if "keywords" in raw:
        words = [" ".join(w.split())[:PROFILE_LIMITS["keyword_chars"]] for w in _string_list(raw["keywords"], True)]
        profile["keywords"] = list(dict.fromkeys(w for w in words if w))[:PROFILE_LIMITS["keywords"]]
    if "preferred_categories" in raw:
        chosen = _string_list(raw["preferred_categories"], False) or []
        if categories is not None:
            projector = Projector(categories, "name")
            projected = []
            for value in chosen:
                hit = projector.project(value)
                if hit is None:
                    invented.add(normalise(value))
                elif hit not in projected:
                    projected.append(hit)
            chosen = projected
        profile["preferred_categories"] = chosen[:PROFILE_LIMITS["preferred_categories"]]
    profile = {k: v for k, v in profile.items() if v not in ("", [])}
    if not profile:
        reason = "only invented categories" if invented else "json without profile fields"
        return ParseResult([], invalid_count=len(invented), used_json=True, reason=reason)
    return ParseResult([], invalid_count=len(invented), used_json=True, usable=True, reason="ok", profile=profile)


def serialise(values: Iterable[str], field_name: str = "asins") -> str:
    """The canonical JSON form of a selection (used to store parsed answers and in idempotence tests)."""
    return json.dumps({field_name: list(values)}, ensure_ascii=False)
