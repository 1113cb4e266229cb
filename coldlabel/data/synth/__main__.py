"""``python -m coldlabel.data.synth PRESET OUT_DIR [SEED]``: write one synthetic dataset, with progress."""
from __future__ import annotations

import sys
from pathlib import Path

from coldlabel.data.synth.generate import generate


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        raise SystemExit("usage: python -m coldlabel.data.synth PRESET OUT_DIR [SEED]")
    print(generate(args[0], Path(args[1]), int(args[2]) if len(args) == 3 else 0, progress=True))


if __name__ == "__main__":
    main()
