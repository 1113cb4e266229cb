"""Each loss moves what it should, and the E0-E3 switches compute exactly the right terms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.support.trainer_toy import COLD, toy_config, toy_data
from trainer import losses
from trainer.batches import windows
from trainer.dataset import Labels
from trainer.model import SASRec
from trainer.train import train


def test_listwise_ce_by_hand_and_masked_negatives():
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[1.0, float("-inf")], [0.0, 0.0]])
    got = losses.listwise_ce(pos, neg)
    assert torch.allclose(got, torch.tensor([math.log(1 + math.exp(-1.0)), math.log(3.0)]))
    w = torch.tensor([0.0, 2.0])  # a zero-weight row does not count
    assert torch.isclose(losses.weighted_mean(got, w), got[1])


def _model_and_history(td, user):
    torch.manual_seed(0)
    model = SASRec(td.n_items, max_len=8, hidden=16, layers=1, dropout=0.0)
    hist = torch.as_tensor(windows(td.fit, np.array([user]), 8))
    return model, hist


def test_pair_loss_raises_the_margin_of_its_triplet():
    td = toy_data()
    user, pos, neg = int(td.valid_users[0]), COLD[0], 3
    model, hist = _model_and_history(td, user)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)

    def margin():
        with torch.no_grad():
            s = model.score_all(model.last_hidden(hist))[0]
        return float(s[pos] - s[neg])

    before = margin()
    for _ in range(10):
        loss = losses.pair_loss(model, model.last_hidden(hist), torch.tensor([pos]), torch.tensor([neg]),
                                torch.tensor([1.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert margin() > before + 0.5


def test_sim_loss_lifts_the_pseudo_item_for_that_user():
    td = toy_data()
    user, item = int(td.valid_users[0]), COLD[1]
    model, hist = _model_and_history(td, user)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    negatives = torch.as_tensor(td.neg_pool.row(user)[:10]).long()[None, :]

    def rank():
        with torch.no_grad():
            s = model.score_all(model.last_hidden(hist))[0]
        return int((s > s[item]).sum())

    before = rank()
    assert before > 0
    for _ in range(10):
        loss = losses.sim_loss(model, model.last_hidden(hist), torch.tensor([item]), negatives, torch.tensor([1.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert rank() == 0  # now above every other item for this user, not only above its 10 negatives


def _labels(td):
    users = td.valid_users[:12]
    n = len(users)
    return Labels(users, np.full(n, COLD[0]), np.ones(n, np.float32), users, np.full(n, COLD[1]),
                  np.full(n, 2), np.ones(n, np.float32), "test")


@pytest.mark.parametrize("use_sim,use_pair", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["E0", "E1", "E2", "E3"])
def test_switches_wire_exactly_the_right_losses(monkeypatch, use_sim, use_pair):
    td = toy_data()
    calls = {"sim": 0, "pair": 0}
    for name in calls:
        real = getattr(losses, f"{name}_loss")

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(losses, f"{name}_loss", spy)
    cfg = toy_config(epochs=1, use_sim=use_sim, use_pair=use_pair, lambda_sim=0.5, lambda_pair=0.7)
    steps = []
    report = train(td, cfg, _labels(td), hook=lambda e, d: steps.append(d) if e == "step" else None).history[0]
    assert calls == {"sim": len(steps) * use_sim, "pair": len(steps) * use_pair} and len(steps) > 0
    assert (report.sim is not None) == use_sim and (report.pair is not None) == use_pair
    expected = report.main + 0.5 * (report.sim or 0.0) + 0.7 * (report.pair or 0.0)
    assert report.total == pytest.approx(expected, rel=1e-5)


def test_a_switch_without_labels_or_weight_computes_nothing(monkeypatch):
    td = toy_data()
    monkeypatch.setattr(losses, "sim_loss", lambda *a, **k: pytest.fail("sim_loss must not run"))
    monkeypatch.setattr(losses, "pair_loss", lambda *a, **k: pytest.fail("pair_loss must not run"))
    report = train(td, toy_config(epochs=1, use_sim=True, use_pair=True), Labels.empty(), hook=lambda *_: None)
    assert report.history[0].sim is None and report.history[0].pair is None
    report = train(td, toy_config(epochs=1, use_sim=True, use_pair=True, lambda_sim=0.0, lambda_pair=0.0),
                   _labels(td), hook=lambda *_: None)
    assert report.history[0].sim is None and report.history[0].pair is None
