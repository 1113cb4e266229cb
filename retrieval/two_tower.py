"""The Two-Tower retrieval backbone (thesis §4.1, eq. 4.3 and 4.4).

Each tower is an ID embedding plus a linear projection of the fixed MiniLM content vector, summed and
L2-normalised into a shared ``tt_dim`` space. Training is in-batch-negative cross-entropy over the
*training* positives, each row weighted by its interaction weight (1.0 strong, 0.3 weak).

Export zeroes the ID part of every item that never had a training positive (its ID embedding never got a
gradient, so it is just random init): those vectors are ``norm(W c_i)``, the content projection only
(eq. 4.4). All strict cold items are among them; which items they are is decided from the training split
alone. Users without training positives have a zero content vector and an untrained ID, so they export as
zero vectors and are never given candidates.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TwoTower(nn.Module):
    def __init__(self, user_content: np.ndarray, item_content: np.ndarray, dim: int):
        super().__init__()
        content_dim = item_content.shape[1]
        self.user_id = nn.Embedding(user_content.shape[0], dim)
        self.item_id = nn.Embedding(item_content.shape[0], dim)
        self.user_proj = nn.Linear(content_dim, dim, bias=False)
        self.item_proj = nn.Linear(content_dim, dim, bias=False)
        # Small ID init (nanoGPT style) so the content projection leads until IDs have learned something.
        nn.init.normal_(self.user_id.weight, std=0.02)
        nn.init.normal_(self.item_id.weight, std=0.02)
        # Content vectors are inputs, not parameters; not saved with the weights (they live in content/).
        self.register_buffer("user_content", torch.from_numpy(user_content), persistent=False)
        self.register_buffer("item_content", torch.from_numpy(item_content), persistent=False)

    def users(self, idx: torch.Tensor, id_mask: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.user_id(idx) if id_mask is None else self.user_id(idx) * id_mask[idx, None]
        return F.normalize(ids + self.user_proj(self.user_content[idx]), dim=-1)

    def items(self, idx: torch.Tensor, id_mask: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.item_id(idx) if id_mask is None else self.item_id(idx) * id_mask[idx, None]
        return F.normalize(ids + self.item_proj(self.item_content[idx]), dim=-1)

    def loss(self, u: torch.Tensor, i: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
        """Eq. 4.3: (1/B) sum_b w_b CE(S_b, b), S = U I^T / temperature; other rows' items are negatives."""
        scores = self.users(u) @ self.items(i).T / temperature
        ce = F.cross_entropy(scores, torch.arange(len(u)), reduction="none")
        return (w * ce).mean()


@dataclass
class TrainResult:
    model: TwoTower
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    trained_users: int = 0
    trained_items: int = 0


def train(user_content: np.ndarray, item_content: np.ndarray, users: np.ndarray, items: np.ndarray,
          weights: np.ndarray, *, dim: int, epochs: int, lr: float, batch_size: int, temperature: float,
          seed: int, on_epoch: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train on positive rows ``(users[k], items[k], weights[k])`` and export all vectors.

    Rows must be training positives only (weight > 0); the caller filters the split.
    """
    if len(users) == 0:
        raise ValueError("Two-Tower: no training positives to learn from")
    torch.manual_seed(seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        model = TwoTower(user_content.astype(np.float32), item_content.astype(np.float32), dim)
        try:  # the fused CPU kernel cuts the optimizer step (dense over all ID rows) by about half
            opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
        except (RuntimeError, TypeError):  # pragma: no cover - older torch builds
            opt = torch.optim.AdamW(model.parameters(), lr=lr)
        u_all = torch.as_tensor(users, dtype=torch.long)
        i_all = torch.as_tensor(items, dtype=torch.long)
        w_all = torch.as_tensor(weights, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(u_all), generator=gen)
            total, batches = 0.0, 0
            for start in range(0, len(order), batch_size):
                b = order[start:start + batch_size]
                if len(b) < 2:  # a single row has no in-batch negative
                    continue
                loss = model.loss(u_all[b], i_all[b], w_all[b], temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                batches += 1
            losses.append(total / max(batches, 1))
            if on_epoch:
                on_epoch(epoch + 1, losses[-1])
        user_vecs, item_vecs, n_u, n_i = export(model, users, items)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    return TrainResult(model, user_vecs, item_vecs, losses, n_u, n_i)


def export(model: TwoTower, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """All user and item vectors; ID parts that were never trained are zeroed (eq. 4.4)."""
    n_users, n_items = model.user_id.num_embeddings, model.item_id.num_embeddings
    user_mask = torch.zeros(n_users)
    user_mask[torch.as_tensor(np.unique(users), dtype=torch.long)] = 1.0
    item_mask = torch.zeros(n_items)
    item_mask[torch.as_tensor(np.unique(items), dtype=torch.long)] = 1.0
    model.eval()
    with torch.no_grad():
        u = model.users(torch.arange(n_users), user_mask)
        i = model.items(torch.arange(n_items), item_mask)
    return (u.numpy().astype(np.float32), i.numpy().astype(np.float32),
            int(user_mask.sum()), int(item_mask.sum()))
