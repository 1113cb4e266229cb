"""Every error coldlabel raises on purpose, in one place, under one base class.

A :class:`ColdlabelError` means "the input, the configuration or a service is not as it must be" and its
message says what to do; the CLI prints it as one line and exits with ``exit_code``. Anything else that
escapes is a bug and keeps its traceback. Lower layers raise these; only ``coldlabel.cli`` catches them.
"""
from __future__ import annotations


class ColdlabelError(Exception):
    """Base of all known errors. ``exit_code``: 1 for runtime problems, 2 for a bad configuration."""

    exit_code = 1


# ---- configuration --------------------------------------------------------------------------------

class ConfigError(ColdlabelError):
    """A configuration problem, with a message that names the offending key."""

    exit_code = 2


# ---- data: raw files, processed workspace, retrieval artefacts -------------------------------------

class DataError(ColdlabelError):
    """Raw input files that cannot be used (missing, wrongly named, unreadable, empty)."""


class FetchError(DataError):
    """A public dump could not be downloaded."""


class WorkspaceError(ColdlabelError):
    """A missing or corrupted workspace artefact; the message says which file and what to run."""


class ArtefactError(WorkspaceError):
    """A retrieval artefact is missing, corrupted, stale or inconsistent with its meta.json."""


class EncoderError(ColdlabelError):
    """The offline encoder model cannot be found or loaded."""


# ---- the SQL store and runs -----------------------------------------------------------------------

class StoreError(ColdlabelError):
    """A store problem the user can act on; the message says what is wrong and what to run."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (server down, network cut): transient, worth a retry."""


class RunNotFound(StoreError):
    """No run with that id."""


class RunError(ColdlabelError):
    """A run-level problem the user can act on (the message says what to do)."""


# ---- LLM endpoints ---------------------------------------------------------------------------------

class EndpointError(ColdlabelError):
    """The endpoint could not answer (after retries, or it rejected the request outright)."""


class LocalServerError(ColdlabelError):
    """The local LLM server could not be started (missing package, port taken, crashed, not ready)."""


class LimiterUnavailable(ColdlabelError):
    """The shared endpoint limiter (Redis) cannot be reached: transient, the user is retried."""
