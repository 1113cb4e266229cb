"""The three SASRec objectives of thesis §4.3.5 and the switches that combine them.

* ``L_main``: listwise cross-entropy of the true next item (column 0) against ``k`` sampled negatives, at
  every real position of the window. It is averaged over positions.
* ``L_sim``: the same listwise pattern for pseudo edges ``(u, i, w)``. The user's representation (the last
  hidden state of their history) scores item ``i`` as the positive in column 0 against fresh negatives
  drawn for that user. Rows are combined as a
  weighted mean, ``sum(w * ce) / sum(w)``.
* ``L_pair``: for triplets ``(u, pos, neg, w)``, ``-log sigma(s_pos - s_neg)`` under the user's history,
  combined as a weighted mean.

``total = main + lambda_sim * sim + lambda_pair * pair``. A term is computed only when its switch is on,
its lambda is > 0 and there are labels for it. Otherwise it is reported as ``None``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.model import SeqModel


def listwise_ce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-row CE with the positive in column 0: ``logsumexp([pos, neg]) - pos``; -inf negatives drop out."""
    logits = torch.cat([pos.unsqueeze(-1), neg], dim=-1)
    return torch.logsumexp(logits, dim=-1) - pos


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def main_loss(model: SeqModel, h: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """``h`` ``[B, L, d]``; ``targets`` ``[B, L]`` item ids (-1 = no target); ``negatives`` ``[B, k]``."""
    real = targets >= 0
    pos = model.score_targets(h, targets)               # [B, L]
    neg = model.score(h, negatives)                     # [B, L, k]
    ce = listwise_ce(pos[real], neg[real])
    return ce.mean() if ce.numel() else h.sum() * 0.0


def sim_loss(model: SeqModel, h: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
    """Pseudo edges as extra positives: ``h`` ``[S, d]`` user representations, ``items`` ``[S]``,
    ``negatives`` ``[S, k]``."""
    pos = model.score(h, items[:, None])[:, 0]
    return weighted_mean(listwise_ce(pos, model.score(h, negatives)), weights)


def pair_loss(model: SeqModel, h: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
    """Weighted pairwise logistic loss ``-log sigma(s_pos - s_neg)`` for triplets; ``h`` ``[S, d]`` is each
    triplet's user representation."""
    s = model.score(h, torch.stack([pos, neg], dim=1))
    return weighted_mean(F.softplus(-(s[:, 0] - s[:, 1])), weights)


@dataclass(frozen=True)
class Objective:
    """Which terms are on (thesis Table 5.1: E0 none, E1 sim, E2 pair, E3 both) and their weights."""

    use_sim: bool = False
    use_pair: bool = False
    lambda_sim: float = 0.5
    lambda_pair: float = 0.5

    def wants_sim(self, n_edges: int) -> bool:
        return self.use_sim and self.lambda_sim > 0 and n_edges > 0

    def wants_pair(self, n_triplets: int) -> bool:
        return self.use_pair and self.lambda_pair > 0 and n_triplets > 0

    def total(self, main: torch.Tensor, sim: torch.Tensor | None, pair: torch.Tensor | None) -> torch.Tensor:
        out = main
        if sim is not None:
            out = out + self.lambda_sim * sim
        if pair is not None:
            out = out + self.lambda_pair * pair
        return out
