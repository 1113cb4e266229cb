"""Readers for the Amazon review dumps, 2014 and 2018 editions, gzip or plain.

Both editions store one record per line. Reviews are JSON in both. Metadata is JSON in 2018 but a Python
literal (single quotes) in 2014, and the category field differs (``categories``: list of lists, vs
``category``: one flat list). A line that cannot be read is recorded with its file and line number and the
run goes on: one broken line in a 300k-line dump must neither crash the job nor vanish silently. A file that
cannot be read to its end (a truncated or corrupt gzip) is different: data is missing, so it stops the
job with a :class:`DataError` naming the file and the last line read.

File names (both the 5-core and the full dumps are accepted; the edition is told by the name unless given):

    2014: reviews_<Category>_5.json[.gz] or reviews_<Category>.json[.gz]  +  meta_<Category>.json[.gz]
    2018: <Category>_5.json[.gz]         or <Category>.json[.gz]          +  meta_<Category>.json[.gz]
"""
from __future__ import annotations

import ast
import gzip
import html
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from coldlabel.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
_SPACES = re.compile(r"\s+")
# A real tag starts with a letter (or "/" + letter, or "!"): "pets < 20 lb, fits > 10 lb" keeps its signs.
_TAGS = re.compile(r"<(?:/?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?|!--.*?--|![A-Za-z][^<>]*)>", re.S)
EDITIONS = ("2014", "2018")
_REVIEWS_NAME = re.compile(r"^(?P<prefix>reviews_)?(?P<cat>.+?)(?:_5)?\.json(?:\.gz)?$")
EXPECTED_NAMES = ("2014: reviews_<Category>_5.json[.gz] or reviews_<Category>.json[.gz]; "
                  "2018: <Category>_5.json[.gz] or <Category>.json[.gz]; "
                  "each beside its meta_<Category>.json[.gz]")


@dataclass(frozen=True)
class Review:
    user: str
    item: str
    rating: float
    ts: int


@dataclass(frozen=True)
class Meta:
    asin: str
    title: str
    description: str
    brand: str
    category_path: tuple[str, ...]


@dataclass
class LineProblems:
    """Malformed lines of one run: counted per file, the first few kept verbatim for the report."""

    keep: int = 50
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def add(self, path: Path, line_no: int, reason: str) -> None:
        self.counts[path.name] = self.counts.get(path.name, 0) + 1
        if len(self.examples) < self.keep:
            self.examples.append({"file": path.name, "line": line_no, "reason": reason})

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class RawFiles:
    reviews: Path
    meta: Path
    edition: str  # "2014" or "2018"
    category: str


def open_text(path: Path) -> IO[str]:
    """Open plain or gzip text by content, not by name (files get renamed; magic bytes don't lie)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == GZIP_MAGIC:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def find_raw_files(raw_dir: Path, edition: str | None = None) -> RawFiles:
    """Locate one reviews file and its metadata file in ``raw_dir``; the edition is ``edition`` when given,
    else told by the name (``reviews_`` prefix: 2014)."""
    if not raw_dir.is_dir():
        raise DataError(f"no raw data directory {raw_dir}; run `coldlabel data synth` or `coldlabel data fetch`, "
                        f"or pass your own files with `coldlabel data prepare --raw DIR`")
    if edition not in (None, "auto", *EDITIONS):
        raise DataError(f"unknown edition {edition!r}; choose 2014 or 2018")
    names = sorted(p.name for p in raw_dir.iterdir() if p.is_file())
    reviews = [(n, m) for n in names if not n.startswith("meta_") and (m := _REVIEWS_NAME.match(n))]
    if len(reviews) != 1:
        raise DataError(f"expected exactly one reviews file in {raw_dir} ({EXPECTED_NAMES}), "
                        f"found {[n for n, _ in reviews] or 'none'} among {names or 'no files'}")
    name, match = reviews[0]
    category = match.group("cat")
    metas = [n for n in names if re.fullmatch(rf"meta_{re.escape(category)}\.json(\.gz)?", n)]
    if not metas:
        raise DataError(f"no metadata file meta_{category}.json[.gz] in {raw_dir} for {name}")
    if edition in (None, "auto"):
        edition = "2014" if match.group("prefix") else "2018"
    return RawFiles(raw_dir / name, raw_dir / metas[0], edition, category)


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; a gzip stream that is cut off or corrupt is a DataError naming
    the file and the last good line (click would turn a bare EOFError into "Aborted!")."""
    n = 0
    try:
        with open_text(path) as fh:
            for n, line in enumerate(fh, 1):
                yield n, line
    except EOFError:
        raise DataError(f"{path}: the gzip stream ends early after line {n}: the file is truncated; "
                        "download or copy it again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:  # bad CRC, bad header, damaged deflate data
        raise DataError(f"{path}: corrupt gzip data after line {n} ({exc}); download or copy it again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read after line {n}: {exc.strerror or exc}") from None


def clean_text(value: object, limit: int | None = None) -> str:
    """Strip tags, entities, line breaks and runs of spaces; cut at a word boundary under ``limit``."""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    # Tags first, entities after: an escaped "&lt;b&gt;" is text that means "<b>", not a tag.
    text = _SPACES.sub(" ", html.unescape(_TAGS.sub(" ", str(value or "")))).strip()
    if limit is not None and len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0]
        text = (cut or text[:limit]).rstrip(" ,;.") + "…"
    return text


def _category_path(record: dict) -> tuple[str, ...]:
    """Longest category chain: 2014 ``categories`` is a list of chains, 2018 ``category`` is one chain."""
    if "categories" in record:
        chains = record.get("categories") or []
        if not isinstance(chains, list):
            raise ValueError("'categories' is not a list")
        chains = [c for c in chains if isinstance(c, list)]
        best = max(chains, key=len, default=[])
    else:
        best = record.get("category") or []
        if not isinstance(best, list):
            raise ValueError("'category' is not a list")
    return tuple(p for p in (clean_text(x) for x in best) if p)


def _parse_record(line: str, edition: str) -> dict:
    """One metadata record: JSON (2018), or JSON else a Python literal (2014)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        if edition == "2018":
            raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
        try:
            record = ast.literal_eval(line)  # the 2014 metadata dumps are Python literals
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise ValueError(f"neither JSON nor a Python literal (JSON: {exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"a line must hold an object, got {type(record).__name__}")
    return record


def read_reviews(path: Path, problems: LineProblems) -> Iterator[Review]:
    for n, line in _numbered_lines(path):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            user, item = r["reviewerID"], r["asin"]
            if not isinstance(user, str) or not isinstance(item, str) or not user or not item:
                raise ValueError("reviewerID/asin must be non-empty strings")
            rating = float(r["overall"])
            if not 0 <= rating <= 5:
                raise ValueError(f"rating {rating} outside 0..5")
            ts = int(r["unixReviewTime"])
        except json.JSONDecodeError as exc:
            problems.add(path, n, f"invalid JSON: {exc.msg}")
            continue
        except KeyError as exc:
            problems.add(path, n, f"missing field {exc}")
            continue
        except (TypeError, ValueError) as exc:
            problems.add(path, n, f"bad value: {exc}")
            continue
        yield Review(user, item, rating, ts)


def read_metadata(path: Path, problems: LineProblems, description_chars: int,
                  edition: str = "2014") -> Iterator[Meta]:
    for n, line in _numbered_lines(path):
        if not line.strip():
            continue
        try:
            r = _parse_record(line, edition)
            asin = r["asin"]
            if not isinstance(asin, str) or not asin:
                raise ValueError("asin must be a non-empty string")
            path_ = _category_path(r)
        except (ValueError, TypeError) as exc:
            problems.add(path, n, f"unreadable record: {str(exc)[:100]}")
            continue
        except KeyError as exc:
            problems.add(path, n, f"missing field {exc}")
            continue
        brand = clean_text(r.get("brand", ""))
        title = clean_text(r.get("title", ""))
        if not title:  # real dumps have untitled items; give them a readable stand-in
            title = " ".join(x for x in (brand, path_[-1] if path_ else "", asin) if x)
        yield Meta(asin, title, clean_text(r.get("description", ""), description_chars), brand, path_)
