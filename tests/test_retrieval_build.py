"""The retrieval build: stage caching, invalidation, clear errors on broken artefacts, end to end on `tiny`.

``planted_workspace`` (also used by the other retrieval tests) writes a small processed workspace directly
in the format of retrieval/workspace.py, with planted structure: every user buys from one favourite
subcategory, and each subcategory has strict cold items that only appear in the test split.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from coldlabel.config import load_settings
from coldlabel.data.workspace import INTERACTION_COLUMNS, PATH_SEP, Workspace

SUBCATS = {
    ("Beauty", "Skin Care", "Face", "Moisturizers"): ["hydrating", "face", "moisturizer", "cream", "spf"],
    ("Beauty", "Skin Care", "Body", "Lotions"): ["body", "lotion", "shea", "butter", "dry skin"],
    ("Beauty", "Makeup", "Lips", "Lipstick"): ["matte", "lipstick", "red", "lip color", "long lasting"],
    ("Beauty", "Makeup", "Eyes", "Mascara"): ["volumizing", "mascara", "lash", "black", "waterproof"],
    ("Beauty", "Hair Care", "Shampoo"): ["shampoo", "hair", "argan oil", "sulfate free", "scalp"],
}
BRANDS = ["Acme", "Lumen", "Verde", "Nordic", "Aurum"]

# Small, fast settings for every retrieval test.
TEST_OVERRIDES = ["retrieval.tt_epochs=40", "retrieval.tt_batch_size=64", "retrieval.tt_lr=0.01",
                  "retrieval.candidates=60", "retrieval.encoder_batch_size=64", "labeler.history_items=4",
                  "labeler.max_candidates_per_subcategory=6"]


def retrieval_settings(*extra: str):
    return load_settings(environ={}, overrides=[*TEST_OVERRIDES, *extra])




def planted_workspace(root: Path, n_users: int = 50, items_per_sub: int = 16, cold_per_sub: int = 4,
                      seed: int = 0, cold_users: int = 2) -> Workspace:
    """Write processed/ files for a workspace with planted tastes and strict cold items.

    The last ``cold_users`` users only appear in the test split (no training history).
    """
    rng = random.Random(seed)
    ws = Workspace(root)
    ws.processed.mkdir(parents=True, exist_ok=True)
    catalog = []  # (asin, title, brand, path, sub_index, is_cold)
    for s, (path, words) in enumerate(SUBCATS.items()):
        for j in range(items_per_sub):
            title = " ".join(rng.sample(words, 3)).title() + f" {rng.choice(['Classic', 'Pro', 'Daily', 'Mini'])} {j}"
            catalog.append((f"S{s}I{j:02d}", title, rng.choice(BRANDS), path, s, j >= items_per_sub - cold_per_sub))
    users = [f"U{u:03d}" for u in range(n_users)]
    taste = {u: rng.randrange(len(SUBCATS)) for u in users}
    rows_train, rows_test = [], []
    ts = 0
    for u in users[:len(users) - cold_users]:
        mine = [c for c in catalog if c[4] == taste[u]]
        warm = [c for c in mine if not c[5]]
        cold = [c for c in mine if c[5]]
        for c in rng.sample(warm, 5):
            ts += 1
            rows_train.append((u, c[0], ts, rng.choice([5, 5, 4, 3])))
        other = rng.choice([c for c in catalog if c[4] != taste[u] and not c[5]])
        rows_train.append((u, other[0], ts + 1, 2))  # a disliked purchase: seen, but not a positive
    for u in users:
        mine = [c for c in catalog if c[4] == taste[u]]
        warm = [c for c in mine if not c[5]]
        cold = [c for c in mine if c[5]]
        bought = {a for uu, a, *_ in rows_train if uu == u}
        for c in [rng.choice(cold), rng.choice([w for w in warm if w[0] not in bought])][:2 if bought else 1]:
            ts += 1
            rows_test.append((u, c[0], ts + 10_000, 5))
    user2idx, item2idx = {}, {}
    for u, a, *_ in rows_train + rows_test:
        user2idx.setdefault(u, len(user2idx))
        item2idx.setdefault(a, len(item2idx))
    by_asin = {c[0]: c for c in catalog}
    for asin in by_asin:  # catalog items nobody bought still get an index (at the end)
        item2idx.setdefault(asin, len(item2idx))

    def weight(r: float) -> float:
        return 1.0 if r >= 4 else 0.3 if r >= 3 else 0.0

    for split, rows in (("train", rows_train), ("test", rows_test)):
        lines = ["\t".join(INTERACTION_COLUMNS)]
        lines += [f"{u}\t{a}\t{user2idx[u]}\t{item2idx[a]}\t{t}\t{r}\t{weight(r):g}" for u, a, t, r in rows]
        (ws.processed / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    sequences: dict[str, list[int]] = {}
    for u, a, _, r in rows_train:
        if weight(r) > 0:
            sequences.setdefault(str(user2idx[u]), []).append(item2idx[a])
    items_sorted = sorted(item2idx.items(), key=lambda kv: kv[1])
    with open(ws.processed / "items.jsonl", "w") as fh:
        for asin, idx in items_sorted:
            _, title, brand, path, _, _ = by_asin[asin]
            fh.write(json.dumps({"idx": idx, "asin": asin, "title": title, "description": "", "brand": brand,
                                 "category_path": list(path), "text": f"{title} | {PATH_SEP.join(path)}"}) + "\n")
    categories: dict[str, list[str]] = {}
    sub_items: dict[str, list[int]] = {}
    item_sub = {}
    for asin, idx in items_sorted:
        path = by_asin[asin][3]
        cat, sub = PATH_SEP.join(path[:2]), PATH_SEP.join(path[:4])
        categories.setdefault(cat, [])
        if sub not in categories[cat]:
            categories[cat].append(sub)
        sub_items.setdefault(sub, []).append(idx)
        item_sub[str(idx)] = sub
    taxonomy = {"category_levels": [1, 2], "subcategory_levels": [3, 4], "categories": sorted(categories),
                "subcategories": {c: sorted(s) for c, s in sorted(categories.items())},
                "subcategory_items": sub_items, "item_subcategory": item_sub}
    (ws.processed / "taxonomy.json").write_text(json.dumps(taxonomy))
    (ws.processed / "sequences.json").write_text(json.dumps(sequences))
    (ws.processed / "mappings.json").write_text(json.dumps({"user2idx": user2idx, "item2idx": item2idx}))
    return ws


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from retrieval.build import build

    ws = planted_workspace(tmp_path_factory.mktemp("ws") / "planted")
    settings = retrieval_settings()
    results = build(ws, settings)
    return ws, settings, results


# ---- caching ----------------------------------------------------------------------------------------------

def test_first_build_runs_every_stage_and_writes_meta(built):
    ws, _, results = built
    assert [r.stage for r in results] == ["content", "two_tower", "index", "leaves"]
    assert all(r.rebuilt for r in results)
    for stage in ("content", "two_tower", "index", "leaves"):
        meta = json.loads((ws.retrieval / stage / "meta.json").read_text())
        assert meta["key"] and meta["config_hash"] and meta["files"]
    tt = json.loads((ws.retrieval / "two_tower" / "meta.json").read_text())
    n_items = len(ws.items)
    assert tt["n_items"] == n_items and tt["n_users"] == len(ws.mappings["user2idx"]) and tt["dim"] == 64
    assert tt["epochs"] == 40 and tt["final_loss"] == pytest.approx(tt["losses"][-1], abs=1e-4)
    assert tt["losses"][-1] < tt["losses"][0]
    assert np.load(ws.retrieval / "two_tower" / "item_vectors.npy").shape == (n_items, 64)


def test_rerun_reuses_everything(built):
    from retrieval.build import build

    ws, settings, _ = built
    before = {p: p.stat().st_mtime_ns for p in ws.retrieval.rglob("*") if p.is_file()}
    again = build(ws, settings)
    assert not any(r.rebuilt for r in again)
    after = {p: p.stat().st_mtime_ns for p in ws.retrieval.rglob("*") if p.is_file()}
    assert before == after


def test_config_change_rebuilds_only_what_depends_on_it(tmp_path):
    from retrieval.build import build

    ws = planted_workspace(tmp_path / "w", n_users=20, items_per_sub=8, cold_per_sub=2)
    settings = retrieval_settings("retrieval.tt_epochs=3")
    build(ws, settings)
    content_mtime = (ws.retrieval / "content" / "item_content.npy").stat().st_mtime_ns
    # A leaf setting: only the leaves stage.
    res = {r.stage: r.rebuilt for r in build(ws, retrieval_settings("retrieval.tt_epochs=3", "retrieval.max_leaf_size=3"))}
    assert res == {"content": False, "two_tower": False, "index": False, "leaves": True}
    # A Two-Tower setting: Two-Tower and everything downstream, never the encoder.
    res = {r.stage: r.rebuilt for r in build(ws, retrieval_settings("retrieval.tt_epochs=4", "retrieval.max_leaf_size=3"))}
    assert res == {"content": False, "two_tower": True, "index": True, "leaves": True}
    assert (ws.retrieval / "content" / "item_content.npy").stat().st_mtime_ns == content_mtime
    # An input change (one training row removed): Two-Tower onwards.
    train = (ws.processed / "train.tsv").read_text().splitlines()
    (ws.processed / "train.tsv").write_text("\n".join(train[:-1]) + "\n")
    res = {r.stage: r.rebuilt for r in build(ws, retrieval_settings("retrieval.tt_epochs=4", "retrieval.max_leaf_size=3"))}
    assert res == {"content": False, "two_tower": True, "index": True, "leaves": True}


# ---- broken artefacts -------------------------------------------------------------------------------------

@pytest.fixture
def small_built(tmp_path):
    from retrieval.build import build

    ws = planted_workspace(tmp_path / "w", n_users=20, items_per_sub=8, cold_per_sub=2)
    settings = retrieval_settings("retrieval.tt_epochs=2")
    build(ws, settings)
    return ws, settings


def test_truncated_vectors_give_clear_error(small_built):
    from coldlabel.errors import ArtefactError
    from retrieval.space import CandidateSpace

    ws, settings = small_built
    path = ws.retrieval / "two_tower" / "item_vectors.npy"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ArtefactError) as err:
        CandidateSpace.load(ws, settings)
    assert "item_vectors.npy" in str(err.value) and f"coldlabel retrieval build --dataset {ws.name}" in str(err.value)


def test_shape_mismatch_with_meta_gives_clear_error(small_built):
    from coldlabel.errors import ArtefactError
    from retrieval.artefacts import load_tower_vectors

    ws, _ = small_built
    path = ws.retrieval / "two_tower" / "item_vectors.npy"
    np.save(path, np.load(path)[:-1])  # a valid .npy, one row short of what meta.json says
    with pytest.raises(ArtefactError, match=r"item_vectors\.npy does not match its meta\.json"):
        load_tower_vectors(ws)
    # Without a recorded hash the shape check still catches it.
    meta_path = ws.retrieval / "two_tower" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]["item_vectors.npy"]["sha256"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtefactError, match=r"item_vectors\.npy has shape .* but its meta\.json says"):
        load_tower_vectors(ws)


def test_flipped_bytes_are_detected(small_built):
    from coldlabel.errors import ArtefactError
    from retrieval.artefacts import load_array

    ws, _ = small_built
    path = ws.retrieval / "content" / "item_content.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, still a loadable array, wrong numbers
    path.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=r"item_content\.npy does not match its meta\.json"):
        load_array(ws, "content", "item_content.npy")


def test_missing_artefact_and_missing_meta(small_built):
    from coldlabel.errors import ArtefactError
    from retrieval.index import candidates

    ws, settings = small_built
    (ws.retrieval / "index" / "items.faiss").unlink()
    with pytest.raises(ArtefactError, match=r"items\.faiss is missing; run `coldlabel retrieval build"):
        candidates(ws, [0], 5, settings)
    (ws.retrieval / "two_tower" / "meta.json").write_text("{not json")
    with pytest.raises(ArtefactError, match=r"two_tower/meta\.json is corrupted"):
        candidates(ws, [0], 5, settings)
    (ws.retrieval / "two_tower" / "meta.json").unlink()
    with pytest.raises(ArtefactError, match=r"two_tower/meta\.json is missing .*coldlabel retrieval build"):
        candidates(ws, [0], 5, settings)


def test_broken_artefact_is_rebuilt_by_build(small_built):
    from retrieval.build import build
    from retrieval.index import candidates

    ws, settings = small_built
    path = ws.retrieval / "two_tower" / "item_vectors.npy"
    path.write_bytes(path.read_bytes()[:200])
    res = {r.stage: r.rebuilt for r in build(ws, settings)}
    assert res["two_tower"] and not res["content"]
    ids, _ = candidates(ws, [0], 5, settings)
    assert (ids >= 0).all()


def test_changed_upstream_output_rebuilds_downstream(small_built):
    """Same key but different bytes upstream (e.g. another torch build retrained it): index and leaves follow."""
    from retrieval.build import build

    ws, settings = small_built
    from coldlabel.data.workspace import file_hash

    path = ws.retrieval / "two_tower" / "item_vectors.npy"
    vectors = np.load(path)
    vectors[0] = -vectors[0]  # as if a retrain under the same settings had produced other numbers
    np.save(path, vectors)
    meta_path = ws.retrieval / "two_tower" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["item_vectors.npy"].update(sha256=file_hash(path), bytes=path.stat().st_size)
    meta_path.write_text(json.dumps(meta))
    res = {r.stage: r.rebuilt for r in build(ws, settings)}
    assert res == {"content": False, "two_tower": False, "index": True, "leaves": True}


def test_stale_artefacts_are_refused(small_built):
    from coldlabel.errors import ArtefactError
    from retrieval.space import CandidateSpace

    ws, _ = small_built
    with pytest.raises(ArtefactError, match="stale"):
        CandidateSpace.load(ws, retrieval_settings("retrieval.tt_epochs=3"))


def test_missing_processed_input_names_prepare(tmp_path):
    from coldlabel.data.workspace import WorkspaceError
    from retrieval.build import build

    ws = planted_workspace(tmp_path / "w", n_users=5, items_per_sub=8, cold_per_sub=2)
    (ws.processed / "train.tsv").unlink()
    with pytest.raises(WorkspaceError, match=r"train\.tsv is missing; run `coldlabel data prepare"):
        build(ws, retrieval_settings())


# ---- end to end on the `tiny` synthetic set -------------------------------------------------------------

def test_end_to_end_on_tiny_synthetic_set(tmp_path):
    """synth -> prepare -> build -> recall and candidate spaces: Two-Tower beats popularity, cold items reachable."""
    from coldlabel.data import synth
    from coldlabel.data.prepare import prepare
    from retrieval.build import build
    from retrieval.index import candidate_recall
    from retrieval.space import CandidateSpace

    ws = Workspace(tmp_path / "tiny")
    synth.generate("tiny", ws.root, seed=0)
    settings = load_settings(environ={}, overrides=["retrieval.candidates=50"])
    prepare(ws, settings.data)
    results = build(ws, settings)
    assert all(r.rebuilt for r in results)
    report = candidate_recall(ws, settings, [10, 20, 50])
    tt, pop = report["retrievers"]["two_tower"], report["retrievers"]["popularity"]
    assert report["test_positives"]["cold"] > 0
    assert tt["all"][1] > pop["all"][1] and tt["warm"][1] > pop["warm"][1]
    assert tt["cold"][2] > pop["cold"][2]  # popularity can never rank a never-bought item
    space = CandidateSpace.load(ws, settings)
    cold_shown = {c.item_idx for u in space.users() for cands in space.for_user(u).candidates.values()
                  for c in cands} & ws.cold_items
    assert cold_shown
    assert not any(r.rebuilt for r in build(ws, settings))
