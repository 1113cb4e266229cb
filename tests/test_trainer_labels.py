"""Labels are filtered (unknown user, short history, unknown item, ...) and every drop is counted, whether
they are read from the SQL store by run id or from the exported TSV files."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.datasets import settings_for
from tests.support.trainer_toy import COLD, toy_data
from trainer import data
from trainer.dataset import filter_labels


def test_filter_counts_each_reason_once_in_order():
    td = toy_data()
    good, short = int(td.valid_users[0]), td.n_users - 1  # the toy's last users have one training item
    edges = {"user": np.array([good, good, -1, 999, short, good, good, short]),
             "item": np.array([COLD[0], 3, 3, 3, 3, 40, -1, 99]),
             "weight": np.array([1.0, 0.4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
             "from_fallback": np.array([0, 1, 0, 0, 0, 0, 0, 0], dtype=bool)}
    triplets = {"user": np.array([good, good, good, short, -1]), "pos": np.array([COLD[0], 4, 4, 4, 4]),
                "neg": np.array([2, 4, 1000, 2, 2]), "weight": np.array([0.5, 1.0, 1.0, 1.0, 1.0])}
    labels = filter_labels(td, edges, triplets, "hand")
    assert labels.counts == {
        "edges": {"read": 8, "kept": 2, "unknown_user": 2, "short_history": 2, "unknown_item": 2,
                  "bad_weight": 0, "kept_from_fallback": 1},
        "triplets": {"read": 5, "kept": 1, "unknown_user": 1, "short_history": 1, "unknown_item": 1,
                     "same_item": 1, "bad_weight": 0}}
    # the short-history user with an unknown item counts as short_history (first reason wins)
    assert labels.edge_users.tolist() == [good, good] and labels.edge_items.tolist() == [COLD[0], 3]
    assert labels.edge_weights.tolist() == pytest.approx([1.0, 0.4])
    assert (labels.trip_users.tolist(), labels.trip_pos.tolist(), labels.trip_neg.tolist()) == ([good], [COLD[0]], [2])
    bad = filter_labels(td, {"user": np.array([good, good]), "item": np.array([1, 2]),
                             "weight": np.array([0.0, np.nan])}, {}, "w")
    assert bad.counts["edges"]["bad_weight"] == 2 and bad.n_edges == 0 and bad.counts["triplets"]["read"] == 0


@pytest.fixture(scope="module")
def tiny(tiny_root):
    settings = settings_for(tiny_root)
    ws = data.open_workspace(tiny_root, "tiny")
    return ws, settings, data.load_training_data(ws, settings)


def test_store_and_exported_tsv_give_the_same_filtered_labels(tiny, tmp_path):
    from coldlabel.store import Edge, Store, Triplet
    from labeler.runs import export_run

    ws, _, td = tiny
    user_ids = {idx: uid for uid, idx in ws.mappings["user2idx"].items()}
    item_ids = {idx: asin for asin, idx in ws.mappings["item2idx"].items()}
    lengths = td.sequences.lengths
    good = [int(u) for u in td.valid_users[:3]]
    short = int(np.flatnonzero(lengths == 1)[0])
    none = int(np.flatnonzero(lengths == 0)[0])
    cold = sorted(np.flatnonzero(td.cold).tolist())

    def edge(item, w=0.8, asin=None):
        return Edge(item_idx=item, item_id=asin if asin is not None else item_ids.get(item, "nope"), weight=w)

    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store(url) as store:
        run = store.create_run(dataset="tiny", endpoint="local", model="m", prompt_version="v1", config={})
        store.add_users(run.id, [(u, user_ids[u]) for u in good + [short, none]] + [(9999, "ghost")])
        store.save_labels(run.id, good[0], [edge(cold[0]), edge(cold[1], 0.4), edge(150)],
                          [Triplet(cold[0], 3, item_ids[cold[0]], item_ids[3], 0.6),
                           Triplet(3, 3, item_ids[3], item_ids[3], 0.6)])
        store.save_labels(run.id, good[1], [edge(cold[0], asin=item_ids[5])],  # asin disagrees with index
                          [Triplet(cold[1], 7, item_ids[cold[1]], item_ids[7], 0.2, from_fallback=True)])
        store.save_labels(run.id, short, [edge(cold[0])], [Triplet(cold[0], 3, item_ids[cold[0]], item_ids[3], 1.0)])
        store.save_labels(run.id, none, [edge(cold[0])], [])
        store.save_labels(run.id, 9999, [edge(cold[0])], [])
        export_run(store, run.id, tmp_path / "export")
    from_store = data.labels_from_store(ws, td, url, run.id)
    from_tsv = data.labels_from_tsv(ws, td, tmp_path / "export")
    assert from_store.counts == from_tsv.counts == {
        "edges": {"read": 7, "kept": 2, "unknown_user": 1, "short_history": 2, "unknown_item": 2,
                  "bad_weight": 0, "kept_from_fallback": 0},
        "triplets": {"read": 4, "kept": 2, "unknown_user": 0, "short_history": 1, "unknown_item": 0,
                     "same_item": 1, "bad_weight": 0, "kept_from_fallback": 1}}
    for a, b in ((from_store.edge_users, from_tsv.edge_users), (from_store.edge_items, from_tsv.edge_items),
                 (from_store.trip_users, from_tsv.trip_users), (from_store.trip_neg, from_tsv.trip_neg),
                 (from_store.edge_weights, from_tsv.edge_weights)):
        assert np.array_equal(a, b)
    assert sorted(zip(from_store.edge_users.tolist(), from_store.edge_items.tolist())) == \
        [(good[0], cold[0]), (good[0], cold[1])]
    assert from_store.trip_pos.tolist() == [cold[0], cold[1]]
    assert from_store.trip_weights.tolist() == pytest.approx([0.6, 0.2])
    assert from_store.source == f"store:{run.id}" and from_tsv.source.startswith("tsv:")
