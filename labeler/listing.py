"""Compact, information-preserving listings of items inside a prompt (prompt version 3).

A stage-4 list used to repeat, on every line, the category path all candidates share, a 10-character id
and up to three similar-item titles that were mostly other candidates of the same list. Here everything is
said once and pointed at afterwards:

* every listed item gets a short per-prompt **handle**: ``cN`` a candidate, ``hN`` an item of the shopper's
  history (numbered in the user block, so the handles are the same in every call of that user), ``sN`` a
  similar catalog item that is neither, written out once in its own block;
* the category path every candidate shares is stated once; a candidate whose path goes deeper shows only
  the rest (``path "..."``);
* a brand is shown only when the title does not already begin with it;
* evidence is a list of handles after ``like`` (``like c3 h2 s1``; one token, where ``similar:`` was two on
  every line), so the model also learns *how* a candidate relates to this shopper's history.

Catalog text stays data: every catalog value is one JSON string; handles and the words ``brand``, ``path``,
``like`` are ours. :func:`parse_line` reads a line back (the information-preservation test uses it).
The parser maps a handle back to its item through ``Prompt.item_of`` — the one mapping.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

SEP = " > "
LIKE = "like"  # the word before a candidate's similar items


@dataclass(frozen=True)
class ItemRef:
    """A catalog item a prompt may point at: its id and its one-line rendering ``title (path tail)``."""

    id: str
    text: str


@dataclass
class Listing:
    """The lines of a compact list and what its handles stand for."""

    lines: list[str]
    handles: dict[str, str]                                    # cN -> candidate id
    similar_lines: list[str] = field(default_factory=list)     # sN lines, written once
    shared_path: str = ""
    path_lines: list[str] = field(default_factory=list)        # pN lines (``path_handles``), written once


def data(value: object) -> str:
    """Catalog text as a JSON value on one line: quotes are escaped, so the text cannot leave its string."""
    return json.dumps(value, ensure_ascii=False)


def one_line(text: str, limit: int | None = 160) -> str:
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def history_root(history: Sequence[str]) -> str:
    """The path levels every history item (``title | path``) starts with, keeping at least one level of
    each path: every line still ends in `` | <rest>``, so the full path is the root plus the rest."""
    paths = [text.rpartition(" | ")[2] if " | " in text else "" for text in history]
    if not paths or not all(paths):
        return ""
    shared = shared_path(paths)
    shortest = min(len(p.split(SEP)) for p in paths)
    return SEP.join(shared.split(SEP)[: shortest - 1]) if shared else ""


def history_lines(history: Sequence[str], root: str = "", limit: int = 160) -> list[str]:
    """``h1 "<title | path>"``, oldest first; the path without ``root`` when one is given (stated once)."""
    cut = root + SEP if root else ""
    out = []
    for n, text in enumerate(history, 1):
        if cut:
            title, _, path = text.rpartition(" | ")
            text = f"{title} | {path[len(cut):]}"
        out.append(f"h{n} {data(one_line(text, limit))}")
    return out


def history_handles(history_ids: Sequence[str]) -> dict[str, str]:
    """item id -> hN for the shopper's history (the first occurrence of an id wins)."""
    out: dict[str, str] = {}
    for n, item_id in enumerate(history_ids, 1):
        if item_id:
            out.setdefault(item_id, f"h{n}")
    return out


def shared_path(paths: Sequence[str]) -> str:
    """The longest common prefix, in whole path levels, of ``paths``."""
    split = [p.split(SEP) for p in paths if p]
    if not split or len(split) < len(paths):
        return ""
    common: list[str] = []
    for level in zip(*split):
        if any(part != level[0] for part in level):
            break
        common.append(level[0])
    return SEP.join(common)


def path_rest(path: str, shared: str) -> str:
    if not shared:
        return path
    return path[len(shared) + len(SEP):] if path.startswith(shared + SEP) else ("" if path == shared else path)


def brand_shown(title: str, brand: str) -> str:
    """The brand, unless the title already starts with it (then the title says it)."""
    full = one_line(brand, None)
    if not full or one_line(title, None).casefold().startswith(full.casefold()):
        return ""
    return one_line(full, 40)


def candidate_listing(candidates: Sequence, history_ids: Sequence[str] = (), evidence_k: int = 0, *,
                      path_handles: bool = False, title_chars: int = 120) -> Listing:
    """``cN "<title>" [brand "..."] [path "..."|path pN] [like cN hN sN]`` per candidate.

    ``candidates`` are ``labeler.prompts.CandidateView``; their ``evidence`` entries are :class:`ItemRef` or
    plain snippets (written out as ``sN``, the same text once). ``path_handles``: each distinct rest of a
    path is written once as ``pN`` (the rerank list mixes a few subcategories over many items).
    """
    handles = {f"c{n}": c.id for n, c in enumerate(candidates, 1)}
    by_id = {cid: h for h, cid in reversed(handles.items())}
    hist = history_handles(history_ids)
    shared = shared_path([c.category_path for c in candidates]) if candidates else ""
    similar: dict[str, str] = {}  # key (id or snippet) -> sN
    similar_lines: list[str] = []
    paths: dict[str, str] = {}    # rest of a path -> pN
    lines = []
    for handle, c in zip(handles, candidates):
        parts = [handle, data(one_line(c.title, title_chars))]
        brand = brand_shown(c.title, getattr(c, "brand", ""))
        if brand:
            parts += ["brand", data(brand)]
        rest = path_rest(c.category_path, shared)
        if rest and path_handles:
            parts += ["path", paths.setdefault(rest, f"p{len(paths) + 1}")]
        elif rest:
            parts += ["path", data(rest)]
        refs = []
        for ev in tuple(c.evidence)[:evidence_k]:
            ref = ev if isinstance(ev, ItemRef) else ItemRef("", str(ev))
            if ref.id and ref.id in by_id:
                refs.append(by_id[ref.id])
            elif ref.id and ref.id in hist:
                refs.append(hist[ref.id])
            else:
                key = ref.id or "\0" + ref.text
                if key not in similar:
                    similar[key] = f"s{len(similar) + 1}"
                    similar_lines.append(f"{similar[key]} {data(one_line(ref.text, title_chars))}")
                refs.append(similar[key])
        if refs:
            parts += [LIKE, " ".join(refs)]
        lines.append(" ".join(parts))
    path_lines = [f"{h} {data(rest)}" for rest, h in paths.items()]
    return Listing(lines, handles, similar_lines, shared, path_lines)


_HANDLE = re.compile(r"[chsp]\d+")


def parse_line(line: str) -> tuple[str, dict[str, object]]:
    """Read one listing line back: (handle, {"text": .., "brand": .., "path": .., "similar": [..]})."""
    decoder = json.JSONDecoder()
    handle, _, rest = line.partition(" ")
    text, pos = decoder.raw_decode(rest)
    out: dict[str, object] = {"text": text}
    while pos < len(rest):
        rest = rest[pos:].lstrip()
        word, _, tail = rest.partition(" ")
        if word == LIKE:
            out["similar"] = [h for h in tail.split() if _HANDLE.fullmatch(h)]
            break
        handle_ref = re.match(r"p\d+", tail)
        if handle_ref:
            out[word], pos = handle_ref.group(0), handle_ref.end()
        else:
            out[word], pos = decoder.raw_decode(tail)
        rest = tail
    return handle, out
