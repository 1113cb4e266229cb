"""SASRec and the baselines: causality, padding, and cold rows that no gradient touches."""
from __future__ import annotations

import numpy as np
import torch

from tests.support.trainer_toy import COLD, toy_config, toy_data
from trainer.baselines import BERT4Rec, GRU4Rec
from trainer.batches import windows
from trainer.dataset import Labels
from trainer.model import SASRec
from trainer.train import build_model, label_hidden, train


def _tokens(rows, length):
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, length - len(row):] = torch.tensor(row) + 1
    return out


def _later_item_changes_nothing_earlier(model, length=8):
    model.eval()
    torch.manual_seed(1)
    seq = torch.randint(1, 30, (4, length))
    h = model.encode(seq)
    for t in range(1, length):
        changed = seq.clone()
        changed[:, t] = (changed[:, t] % 29) + 1 + (changed[:, t] == 29).long()  # another real token
        assert not torch.equal(changed[:, t], seq[:, t])
        h2 = model.encode(changed)
        assert torch.allclose(h[:, :t], h2[:, :t], atol=1e-6), f"position < {t} saw position {t}"
        assert not torch.allclose(h[:, t:], h2[:, t:], atol=1e-6)  # the change is visible from t on


def test_sasrec_is_causal():
    torch.manual_seed(0)
    _later_item_changes_nothing_earlier(SASRec(40, max_len=8, hidden=16, layers=2, heads=2, dropout=0.3))


def test_gru4rec_is_causal():
    torch.manual_seed(0)
    _later_item_changes_nothing_earlier(GRU4Rec(40, hidden=16, layers=2, dropout=0.3))


def test_padding_does_not_leak_into_the_representation():
    torch.manual_seed(0)
    for model in (SASRec(40, max_len=8, hidden=16, layers=2), GRU4Rec(40, hidden=16), BERT4Rec(40, max_len=8, hidden=16)):
        model.eval()
        rows = [[3, 7, 1], [5, 2, 9, 11, 4]]
        short, padded = _tokens(rows, 5), _tokens(rows, 7)  # trimmed to the longest row, or padded
        assert torch.allclose(model.last_hidden(short), model.last_hidden(padded), atol=1e-5)


def test_bert4rec_sees_both_sides_and_masks_for_training():
    torch.manual_seed(0)
    model = BERT4Rec(40, max_len=8, hidden=16, layers=1).eval()
    seq = _tokens([[1, 2, 3, 4, 5]], 8)
    changed = seq.clone()
    changed[0, -1] = 20
    assert not torch.allclose(model.encode(seq)[:, -3], model.encode(changed)[:, -3])  # bidirectional
    window = _tokens([[1, 2, 3, 4, 5, 6]] * 50, 9)
    inputs, targets = model.train_inputs(window, np.random.default_rng(0))
    masked = inputs == model.mask_token
    assert inputs.shape[1] == 8 and masked.any(1).all() and not masked[:, :2].any()  # pads are never masked
    assert torch.equal(targets[masked], window[:, 1:][masked] - 1) and (targets[~masked] == -1).all()
    short = _tokens([[1, 2, 3, 4, 5, 6]] * 50, 6)  # a trimmed window: every item stays a cloze target
    inputs, targets = model.train_inputs(short, np.random.default_rng(0))
    assert inputs.shape == short.shape and (targets >= 0).any(0).all()


def test_scores_share_the_item_table():
    torch.manual_seed(0)
    model = SASRec(40, max_len=8, hidden=16).eval()
    h = model.last_hidden(_tokens([[1, 2, 3], [4, 5]], 8))
    items = torch.tensor([[0, 7, -1], [39, 2, 2]])
    s = model.score(h, items)
    assert torch.allclose(s[:, :2], model.score_all(h).gather(1, items[:, :2].clamp(min=0)))
    assert torch.isinf(s[0, 2]) and s[0, 2] < 0
    assert torch.allclose(s[0, 1], h[0] @ model.item_emb.weight[8])


def test_cold_row_changes_only_with_pseudo_edges():
    td = toy_data()
    users = td.valid_users[:20]
    labels = Labels(users, np.full(len(users), COLD[0]), np.ones(len(users), np.float32),
                    *[np.zeros(0, np.int64)] * 3, np.zeros(0, np.float32))
    cfg = toy_config(use_sim=True, epochs=2)
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg, td.n_items).item_emb.weight.detach().clone()
    trained = train(td, cfg, labels, hook=lambda *_: None).model.item_emb.weight.detach()
    assert not torch.equal(trained[COLD[0] + 1], initial[COLD[0] + 1])  # labelled cold item: trained
    for item in COLD[1:]:
        assert torch.equal(trained[item + 1], initial[item + 1])  # unlabelled cold items: bit-identical
    assert not torch.equal(trained[td.sequences.row(0)[0] + 1], initial[td.sequences.row(0)[0] + 1])
    # With weight decay every row shrinks, including rows that never get a gradient (the docstring's caveat).
    decayed = train(td, cfg.with_(weight_decay=0.5), labels, hook=lambda *_: None).model.item_emb.weight.detach()
    assert not torch.equal(decayed[COLD[1] + 1], initial[COLD[1] + 1])


def test_label_rows_get_the_same_representation_bucketed_as_one_padded_window_each():
    td = toy_data()
    model = SASRec(td.n_items, 8, hidden=16, layers=2, heads=1, dropout=0.0).eval()
    rows = np.array([u for u in range(td.n_users) if td.fit.lengths[u] > 0] * 2)[::-1]  # repeats, any order
    with torch.no_grad():
        one_window = model.last_hidden(torch.as_tensor(windows(td.fit, rows, 8)))
        bucketed = label_hidden(model, td, rows, 8)
    assert bucketed.shape == one_window.shape
    assert torch.allclose(bucketed, one_window, atol=1e-5)
