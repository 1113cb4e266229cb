"""The generator's knobs (``SynthConfig``), the named presets, and what a run returns (``SynthSummary``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MIN_REVIEWS = 5  # the 5-core property: every user and every item has at least this many reviews
TRAIN_RATIO = 0.7  # the global time split the planted cold items are defined against
DAY = 86400  # seconds; review and release times are whole days


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator. Time-shape knobs are in units of the whole time range (0 = start, 1 = end)."""
    name: str
    category: str  # the <Cat> in the file names
    taxonomy: str  # "beauty" | "health"
    n_users: int
    n_items: int
    n_leaves: int | None = None  # use a random subset of leaves (small presets keep several items per leaf)
    extra_reviews: float = 3.88  # mean reviews per user beyond the 5-core minimum
    count_shape: float = 0.7  # negative-binomial shape of that extra: smaller = heavier tail
    start_growth: float = 1.0  # user arrivals grow like exp(start_growth * t)
    window_median: float = 0.55  # median user activity window (lognormal, truncated at the end of data)
    window_sigma: float = 0.5
    cold_item_frac: float = 0.054  # share of items released after the 70 % cut: the planted strict cold items
    cold_release_span: float = 0.6  # cold items are released within this share of the test period
    first_day: str = "2004-01-01"
    last_day: str = "2014-07-23"
    explore: float = 0.2  # mean chance that a review falls outside the user's taste leaves
    popularity_sigma: float = 0.9  # lognormal item popularity
    leaf_sigma: float = 0.7  # lognormal leaf size / popularity
    decay_days: float = 1000.0  # item appeal halves roughly every 0.7 * decay_days after release
    brand_boost: float = 4.0
    attr_boost: float = 2.0
    items_per_brand: float = 8.0
    extra_meta_frac: float = 0.03  # metadata-only items (never reviewed), like the real meta dumps
    rating_shares: tuple[float, ...] = (0.048, 0.056, 0.11, 0.205, 0.581)  # 1..5 stars, real Beauty mix


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig("tiny", "Beauty", "beauty", n_users=200, n_items=150, n_leaves=12, cold_item_frac=0.06),
    "small": SynthConfig("small", "Beauty", "beauty", n_users=1_500, n_items=800, n_leaves=40),
    "beauty": SynthConfig("beauty", "Beauty", "beauty", n_users=22_363, n_items=12_101),
    "health": SynthConfig("health", "Health_and_Personal_Care", "health", n_users=38_609, n_items=18_534,
                          # Health users stay longer and arrive less late than Beauty's (Table 3.2: more users
                          # in both splits, fewer cold users), hence the flat arrivals and longer windows
                          extra_reviews=3.95, cold_item_frac=0.05, start_growth=-0.5, window_median=0.75,
                          window_sigma=0.3),
}


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote, and the headline counts of the dataset."""

    preset: str
    seed: int
    reviews_path: Path
    meta_path: Path
    truth_path: Path
    n_reviews: int
    n_users: int
    n_items: int  # items with reviews
    n_meta_items: int  # items in the metadata file (reviewed + metadata-only)
    n_cold_items: int  # planted strict cold items (released after the 70 % cut)
    split_unix_time: int  # unixReviewTime of the first test row
    seconds: float = field(default=0.0, compare=False)

    def __str__(self) -> str:
        return (f"{self.n_reviews:,} reviews, {self.n_users:,} users, {self.n_items:,} items, "
                f"{self.n_cold_items:,} cold items, {self.seconds:.1f}s")

