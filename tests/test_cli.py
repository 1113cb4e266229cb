"""The `coldlabel` command as a user runs it: data commands end to end, and one-line errors."""
import subprocess
import sys

import pytest

COLDLABEL = [sys.executable, "-c", "from coldlabel.cli import main; main()"]


def run(*args, root):
    return subprocess.run([*COLDLABEL, "--set", f"data.root={root}", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # `coldlabel` subprocesses (each imports torch and the LLM client)
def test_synth_prepare_stats_through_the_cli(tmp_path):
    assert run("data", "synth", "--preset", "tiny", "-d", "t", root=tmp_path).returncode == 0
    first = run("data", "prepare", "-d", "t", root=tmp_path)
    assert first.returncode == 0 and "Cold items" in first.stdout
    again = run("data", "prepare", "-d", "t", root=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout
    stats = run("data", "stats", "-d", "t", "--compare", "beauty", root=tmp_path)
    assert stats.returncode == 0 and "Thesis (beauty)" in stats.stdout and "198,502" in stats.stdout


@pytest.mark.slow  # `coldlabel` subprocesses (each imports torch and the LLM client)
def test_user_errors_are_one_line_not_tracebacks(tmp_path):
    missing = run("label", "user", "0", "-d", "nope", root=tmp_path)
    assert missing.returncode == 1
    assert "is missing; run `coldlabel data prepare" in missing.stderr and "Traceback" not in missing.stderr
    bad = run("--set", "labeler.top_k=3", "data", "stats", "-d", "x", root=tmp_path)
    assert bad.returncode == 2 and "labeler.top_k: unknown key" in bad.stderr and "Traceback" not in bad.stderr
