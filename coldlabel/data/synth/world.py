"""The state the generator's steps hand each other: catalogue, timeline, items, tastes.

Leaves, brands, items, users and review slots are integer indices into the lists and arrays here. The
per-user taste tables are fixed-width and padded: -1 for "no leaf / no brand", ``len(vocab)`` for "no
attribute" (``item_attr``'s last column is that padding and always 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coldlabel.data.synth.vocabulary import TaxonomyLeaf


@dataclass(frozen=True)
class Catalogue:
    """The leaves in play, how popular each is, and the brands of each level-2 area."""

    leaves: list[TaxonomyLeaf]
    leaf_pop: np.ndarray  # per leaf, sums to 1
    areas: list[str]  # sorted level-2 names of the leaves in play
    area_share: dict[str, float]  # summed leaf_pop per area
    brands: list[str]
    area_brands: dict[str, np.ndarray]  # area -> its brand indices; a brand belongs to one area
    n_reviewed: int  # items that get reviews
    n_extra: int  # metadata-only items (never reviewed), like the real meta dumps

    @property
    def n_all(self) -> int:
        return self.n_reviewed + self.n_extra


@dataclass(frozen=True)
class Timeline:
    """Each user's activity window, the review slots (user, day) inside it, and the 70/30 cut day."""

    n_days: int
    base_unix: int  # unix time of day 0
    u_start: np.ndarray  # per user, in [0, 1] (0 = first day, 1 = last day)
    u_end: np.ndarray
    slot_user: np.ndarray  # per slot; a user's slots are contiguous and in time order
    slot_day: np.ndarray
    slot_x: np.ndarray  # slot time in [0, 1]
    cut_day: int  # day of the first test row

    @property
    def n_slots(self) -> int:
        return int(self.slot_user.size)


@dataclass
class Items:
    """Every item (reviewed and metadata-only): leaf, brand, attributes, text, popularity, release day.

    ``release``, ``extra``, ``cold``, ``reviewed`` and ``by_leaf`` are placeholders until the generator's
    ``_plant_cold_items`` step fills them.
    """

    leaf: np.ndarray  # leaf index
    brand: np.ndarray  # brand index
    attrs: list[list[str]]  # feature attributes
    size: list[str]
    line: list[str]  # product line ("Daily") or ""
    pop: np.ndarray  # base popularity
    quality: np.ndarray  # rating bias
    title: list[str]
    description: list[str]
    release: np.ndarray  # release day
    extra: np.ndarray  # metadata-only: never reviewed
    cold: np.ndarray  # planted strict cold item: released after the cut day
    reviewed: np.ndarray  # indices of the reviewed items
    by_leaf: list[np.ndarray]  # reviewed items of each leaf


@dataclass(frozen=True)
class Tastes:
    """What each user likes: a few leaves whose weights drift over their window, brands and attributes."""

    leaf: np.ndarray  # (users, 6) leaf indices, -1 = none
    w0: np.ndarray  # (users, 6) leaf weights at the start of the user's window
    w1: np.ndarray  # (users, 6) leaf weights at its end
    brand: np.ndarray  # (users, 3) favourite brand indices, -1 = none
    attr: np.ndarray  # (users, 3) liked attribute indices into vocab, len(vocab) = none
    explore: np.ndarray  # per user: chance that a review falls outside the taste leaves
    vocab: list[str]  # every attribute option of the leaves in play, sorted
    item_attr: np.ndarray  # (items, len(vocab) + 1) int8: item has attribute
