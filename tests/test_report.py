"""The run report: numbers in the Markdown agree with the store; plots are real images."""
from coldlabel.data.workspace import Workspace
from coldlabel.store import Store
from coldlabel_testing.fake_server import FakeLLMServer
from labeler.report import PLOTS, write_report
from tests.test_pipeline import faulty, label, settings_with


def test_report_matches_the_store(tiny_root, tmp_path):
    users = sorted(u for u, seq in Workspace.of(tiny_root, "tiny").sequences.items() if seq)[:3]
    with FakeLLMServer(faulty("rerank", "empty", times=2)) as server, \
            Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        settings = settings_with(tiny_root, server)
        outs = [label(settings, store, u) for u in users]
        for o in outs:
            store.finish_user("r1", o.user_idx, o.counters)
        md = write_report(store, "r1", settings, tmp_path / "report").read_text()
    n_edges = sum(len(o.edges) for o in outs)
    n_trip = sum(len(o.triplets) for o in outs)
    assert f"**{n_edges} pseudo edges** for 3 users" in md
    assert f"**{n_trip} triplets**" in md
    # the first user's rerank got two empty answers: one fallback in the rerank row
    assert "| rerank | 3 | 1 (33%) | 0 |" in md
    assert f"| LLM edges | {n_edges} |" in md and f"| Two-Tower top-n | {n_edges} |" in md
    for name in PLOTS:
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<table>" in page and 'src="stages.png"' in page
