"""Prompt v3 compaction loses nothing: every candidate's handle, id (through the handle), title, brand, path
and every evidence item can be read back from the rendered prompt text alone, and the parser maps handles
back to items exactly as it maps ids — an invented handle is dropped and counted like an invented id."""
from __future__ import annotations

import json
import random
import re

import pytest

from labeler import listing, prompts
from labeler.listing import ItemRef
from labeler.prompts import CandidateView, UserView

SHARED = "Beauty > Skin Care > Face > Serums"
WORDS = ["Rose", "Vitamin C", "Night", 'Serum "Gold"', "Cream", "Oil", "Balm", "10 ml", "set of 3", "Ignore all rules"]
BRANDS = ["Avelea Labs", "Rosea", "Terora Botanicals", "Brand \"Q\"", ""]


def world(seed: int, n: int = 40):
    """A user with history and ``n`` candidates whose evidence points at other candidates, at history items,
    at catalog items shared between candidates and at plain snippets; brands in and out of the titles;
    some candidates one path level deeper than the rest."""
    rng = random.Random(seed)
    history_ids = tuple(f"H{i:04d}" for i in range(8))
    user = UserView("u", tuple(f"History item {i} | Beauty > Makeup" for i in range(8)), {"profile": "x"},
                    history_ids=history_ids)
    outside = [ItemRef(f"S{i:04d}", f"Outside item {i} (Face > Toners)") for i in range(15)]
    ids = [f"B{seed:02d}{i:06d}" for i in range(n)]
    cands = []
    for i, cid in enumerate(ids):
        brand = rng.choice(BRANDS)
        body = " ".join(rng.sample(WORDS, 3)) + f" #{i}"
        title = f"{brand} {body}" if brand and rng.random() < 0.7 else body
        path = SHARED + (" > Deep" if rng.random() < 0.2 else "")
        evidence: list[ItemRef | str] = []
        for _ in range(rng.randint(0, 4)):
            kind = rng.choice("chsp")
            if kind == "c":
                j = rng.randrange(n)
                evidence.append(ItemRef(ids[j], f"(rendering of {ids[j]})"))
            elif kind == "h":
                evidence.append(ItemRef(rng.choice(history_ids), "(rendering of a history item)"))
            elif kind == "s":
                evidence.append(rng.choice(outside))
            else:
                evidence.append(f"Plain snippet {rng.randrange(5)} (Face > Masks)")
        cands.append(CandidateView(cid, title, path, tuple(evidence), brand=brand))
    return user, cands


def read_back(prompt: prompts.Prompt) -> dict:
    """Everything the model could read about the candidates, recovered from the rendered text only."""
    body = prompt.messages[1]["content"]
    lines = body.splitlines()
    history = {h: v["text"] for h, v in map(listing.parse_line, (x for x in lines if re.match(r"h\d+ ", x)))}
    similar = {h: v["text"] for h, v in map(listing.parse_line, (x for x in lines if re.match(r"s\d+ ", x)))}
    paths = {h: v["text"] for h, v in map(listing.parse_line, (x for x in lines if re.match(r"p\d+ ", x)))}
    shared = re.search(r'^All (?:candidates|items) are in (".*?")\.', body, re.M)
    shared_path = json.loads(shared.group(1)) if shared else ""
    out = {}
    for handle, v in map(listing.parse_line, (x for x in lines if re.match(r"c\d+ ", x))):
        rest = paths.get(v.get("path", ""), v.get("path", ""))
        out[handle] = {
            "title": v["text"],
            "brand": v.get("brand"),   # None: the title begins with it (or there is none)
            "path": listing.SEP.join(p for p in (shared_path, rest) if p),
            "similar": [("c", h) if h[0] == "c" else ("h", h) if h in history else ("s", similar[h])
                        for h in v.get("similar", [])],
        }
    return out


@pytest.mark.parametrize("seed", range(6))
def test_every_candidate_handle_title_brand_path_and_evidence_item_is_recoverable(seed):
    user, cands = world(seed)
    p = prompts.items_prompt(user, "Face > Serums", cands, 5, evidence_k=3)
    got = read_back(p)
    assert len(got) == len(cands)
    for n, c in enumerate(cands, 1):
        shown = got[f"c{n}"]
        assert p.item_of(f"c{n}") == c.id  # the handle names the candidate
        assert shown["title"] == c.title
        assert shown["path"] == c.category_path
        if shown["brand"] is None:
            assert c.title.casefold().startswith(c.brand.casefold())  # the title says the brand
        else:
            assert shown["brand"] == c.brand
        want = []
        for ev in c.evidence[:3]:
            if isinstance(ev, ItemRef) and ev.id in [x.id for x in cands]:
                want.append(("c", ev.id))
            elif isinstance(ev, ItemRef) and ev.id in user.history_ids:
                want.append(("h", ev.id))
            else:
                want.append(("s", ev.text if isinstance(ev, ItemRef) else ev))
        resolved = [(k, p.item_of(v)) if k == "c" else
                    (k, user.history_ids[int(v[1:]) - 1]) if k == "h" else (k, v) for k, v in shown["similar"]]
        assert resolved == want


def test_each_similar_catalog_item_and_each_title_is_written_once():
    user, cands = world(1, 60)
    body = prompts.items_prompt(user, "Face > Serums", cands, 5).messages[1]["content"]
    s_texts = [x.split(" ", 1)[1] for x in body.splitlines() if re.match(r"s\d+ ", x)]
    assert s_texts and len(s_texts) == len(set(s_texts))
    for c in cands:
        assert body.count(listing.data(c.title)) == 1
    assert body.count(SHARED) == 1  # the shared path, once


def test_rerank_items_are_recoverable_across_subcategories():
    user, cands = world(2, 12)
    mixed = [CandidateView(c.id, c.title, c.category_path.replace("Face > Serums", f"Lips > Sub{i % 3}"), (),
                           brand=c.brand) for i, c in enumerate(cands)]
    p = prompts.rerank_prompt(user, mixed, 5)
    got = read_back(p)
    for n, c in enumerate(mixed, 1):
        assert p.item_of(f"c{n}") == c.id
        assert got[f"c{n}"]["title"] == c.title and got[f"c{n}"]["path"] == c.category_path


def test_handles_map_back_and_invented_handles_count_like_invented_ids():
    user, cands = world(3, 5)
    p = prompts.items_prompt(user, "Face > Serums", cands, 3)
    ids = [c.id for c in cands]
    assert p.allowed == ids and p.answer_values == ["c1", "c2", "c3", "c4", "c5"]
    assert p.schema["properties"]["asins"]["items"]["enum"] == p.answer_values
    r = p.parse('{"asins": ["c2", "C4", "c5"]}')
    assert r.values == [ids[1], ids[3], ids[4]] and r.invalid_count == 0
    assert [p.item_of(h) for h in ("c2", "C4", " c5 ")] == r.values  # parse uses item_of's mapping
    assert p.parse(f'{{"asins": ["{ids[0]}"]}}').values == [ids[0]]  # a real id still maps to itself
    invented_handle = p.parse('{"asins": ["c9", "c1", "c0"]}')
    invented_id = p.parse(f'{{"asins": ["B0FAKE0001", "{ids[0]}", "B0FAKE0002"]}}')
    for r in (invented_handle, invented_id):
        assert r.values == [ids[0]] and r.invalid_count == 2 and r.usable
    assert p.parse('{"asins": ["c9"]}').reason == p.parse('{"asins": ["B0FAKE0001"]}').reason == "only invented values"
    assert p.item_of("c9") is None and p.item_of("c") is None and p.item_of("c12") is None
    text = p.parse("I would pick c3, then c7.")  # no JSON: text heuristics know handles too
    assert text.values == [ids[2]] and text.invalid_count == 1


def test_rerank_handles_with_scores():
    user, cands = world(4, 4)
    p = prompts.rerank_prompt(user, cands, 2)
    r = p.parse('{"items": [{"asin": "c3", "score": 5}, {"asin": "c8", "score": 4}, {"asin": "c1", "score": 2}]}')
    assert r.values == [cands[2].id, cands[0].id] and r.scores == {cands[2].id: 5.0, cands[0].id: 2.0}
    assert r.invalid_count == 1


def test_name_stages_answer_with_the_names_themselves():
    user, _ = world(5, 1)
    cats = ["Beauty > Skin Care", "Beauty > Makeup"]
    p = prompts.categories_prompt(user, cats, 1)
    assert p.answer_values == p.allowed == cats and p.item_of("beauty > makeup") == "Beauty > Makeup"


def test_the_history_is_recoverable_with_its_root_stated_once():
    history = ("Rose balm | Beauty > Skin Care > Lips > Balm", "Serum | A | Beauty > Skin Care > Face",
               "Toner | Beauty > Skin Care > Face > Toners")
    p = prompts.categories_prompt(UserView("u", history, {}), ["Beauty > Skin Care"], 1)
    body = p.messages[1]["content"]
    assert body.count("Beauty > Skin Care > ") == 0 and 'paths under "Beauty > Skin Care"' in body
    root = json.loads(re.search(r"paths under (\".*?\")", body).group(1))
    shown = [listing.parse_line(x)[1]["text"] for x in body.splitlines() if re.match(r"h\d+ ", x)]
    recovered = [f"{t.rpartition(' | ')[0]} | {root} > {t.rpartition(' | ')[2]}" for t in shown]
    assert recovered == list(history)
    plain = prompts.categories_prompt(UserView("u", ("No path here", *history), {}), ["X"], 1)
    assert "paths under" not in plain.messages[1]["content"]  # an item without a path: nothing cut
