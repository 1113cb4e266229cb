"""The rows of thesis Table 3.1/3.2 for a split dataset, and the thesis' own figures to compare with."""
from __future__ import annotations

from coldlabel.data.workspace import cold_items as strict_cold_items

TABLE_ROWS = (
    "Effective interactions (final)",
    "Training interactions (time split)",
    "Test interactions (time split)",
    "Training positives / weak positives",
    "Test positives / weak positives",
    "Cold items",
    "Cold users",
    "Cold-item ratio in unique test items",
    "Users in training split",
    "Users in test split",
    "Users appearing in both splits",
)


# Thesis Table 3.1 (Beauty) and 3.2 (Health), in TABLE_ROWS order, shown beside ours by `data stats --compare`.
THESIS_TABLES = {
    "beauty": [198502, 138951, 59551, 123498, 53022, 651, 2722, 6.37, 19641, 13400, 10678],
    "health": [345725, 242007, 103718, 217480, 95000, 926, 3740, 5.92, 34869, 25425, 21685],
}


def compute_stats(train: list[tuple], test: list[tuple]) -> dict[str, float]:
    """The rows of thesis Table 3.1/3.2 from split rows ``(user, item, weight)``; weight > 0 is a positive."""
    train_users = {u for u, _, _ in train}
    test_users = {u for u, _, _ in test}
    train_items = {i for _, i, _ in train}
    test_items = {i for _, i, _ in test}
    cold_items = strict_cold_items(train_items, test_items)
    values = [
        len(train) + len(test),
        len(train),
        len(test),
        sum(1 for *_, w in train if w > 0),
        sum(1 for *_, w in test if w > 0),
        len(cold_items),
        len(test_users - train_users),
        round(100.0 * len(cold_items) / max(len(test_items), 1), 2),
        len(train_users),
        len(test_users),
        len(train_users & test_users),
    ]
    return dict(zip(TABLE_ROWS, values))
