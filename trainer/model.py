"""SASRec (Kang & McAuley 2018) as a candidate re-ranker, and the base every sequential model shares.

Token convention: item ``i`` is token ``i + 1``; token 0 is padding. Sequences are **left-padded** to
``max_len`` so the most recent item always sits in the last position. Item ids elsewhere (targets,
candidates, negatives) are plain item indices with ``-1`` as padding.

Scoring shares the input item table: ``score(u, i) = <h_u, E[i + 1]>``, where ``h_u`` is the hidden state at
the last position.

Layout: pre-LN Transformer blocks (``x + Attn(LN(x))``, ``x + FFN(LN(x))``) with a final LayerNorm. Pre-LN
trains a little better than the original post-LN design in pmixer's SASRec.pytorch ablation and needs no
warm-up. Attention is causal and ignores padded keys. A padded query row attends to itself only, so it never
produces NaNs, and its output is zeroed.

Cold items: an item that never appears in a sequence, a negative or a label gets no gradient. With AdamW
and ``weight_decay == 0`` its embedding row then stays exactly at its initial value. With
``weight_decay > 0``, AdamW's decoupled decay shrinks every row, including rows that get no gradient.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SeqModel(nn.Module):
    """Item table and scoring shared by SASRec, GRU4Rec and BERT4Rec; subclasses define :meth:`encode`."""

    def __init__(self, n_items: int, hidden: int, extra_tokens: int = 0) -> None:
        super().__init__()
        self.n_items = n_items
        self.hidden = hidden
        self.item_emb = nn.Embedding(n_items + 1 + extra_tokens, hidden, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` tokens -> ``[B, L, d]`` hidden states (position t sees what the model may see)."""
        raise NotImplementedError

    def train_inputs(self, window: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """From ``[B, L + 1]`` left-padded tokens: (inputs ``[B, L]`` tokens, targets ``[B, L]`` item ids, -1 =
        no target). Next-item models predict token t+1 from positions <= t."""
        return window[:, :-1], window[:, 1:] - 1

    def last_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded history -> ``[B, d]``: the representation that scores the next item."""
        return self.encode(tokens)[:, -1]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_emb(items.clamp(min=-1) + 1)  # -1 -> padding row (zeros)

    def score(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``h`` ``[B, d]`` or ``[B, L, d]``; ``items`` ``[B, C]`` -> ``[B, C]`` or ``[B, L, C]``; -1 -> -inf."""
        vecs = self.item_vectors(items)                      # [B, C, d]
        if h.dim() == 2:
            out = torch.einsum("bd,bcd->bc", h, vecs)
            return out.masked_fill(items < 0, float("-inf"))
        out = torch.einsum("bld,bcd->blc", h, vecs)
        return out.masked_fill((items < 0)[:, None, :], float("-inf"))

    def score_targets(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``h`` ``[B, L, d]``, ``targets`` ``[B, L]`` -> ``[B, L]`` (one score per position)."""
        return (h * self.item_vectors(targets)).sum(-1)

    def score_all(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` -> ``[B, n_items]`` scores over the whole catalog."""
        return h @ self.item_emb.weight[1:self.n_items + 1].T


def attention_mask(tokens: torch.Tensor, causal: bool) -> torch.Tensor:
    """``[B, 1, L, L]`` bool, True = may attend: real keys (causally, if asked); pad queries see themselves."""
    length = tokens.shape[1]
    real = tokens > 0
    eye = torch.eye(length, dtype=torch.bool, device=tokens.device)
    allowed = real[:, None, :] | eye
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
    return allowed[:, None]


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    """Pre-LN Transformer block: attention and a GELU feed-forward (inner size 4·d), each residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        return x + self.drop(self.ffn(self.ln2(x)))


class TransformerEncoder(SeqModel):
    """Item + learned position embeddings, ``layers`` blocks, final LayerNorm; causal or bidirectional."""

    causal = True

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2, extra_tokens: int = 0) -> None:
        super().__init__(n_items, hidden, extra_tokens)
        self.max_len = max_len
        self.pos_emb = nn.Embedding(max_len, hidden)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.max_len}")
        real = (tokens > 0).unsqueeze(-1).to(self.pos_emb.weight.dtype)
        positions = torch.arange(self.max_len - length, self.max_len, device=tokens.device)
        x = self.item_emb(tokens) * math.sqrt(self.hidden) + self.pos_emb(positions)
        x = self.drop(x) * real
        mask = attention_mask(tokens, self.causal)
        for block in self.blocks:
            x = block(x, mask) * real
        return self.ln_f(x) * real


class SASRec(TransformerEncoder):
    """Causal self-attention next-item model; ``last_hidden`` reads the most recent position."""

    causal = True
