"""`data fetch` against a local HTTP server standing in for the public mirror."""
import gzip
import http.server
import threading
from functools import partial

import pytest

from coldlabel.data.fetch import fetch
from coldlabel.errors import FetchError


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if "truncated" in self.path:  # promise more bytes than we send, then hang up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b\x08\x00" + b"x" * 10)
            self.wfile.flush()
            self.connection.close()
            return
        super().do_GET()


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    (root / "truncated").mkdir(parents=True)
    for name in ("reviews_Toys_5.json.gz", "meta_Toys.json.gz"):
        with gzip.open(root / name, "wt") as fh:
            fh.write('{"asin": "A"}\n')
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_downloads_both_files(mirror, tmp_path):
    raw = tmp_path / "ws" / "raw"
    seen = []
    paths = fetch("Toys", raw, base_url=mirror, progress=lambda n, got, total: seen.append(n))
    assert sorted(p.name for p in paths) == ["meta_Toys.json.gz", "reviews_Toys_5.json.gz"]
    assert gzip.open(raw / "meta_Toys.json.gz", "rt").read() == '{"asin": "A"}\n'
    assert set(seen) == {"meta_Toys.json.gz", "reviews_Toys_5.json.gz"}
    # existing files are kept, not downloaded again
    (raw / "meta_Toys.json.gz").write_bytes(gzip.compress(b"local"))
    fetch("Toys", raw, base_url=mirror)
    assert gzip.open(raw / "meta_Toys.json.gz").read() == b"local"


def test_fetch_unknown_category_is_clear_and_leaves_nothing(mirror, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch("Nope", raw, base_url=mirror)
    assert list(raw.iterdir()) == []


def test_fetch_truncated_transfer_leaves_nothing(mirror, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(FetchError):
        fetch("Toys", raw, base_url=mirror + "/truncated")
    assert list(raw.iterdir()) == []


def test_fetch_unreachable_and_bad_edition(tmp_path):
    with pytest.raises(FetchError, match="download failed"):
        fetch("Toys", tmp_path / "raw", base_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(FetchError, match="unknown edition"):
        fetch("Toys", tmp_path / "raw", edition="1999")
