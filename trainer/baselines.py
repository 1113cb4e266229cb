"""Classic ID-only sequential baselines, written compactly on the same :class:`SeqModel` interface.

Both use the same data, split, negatives, listwise loss and evaluation as SASRec, so only the architecture
differs (thesis §5.2 / Chapter 6). Neither reads content, so a strict cold item keeps its random initial
embedding, and near-zero cold recall is the expected result.

* :class:`GRU4Rec` (Hidasi et al. 2016): item embedding -> dropout -> multi-layer GRU. The hidden state at
  position t scores item t+1 against the shared item table. Left padding is converted to packed sequences,
  so padding never enters the recurrence.
* :class:`BERT4Rec` (Sun et al. 2019): the bidirectional version of the Transformer encoder with a
  ``[MASK]`` token. Training is cloze: each real position is masked with probability ``mask_prob``, and the
  last real position when no other was. The loss predicts masked items against the user's sampled
  negatives, the same listwise CE as SASRec rather than the original full softmax. At inference a
  ``[MASK]`` is appended after the history (dropping the oldest item only when the history already
  fills ``max_len``), and its hidden state scores the next item.

The other baselines need no code of their own: Two-Tower alone is ``rerank_mode="tw"`` in
:func:`trainer.evaluate.evaluate`, and ID-only SASRec is setting E0 (no labels).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from trainer.model import SeqModel, TransformerEncoder


def _shift_index(lengths: torch.Tensor, length: int, to_front: bool) -> torch.Tensor:
    """Gather index that moves each row's last ``n`` (left-padded) entries to the front, or back again."""
    cols = torch.arange(length)[None, :]
    pad = (length - lengths)[:, None]
    return (cols + pad) % length if to_front else (cols - pad) % length


class GRU4Rec(SeqModel):
    def __init__(self, n_items: int, hidden: int = 64, layers: int = 1, dropout: float = 0.2) -> None:
        super().__init__(n_items, hidden)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        b, length = tokens.shape
        lengths = (tokens > 0).sum(1)
        front = _shift_index(lengths, length, to_front=True)
        x = self.drop(self.item_emb(tokens.gather(1, front)))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
        back = _shift_index(lengths, length, to_front=False)
        out = out.gather(1, back[:, :, None].expand(b, length, self.hidden))
        return out * (tokens > 0).unsqueeze(-1)


class BERT4Rec(TransformerEncoder):
    causal = False

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2, mask_prob: float = 0.2) -> None:
        super().__init__(n_items, max_len, hidden, layers, heads, dropout, extra_tokens=1)
        self.mask_token = n_items + 1
        self.mask_prob = mask_prob

    def train_inputs(self, window: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = window[:, -self.max_len:]  # a trimmed window may be shorter than max_len: keep all of it
        real = (tokens > 0).numpy()
        masked = real & (rng.random(real.shape) < self.mask_prob)
        none = ~masked.any(1) & real.any(1)
        masked[np.flatnonzero(none), -1] = True  # left padding: the last column is the newest item
        masked_t = torch.from_numpy(masked)
        inputs = tokens.masked_fill(masked_t, self.mask_token)
        targets = torch.where(masked_t, tokens - 1, torch.full_like(tokens, -1))
        return inputs, targets

    def last_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = torch.full((tokens.shape[0], 1), self.mask_token, dtype=tokens.dtype)
        return self.encode(torch.cat([tokens, mask], dim=1)[:, -self.max_len:])[:, -1]
