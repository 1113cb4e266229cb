"""Download the public Amazon review dumps (for users with internet access).

The downloads are streamed to ``<name>.part`` and renamed only after the gzip stream has been read to the
end, so an interrupted or truncated transfer never leaves a file that looks complete.
"""
from __future__ import annotations

import gzip
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from coldlabel.errors import FetchError

log = logging.getLogger(__name__)

# Public locations of the two editions (McAuley lab). ``base_url`` replaces the part before the file name.
EDITIONS = {
    "2014": {
        "base_url": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles",
        "files": ("reviews_{cat}_5.json.gz", "meta_{cat}.json.gz"),
    },
    "2018": {
        "base_url": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
        "files": ("categoryFilesSmall/{cat}_5.json.gz", "metaFiles2/meta_{cat}.json.gz"),
    },
}


def _verify_gzip(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError) as exc:
        raise FetchError(f"{path.name}: downloaded file is not a complete gzip stream ({exc})") from None


def fetch(category: str, raw_dir: Path, edition: str = "2014", base_url: str | None = None,
          timeout: float = 60.0, progress: Callable[[str, int, int | None], None] | None = None) -> list[Path]:
    """Download the reviews and metadata files of ``category`` into ``raw_dir``; existing files are kept."""
    if edition not in EDITIONS:
        raise FetchError(f"unknown edition {edition!r}; choose one of {sorted(EDITIONS)}")
    spec = EDITIONS[edition]
    base = (base_url or spec["base_url"]).rstrip("/")
    raw_dir.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    for pattern in spec["files"]:
        rel = pattern.format(cat=category)
        target = raw_dir / Path(rel).name
        if target.exists():
            log.info("%s already present, keeping it", target.name)
            done.append(target)
            continue
        url = f"{base}/{rel}"
        part = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                got = 0
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    got += len(chunk)
                    if progress:
                        progress(target.name, got, total)
            if total is not None and got != total:
                raise FetchError(f"{url}: connection closed after {got} of {total} bytes")
            _verify_gzip(part)
        except urllib.error.HTTPError as exc:
            part.unlink(missing_ok=True)
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason} (is {category!r} a {edition} category?)") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            part.unlink(missing_ok=True)
            raise FetchError(f"{url}: download failed: {getattr(exc, 'reason', exc)}") from None
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        log.info("downloaded %s (%d bytes)", target.name, got)
        done.append(target)
    return done
