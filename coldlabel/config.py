"""One typed settings object for the whole system.

Precedence, lowest first: the packaged ``defaults.toml`` (thesis defaults) → a user TOML file
(``--config`` or ``COLDLABEL_CONFIG``) → env vars ``COLDLABEL_<SECTION>__<KEY>`` → ``--set section.key=value``
flags. Unknown keys and wrong types are rejected with an error that names the key, because a typo in a
labeling config silently falling back to a default would waste hours of LLM time.
"""
from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coldlabel.errors import ConfigError

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "COLDLABEL_"
NO_KEY = "not-needed"  # what is sent when an endpoint has no key (the SDK insists on one); nothing to hide


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class DataSettings(_Section):
    root: str = "data"
    edition: Literal["auto", "2014", "2018"] = "auto"
    train_ratio: float = Field(0.7, gt=0, lt=1)
    strong_rating: float = 4
    strong_weight: float = Field(1.0, ge=0)
    weak_rating: float = 3
    weak_weight: float = Field(0.3, ge=0)
    description_chars: int = Field(200, ge=0)
    category_levels: list[int] = [1, 2]
    subcategory_levels: list[int] = [3, 4]


class SynthSettings(_Section):
    preset: str = "small"
    seed: int = 0


class RetrievalSettings(_Section):
    encoder_model: str = "all-MiniLM-L6-v2"
    encoder_batch_size: int = Field(256, ge=1)
    encoder_max_length: int = Field(128, ge=8)
    user_history: int = Field(50, ge=1)
    tt_dim: int = Field(64, ge=2)
    tt_epochs: int = Field(50, ge=1)
    tt_lr: float = Field(3e-4, gt=0)
    tt_batch_size: int = Field(1024, ge=2)
    tt_temperature: float = Field(0.05, gt=0)
    seed: int = 0
    candidates: int = Field(2000, ge=1)
    max_leaf_size: int = Field(200, ge=2)
    kmeans_iters: int = Field(10, ge=1)
    interest_leaves: int = Field(5, ge=1)
    evidence_k: int = Field(3, ge=0)
    evidence_min_sim: float = 0.35


class LabelerSettings(_Section):
    endpoint: str = "local"
    prompt_version: str = "v1"
    constrained: bool = True
    history_items: int = Field(20, ge=1)
    top_k_categories: int = Field(3, ge=1)
    top_k_subcategories: int = Field(8, ge=1)
    max_candidates_per_subcategory: int = Field(80, ge=1)
    items_per_subcategory: int = Field(5, ge=1)
    shuffle_candidates: bool = True
    final_top_k: int = Field(10, ge=1)
    min_score: float = 2
    score_scale: float = Field(5, gt=0)
    max_triplets: int = Field(3, ge=0)
    fallback_weight: float = Field(0.1, ge=0, le=1)
    flagged_items: Literal["keep", "downweight", "drop"] = "downweight"
    flagged_weight: float = Field(0.1, ge=0, le=1)
    format_retries: int = Field(1, ge=0)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(512, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    request_deadline_s: float = Field(300.0, gt=0)
    max_fallback_share: float = Field(0.5, ge=0, le=1)
    seed: int = 0  # the builtin labelers' picks (random, oracle)
    oracle_precision: float = Field(0.6, ge=0, le=1)  # the oracle's chance of a planted-taste pick
    user_order: Literal["index", "recent"] = "index"  # which N users `--users N` takes (see defaults.toml)


class TransportSettings(_Section):
    max_attempts: int = Field(6, ge=1)
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    circuit_breaker_failures: int = Field(5, ge=1)


Dialect = Literal["vllm", "llamacpp", "openai", "plain", "builtin"]  # builtin: no LLM (labeler/builtin.py)


class EndpointSettings(_Section):
    base_url: str
    model: str
    dialect: Dialect = "plain"
    api_key_env: str = ""
    concurrency: int = Field(1, ge=1)
    requests_per_minute: float = Field(0, ge=0)

    def api_key(self) -> str:
        """The key is read from the named env var at call time and never stored in config or logs."""
        if not self.api_key_env:
            return NO_KEY
        return os.environ.get(self.api_key_env, "") or NO_KEY


class StoreSettings(_Section):
    url: str = ""


class WorkerSettings(_Section):
    broker_url: str = ""
    pool: Literal["threads", "prefork", "solo", "gevent", "eventlet"] = "threads"
    concurrency: int = Field(8, ge=1)
    inline_concurrency: int = Field(4, ge=1)
    visibility_timeout_s: int = Field(600, ge=1)  # a backstop: claims heal through leases (lease_s)
    max_task_retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(5, ge=0)
    soft_shutdown_timeout_s: float = Field(60, ge=0)  # on SIGTERM: finish in-flight users, then requeue
    slot_lease_s: float = Field(30, gt=0)  # an endpoint slot held by a dead worker frees itself after this
    lease_s: float = Field(30, gt=0)  # a user's claim lasts this long unless its worker renews it
    reap_interval_s: float = Field(15, gt=0)  # how often expired claims are looked for and re-enqueued
    store_outage_s: float = Field(900, ge=0)  # how long a user waits for the store before giving back its message
    startup_timeout_s: float = Field(30, ge=0)  # `coldlabel worker` waits this long for store, broker, endpoint


class TrainerSettings(_Section):
    max_len: int = Field(50, ge=2)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(30, ge=1)
    hidden: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    negatives: int = Field(100, ge=1)
    lambda_sim: float = Field(0.5, ge=0)
    lambda_pair: float = Field(0.5, ge=0)
    rerank_mode: Literal["sas", "tw", "hybrid"] = "hybrid"
    hybrid_alpha: float = Field(0.5, ge=0, le=1)
    ks: list[int] = [5, 10, 20]
    seed: int = 0
    patience: int = Field(3, ge=0)
    min_epochs: int = Field(10, ge=0)
    val_k: int = Field(10, ge=1)
    mask_prob: float = Field(0.2, gt=0, lt=1)
    sim_cold_negatives: int = Field(0, ge=0)


class Settings(_Section):
    data: DataSettings = DataSettings()
    synth: SynthSettings = SynthSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    labeler: LabelerSettings = LabelerSettings()
    transport: TransportSettings = TransportSettings()
    endpoints: dict[str, EndpointSettings] = {}
    store: StoreSettings = StoreSettings()
    workers: WorkerSettings = WorkerSettings()
    trainer: TrainerSettings = TrainerSettings()

    @field_validator("endpoints")
    @classmethod
    def _endpoint_names(cls, v: dict[str, EndpointSettings]) -> dict[str, EndpointSettings]:
        for name in v:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"endpoint name {name!r} must be alphanumeric (with - or _)")
        return v

    # ---- derived values -------------------------------------------------------------------------
    def endpoint(self, name: str | None = None) -> EndpointSettings:
        name = name or self.labeler.endpoint
        if name not in self.endpoints:
            known = ", ".join(sorted(self.endpoints)) or "none"
            raise ConfigError(f"labeler.endpoint: unknown endpoint {name!r} (configured: {known})")
        return self.endpoints[name]

    def store_url(self) -> str:
        if self.store.url:
            return self.store.url
        root = Path(self.data.root).resolve()
        return f"sqlite:///{root / 'coldlabel.db'}"

    def dataset_dir(self, dataset: str) -> Path:
        return Path(self.data.root) / dataset

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of the named sections (all when none), for artefact metadata."""
        dump = self.model_dump()
        chosen = {k: dump[k] for k in (sections or dump.keys())}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


# ---- loading --------------------------------------------------------------------------------------

def _deep_merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_scalar(text: str) -> Any:
    """Parse an env/flag value as a TOML value; bare words stay strings (``local`` → "local")."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(tree: dict, dotted: str, value: Any, origin: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"{origin}: {dotted!r} must look like section.key")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {dotted!r} goes through a non-table value")
    node[parts[-1]] = value


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _relative_to_file(tree: dict, path: Path) -> dict:
    """A relative ``data.root`` in a config file means "next to this file", wherever the command runs from
    (otherwise the same file would name a different workspace in every directory)."""
    data = tree.get("data")
    root = data.get("root") if isinstance(data, dict) else None
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
        data["root"] = os.path.normpath(path.expanduser().absolute().parent / root)
    return tree


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    out = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
        out.append((dotted, _parse_scalar(raw), f"env {name}"))
    return out


def load_settings(
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    command_defaults: list[str] | None = None,
) -> Settings:
    """Build the settings: defaults → command defaults → file → env → ``section.key=value`` overrides.

    ``command_defaults`` are a command's own starting values (the demo's small caps): anything the user
    sets in a file, env var or flag wins over them.
    """
    environ = os.environ if environ is None else environ
    tree = _read_toml(DEFAULTS_PATH)
    for item in command_defaults or []:
        dotted, raw = item.split("=", 1)
        _assign(tree, dotted.strip(), _parse_scalar(raw.strip()), "command default")
    config_path = config_path or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        tree = _deep_merge(tree, _relative_to_file(_read_toml(Path(config_path)), Path(config_path)))
    for dotted, value, origin in _env_overrides(environ):
        _assign(tree, dotted, value, origin)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        _assign(tree, dotted.strip(), _parse_scalar(raw.strip()), f"--set {dotted.strip()}")
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{key}: {msg} (got {err.get('input')!r})" if err["type"] != "extra_forbidden"
                         else f"{key}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
