"""Readable logs: one line per event, time + level + area. Secrets never reach a log line."""
from __future__ import annotations

import logging
import os


def setup_logging(level: int = logging.INFO) -> None:
    level = getattr(logging, os.environ.get("COLDLABEL_LOG_LEVEL", ""), level)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "faiss", "faiss.loader", "openai", "urllib3",
                  "sentence_transformers", "filelock", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
