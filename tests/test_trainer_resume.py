"""Checkpoints: a killed run resumes to the same weights; determinism; early stopping restores the best."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.trainer_toy import COLD, toy_config, toy_data
from trainer.dataset import Labels
from trainer.evaluate import validation_ndcg
from trainer.train import CheckpointMismatch, train


class Crash(RuntimeError):
    pass


def _labels(td):
    users = td.valid_users[:10]
    n = len(users)
    return Labels(users, np.full(n, COLD[0]), np.linspace(0.2, 1, n).astype(np.float32), users,
                  np.full(n, COLD[1]), np.full(n, 1), np.ones(n, np.float32), "test")


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    td = toy_data()
    labels = _labels(td)
    cfg = toy_config(epochs=3, use_sim=True, use_pair=True, dropout=0.3)  # dropout: torch RNG matters too
    full = train(td, cfg, labels, tmp_path / "full", hook=lambda *_: None)

    def crash_after_first(event, data):
        if event == "epoch" and data["epoch"] == 1:
            raise Crash
    with pytest.raises(Crash):
        train(td, cfg, labels, tmp_path / "crashed", hook=crash_after_first)
    assert (tmp_path / "crashed" / "last.pt").exists()
    assert not list((tmp_path / "crashed").glob("*.tmp"))
    resumed = train(td, cfg, labels, tmp_path / "crashed", hook=lambda *_: None)
    assert resumed.resumed_from == 1 and full.resumed_from is None
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert _same_weights(full.model, resumed.model)
    assert [h.main for h in full.history] == [h.main for h in resumed.history]
    last_full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    last_resumed = torch.load(tmp_path / "crashed" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(last_full[k], last_resumed[k]) for k in last_full)
    # a finished run is not trained again
    again = train(td, cfg, labels, tmp_path / "full", hook=lambda e, d: pytest.fail("trained") if e == "step" else None)
    assert _same_weights(again.model, full.model)


def test_a_different_seed_gives_different_weights_and_a_checkpoint_refuses_another_config(tmp_path):
    td = toy_data()
    a = train(td, toy_config(epochs=1), hook=lambda *_: None)
    b = train(td, toy_config(epochs=1, seed=1), hook=lambda *_: None)
    assert not _same_weights(a.model, b.model)
    train(td, toy_config(epochs=1), ckpt_dir=tmp_path, hook=lambda *_: None)
    with pytest.raises(CheckpointMismatch):
        train(td, toy_config(epochs=1, lr=1e-2), ckpt_dir=tmp_path, hook=lambda *_: None)


def test_early_stopping_restores_the_best_epoch():
    td = toy_data()
    cfg = toy_config(epochs=8, patience=2, lr=0.05, min_epochs=0)  # on this toy data validation peaks at epoch 3
    res = train(td, cfg, hook=lambda *_: None)
    scores = [h.val_ndcg for h in res.history]
    assert res.stopped_early and len(scores) == res.best_epoch + cfg.patience < cfg.epochs
    later = train(td, cfg.with_(min_epochs=6), hook=lambda *_: None)  # a plateau before min_epochs is no stop
    assert len(later.history) == 6 and [h.val_ndcg for h in later.history][:len(scores)] == scores
    assert res.best_metric == max(scores) and res.best_epoch == int(np.argmax(scores)) + 1
    assert validation_ndcg(res.model, td, cfg.val_k, cfg.max_len) == res.best_metric  # best weights, not last
