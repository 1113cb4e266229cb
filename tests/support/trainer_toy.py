"""A small synthetic TrainingData for trainer tests (no files, builds in milliseconds)."""
from __future__ import annotations

import numpy as np

from trainer.config import TrainConfig
from trainer.dataset import TrainingData, make_training_data

N_USERS, N_ITEMS = 48, 40
COLD = (35, 36, 37, 38, 39)


def toy_data(seed: int = 0, n_users: int = N_USERS, n_items: int = N_ITEMS, cold=COLD) -> TrainingData:
    """Users with 2..8 warm items each (a few with one item); every user's Two-Tower 'candidates' are a
    random permutation of the catalog, so the negative pool must filter out seen and cold items."""
    rng = np.random.default_rng(seed)
    warm = [i for i in range(n_items) if i not in set(cold)]
    seqs = {u: rng.choice(warm, size=int(rng.integers(2, 9)), replace=False).tolist() for u in range(n_users - 3)}
    for u in range(n_users - 3, n_users):  # short histories: not valid sequence users
        seqs[u] = [warm[u % len(warm)]]
    cands = {u: rng.permutation(n_items).tolist()[:25] for u in range(n_users)}
    return make_training_data(n_users, n_items, seqs, seqs, cold, cands, fingerprint=f"toy{seed}")


def toy_config(**changes) -> TrainConfig:
    return TrainConfig(max_len=8, batch_size=16, negatives=10, epochs=2, hidden=16, layers=1, heads=1,
                       dropout=0.1, lr=3e-3, patience=0).with_(**changes)
