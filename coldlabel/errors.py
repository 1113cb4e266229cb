"""Every error coldlabel raises on purpose, in one place, under one base class.

A :class:`ColdlabelError` means "the input, the configuration or a service is not as it must be" and its
message says what to do; the CLI prints it as one line and exits with ``exit_code``. Anything else that
escapes is a bug and keeps its traceback. Lower layers raise these; only ``coldlabel.cli`` catches them.
"""
from __future__ import annotations


class ColdlabelError(Exception):
    """Base of all known errors. ``exit_code``: 1 for runtime problems, 2 for a bad configuration, 3 for a
    run that finished with labels too weak to trust (:class:`RunDegraded`). ``prefix`` starts the line the
    CLI prints."""

    exit_code = 1
    prefix = "error"


class Unavailable(ColdlabelError):
    """Infrastructure (the database, the broker's Redis) is away for now. Never the user's fault: a worker
    waits for it to come back instead of spending the user's retries, and never acknowledges a message whose
    outcome it could not record."""


# ---- configuration --------------------------------------------------------------------------------

class ConfigError(ColdlabelError):
    """A configuration problem, with a message that names the offending key."""

    exit_code = 2
    prefix = "config error"


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


class StoreUnavailable(StoreError, Unavailable):
    """The database cannot be reached right now (server down, network cut): transient, worth a retry."""


class RunNotFound(StoreError):
    """No run with that id."""


class RunError(ColdlabelError):
    """A run-level problem the user can act on (the message says what to do)."""


class DatasetChanged(RunError):
    """The dataset under a run is not the one the run started on (its fingerprint changed): a user index may
    now mean another person, so nothing more is labeled until the original inputs are back."""


class RunDegraded(RunError):
    """The run finished, but too many stage answers fell back or some users were dead-lettered."""

    exit_code = 3
    prefix = "warning"


class WorkerNotReady(ColdlabelError):
    """A worker found the store, the broker or the endpoint unreachable at start and did not start."""


# ---- LLM endpoints ---------------------------------------------------------------------------------

class EndpointError(ColdlabelError):
    """The endpoint could not answer after the client's retries (unreachable, rate limited, server error,
    timed out): transient, a circuit breaker pauses the run when it keeps happening."""


class EndpointRejected(EndpointError):
    """The endpoint refuses this configuration (HTTP 401/403/404, or 400 on the request's shape): retrying
    cannot help, so the run is paused at once with this message."""


class RequestRejected(EndpointError):
    """The endpoint refuses this one request (a prompt over the context length): only this user is
    dead-lettered, the run goes on."""


class LocalServerError(ColdlabelError):
    """The local LLM server could not be started (missing package, port taken, crashed, not ready)."""


class LimiterUnavailable(Unavailable):
    """The shared endpoint limiter (Redis) cannot be reached: transient, the user waits for it."""


# ---- training and experiment reports --------------------------------------------------------------

class TrainerError(ColdlabelError):
    """A training or report job that cannot go on as asked: a setting needs labels and none were named,
    a checkpoint belongs to another configuration, or there are no stored results to report."""
