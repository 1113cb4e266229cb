"""Windows, the validation slice and the negative sampler."""
from __future__ import annotations

import numpy as np

from tests.support.trainer_toy import COLD, toy_data
from trainer.batches import (
    LabelDraw,
    NegativeSampler,
    cold_in_batch_negatives,
    fitting_users,
    gather,
    trim,
    user_batches,
    windows,
)
from trainer.dataset import Ragged, make_training_data


def test_windows_left_pad_and_truncate():
    rg = Ragged.from_rows({0: [4, 5, 6], 2: [1, 2, 3, 4, 5, 6, 7]}, 3)
    got = windows(rg, np.array([0, 1, 2]), 4)
    assert got.tolist() == [[0, 5, 6, 7], [0, 0, 0, 0], [5, 6, 7, 8]]  # tokens are item + 1
    owner, values = gather(rg, np.array([2, 0]))
    assert owner.tolist() == [0] * 7 + [1] * 3 and values.tolist() == [1, 2, 3, 4, 5, 6, 7, 4, 5, 6]


def test_validation_slice_holds_out_each_valid_users_last_training_item():
    td = make_training_data(4, 10, {0: [1, 2, 3], 1: [4, 5], 2: [6]}, {0: [1, 2, 3, 9], 1: [4, 5], 2: [6]}, [])
    assert td.valid_users.tolist() == [0, 1]
    assert td.val_users.tolist() == [0, 1] and td.val_targets.tolist() == [3, 5]
    assert [td.fit.row(u).tolist() for u in range(4)] == [[1, 2], [4], [6], []]
    assert fitting_users(td).tolist() == [0]  # only user 0 keeps a (prefix, next) pair to fit on


def test_negative_pool_excludes_seen_and_cold():
    td = toy_data()
    for u in range(td.n_users):
        pool = set(td.neg_pool.row(u).tolist())
        assert not pool & set(td.seen.row(u).tolist()) and not pool & set(COLD)


def test_sampler_draws_from_the_pool_first_and_tops_up_uniformly():
    td = toy_data()
    sampler = NegativeSampler(td)
    users = np.arange(td.n_users)
    small = sampler.sample(users, 5, np.random.default_rng(0))
    for u, row in zip(users, small):
        assert set(row.tolist()) <= set(td.neg_pool.row(u).tolist())  # enough pool: only pool items
        assert len(set(row.tolist())) == 5
    big = sampler.sample(users, 30, np.random.default_rng(0))  # pools hold < 30: top-up needed
    for u, row in zip(users, big):
        pool, seen = set(td.neg_pool.row(u).tolist()), set(td.seen.row(u).tolist())
        valid = row[row >= 0].tolist()
        assert pool <= set(valid)  # the whole pool is used before anything else
        assert not set(valid) & seen and not set(valid) & set(COLD)
        assert len(set(valid)) == len(valid)  # no duplicates
        allowed = td.n_items - len(COLD) - len(seen)
        assert len(valid) == min(30, allowed)  # -1 only where no allowed item is left
    again = sampler.sample(users, 30, np.random.default_rng(0))
    assert np.array_equal(big, again)  # seeded


def test_sampler_keeps_the_excluded_positive_out():
    td = toy_data()
    users = np.repeat(td.valid_users[:4], 50)
    exclude = np.array([int(td.neg_pool.row(u)[0]) for u in users])
    out = NegativeSampler(td).sample(users, 20, np.random.default_rng(1), exclude=exclude)
    assert not (out == exclude[:, None]).any()
    out_all = NegativeSampler(td).sample(users, 34, np.random.default_rng(1), exclude=exclude)
    assert not (out_all == exclude[:, None]).any()  # also in the uniform top-up


def test_bucketed_epoch_visits_every_user_once_in_similar_length_batches():
    td = toy_data()
    users = fitting_users(td)
    batches = list(user_batches(users, 8, np.random.default_rng(0), td.fit.lengths, pool=2))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == sorted(users.tolist()) and all(len(b) <= 8 for b in batches)
    spread = np.mean([np.ptp(td.fit.lengths[b]) for b in batches])
    plain = list(user_batches(users, 8, np.random.default_rng(0)))
    assert spread < np.mean([np.ptp(td.fit.lengths[b]) for b in plain])
    assert [b.tolist() for b in user_batches(users, 8, np.random.default_rng(0), td.fit.lengths, pool=2)] == \
        [b.tolist() for b in batches]  # seeded
    assert trim(np.array([[0, 0, 3], [0, 2, 5]])).tolist() == [[0, 3], [2, 5]]
    assert trim(np.zeros((2, 4), dtype=int), keep=2).shape == (2, 2)


def test_cold_in_batch_negatives_are_other_users_cold_labels_never_the_users_own():
    n_items = 10
    cold = np.zeros(n_items, dtype=bool)
    cold[[7, 8, 9]] = True
    users, items = np.array([0, 1, 2, 2]), np.array([7, 8, 9, 3])  # item 3 is warm
    keys = np.sort(np.r_[users * n_items + items, 0 * n_items + 8])  # user 0 also labels 8 (in another batch)
    neg = cold_in_batch_negatives(users, items, 50, np.random.default_rng(0), cold, keys, n_items)
    assert neg.shape == (4, 50)
    assert set(neg[0].tolist()) == {-1, 9}       # not 7, 8 (its own) nor 3 (warm)
    assert set(neg[1].tolist()) == {-1, 7, 9}
    assert set(neg[2].tolist()) == {-1, 7, 8} == set(neg[3].tolist())
    assert (cold_in_batch_negatives(users[:1], items[:1], 5, np.random.default_rng(0), cold, keys, n_items)
            == -1).all()


def test_label_draw_takes_whole_users_within_the_cap_and_reaches_every_label():
    edge_users = np.array([5, 1, 5, 2, 5, 1, 9, 9, 9, 9])
    trip_users = np.array([1, 5, 7])             # user 7 has a triplet but no edge
    draw = LabelDraw(edge_users, trip_users)
    rng = np.random.default_rng(0)
    seen_e, seen_t = set(), set()
    for _ in range(200):
        e, t = draw.draw(5, rng)
        users = set(edge_users[e]) | set(trip_users[t])
        assert (len(e) <= 5 and len(t) <= 5) or len(users) == 1   # one user always comes, even over the cap
        for u in users:                                              # all of each drawn user's labels
            assert set(np.flatnonzero(edge_users == u)) <= set(e.tolist())
            assert set(np.flatnonzero(trip_users == u)) <= set(t.tolist())
        seen_e |= set(e.tolist())
        seen_t |= set(t.tolist())
    assert seen_e == set(range(len(edge_users))) and seen_t == set(range(len(trip_users)))
    assert [x.tolist() for x in LabelDraw(edge_users, trip_users).draw(5, np.random.default_rng(3))] == \
        [x.tolist() for x in LabelDraw(edge_users, trip_users).draw(5, np.random.default_rng(3))]  # seeded
    big = LabelDraw(np.array([4] * 7), np.array([], dtype=np.int64)).draw(5, rng)
    assert len(big[0]) == 7  # a user with more edges than the cap still comes whole
