"""Typed configuration shared by every service: defaults < YAML file < env vars."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_NAMES = ("registry", "trainer", "merger", "validator", "inference", "gateway")

DEFAULT_PORTS = {
    "gateway": 50050,
    "registry": 50051,
    "trainer": 50052,
    "merger": 50053,
    "validator": 50054,
    "inference": 50055,
}


class ConfigError(ValueError):
    """A configuration value is missing or malformed; raised at start-up."""


@dataclass
class Config:
    """Everything a service needs at start-up, read once and passed explicitly.

    Every field can be set in a YAML file (``LORAFLEET_CONFIG`` or ``--config``)
    under its own name, and overridden by the env var ``LORAFLEET_<FIELD>``
    (upper case). Addresses of the other services use
    ``LORAFLEET_<SERVICE>_ADDRESS``.
    """

    # Root of all state: registry database, artifact store, staging areas.
    data_dir: Path = Path(".lorafleet")
    # Interface the service binds to.
    host: str = "127.0.0.1"
    # Port this service listens on; 0 picks a free one. Unset = DEFAULT_PORTS.
    port: int | None = None
    # host:port of each service, used by the others. Unset = host + default port.
    registry_address: str = ""
    trainer_address: str = ""
    merger_address: str = ""
    validator_address: str = ""
    inference_address: str = ""
    gateway_address: str = ""
    # SQLAlchemy URL of the registry database; empty = SQLite under data_dir.
    registry_dsn: str = ""
    # Extra directories (besides data_dir) requests may read datasets/models from.
    allowed_roots: list[Path] = field(default_factory=list)
    # OpenTelemetry: OTLP gRPC endpoint; empty disables export unless trace_console.
    otlp_endpoint: str = ""
    trace_console: bool = False
    # Prometheus scrape endpoint (/metrics) of this service's OpenTelemetry
    # metrics: unset = none, 0 = any free port. `lorafleet up` gives each
    # process one (9464 and on); metrics also go to otlp_endpoint when set.
    metrics_port: int | None = None
    # Interface the metrics endpoint binds to; empty = `host`.
    metrics_host: str = ""
    # Auth: "required" (every call but health and reflection needs an API key
    # or a JWT; the default) or "disabled" (everyone may do everything; for
    # local development: `lorafleet up` runs so unless told otherwise).
    auth_mode: str = "required"
    # Secret every service of one suite shares to sign the tokens they send
    # each other (carrying the caller they act for); >= 32 characters.
    auth_service_secret: str = ""
    # People's JWTs, verified by PyJWT against one of: a shared HMAC secret,
    # a PEM public key file, or the identity provider's JWKS URL ...
    auth_jwt_secret: str = ""
    auth_jwt_public_key_file: str = ""
    auth_jwks_url: str = ""
    # ... with this issuer and audience (empty = not checked), these
    # algorithms (empty = HS* for a secret, RS/ES/PS/EdDSA for keys), this
    # much clock skew allowed, the subject in this claim and the per-project
    # roles in this one ({"project": "role"} or ["project:role", ...]).
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    auth_jwt_algorithms: list[str] = field(default_factory=list)
    auth_jwt_leeway_s: float = 30.0
    auth_jwt_subject_claim: str = "sub"
    auth_jwt_roles_claim: str = "lorafleet_roles"
    # How long a service trusts an API key the registry verified; a revoked
    # key stops working everywhere within this time.
    auth_key_cache_s: float = 5.0
    # The project a call acts in when it names none (metadata
    # `lorafleet-project`) and its caller has roles in several.
    auth_default_project: str = "default"
    log_level: str = "INFO"
    log_json: bool = False
    # Seconds in-flight RPCs get to finish on SIGTERM/SIGINT.
    grace_period_s: float = 10.0
    # Largest gRPC message accepted or sent (artifacts pass by path, not bytes).
    max_message_bytes: int = 64 * 1024 * 1024
    # Thread pool size of each gRPC server and its bound on concurrent RPCs.
    max_workers: int = 16
    max_concurrent_rpcs: int = 64
    # How long a thread may hold Python's GIL while another waits for it (ms;
    # Python's default is 5). A request thread that wakes while a background
    # thread (job polling, metrics flush) runs Python code waits up to this
    # long, which showed up in the gateway's p99; 0.5 ms keeps that wait off
    # the tail (CPU-bound threads then switch more often).
    gil_switch_interval_ms: float = 0.5
    # Default deadline of unary calls between services, and of job watches.
    rpc_timeout_s: float = 30.0
    watch_timeout_s: float = 6 * 3600.0
    # Job queues: waiting jobs beyond this bound are refused (RESOURCE_EXHAUSTED).
    job_queue_size: int = 16
    # Jobs each service runs at once.
    job_workers: int = 1
    # Finished jobs stay queryable (Get/List/Watch) this long ...
    job_retention_s: float = 14 * 86400.0
    # ... and at most this many of them per service (0 = no count bound).
    job_history: int = 10000
    # A running job whose replica has not renewed its lease for this long is
    # taken over by another replica (resumed where it was).
    job_lease_s: float = 60.0
    # This replica's name in the job queues; empty = <hostname>-<pid>. A
    # replica restarting under the same name takes its running jobs back at
    # once instead of waiting for their leases to lapse (`lorafleet up` and
    # containers keep it stable).
    worker_id: str = ""
    # SQLAlchemy URLs of each service's own job database; empty = SQLite
    # <data_dir>/<service>.db. Replicas that share one database share a queue.
    merger_dsn: str = ""
    validator_dsn: str = ""
    gateway_dsn: str = ""
    # Gateway: how long a workflow keeps reconnecting to a service that went
    # away (a restart) before it fails with UNAVAILABLE naming the service.
    dependency_patience_s: float = 600.0
    # Gateway: how often an idle replica looks in its queues for workflows and
    # rollouts it did not submit (another replica's lapsed lease, a delayed
    # retry). What it submits itself is claimed at once; each look is a
    # database read beside the request path, so the gateway looks less often
    # than the job services (0.5 s).
    gateway_job_poll_s: float = 2.0
    # Gateway: rollouts one replica drives at once (each holds a thread that
    # mostly sleeps between looks at the metrics); more wait in the queue.
    max_rollouts: int = 16
    # Torch device for model work: "auto" picks cuda when present, else cpu.
    device: str = "auto"
    # Inference: most models held in memory at once (least recently used leave).
    max_loaded_models: int = 3
    # Inference: upper bound on max_new_tokens of one request.
    max_new_tokens_limit: int = 1024
    # Inference: torch's intra-op CPU threads (0 = torch's default, one per
    # core). One request at a time decodes with small matrix products that
    # extra threads do not speed up (SmolLM2-135M on 2 cores: 16.4 tok/s on 1
    # thread, 15.7 on 2), while OpenMP's idle threads spin after every op and
    # take the cores from the other services on the machine (a tiny model's
    # Generate: 10.8 ms on 2 threads, 7.0 ms on 1). Raise it on a machine of
    # its own serving big models or batches.
    inference_threads: int = 1
    # Inference: the engine serving generations (services/inference/engines.py).
    inference_engine: str = "torch"
    # Inference: requests of one model decoding together in one batch, ...
    inference_max_batch: int = 8
    # ... waiting to join it (more are refused with RESOURCE_EXHAUSTED and a
    # retry hint), and prompt tokens prefilled per decode step (a long prompt
    # joining stalls the batch's other rows for at most about this much work).
    inference_max_queue: int = 64
    inference_prefill_tokens: int = 2048
    # Inference: bytes of LoRA weights held, over all models (least recently
    # used adapters that are neither pinned nor serving leave first).
    inference_adapter_budget_mb: int = 1024
    # Inference: keys and values of shared prompt prefixes kept per model
    # (a chat template's system turn is prefilled once per adapter); 0 = off.
    inference_prefix_cache_mb: int = 256
    # Inference: how long a registry read of an artifact is reused (ids name
    # fixed weights; the re-read notices archived artifacts).
    inference_resolve_ttl_s: float = 10.0
    # Gateway: every inference replica it routes across (host:port each; a
    # comma-separated list in LORAFLEET_INFERENCE_REPLICAS); empty = the one
    # at inference_address. Each (model, adapter) sticks to a replica.
    inference_replicas: list[str] = field(default_factory=list)
    # Gateway: how long a replica that refused connections is skipped before
    # one request tries it again.
    inference_replica_cooldown_s: float = 5.0
    # Trainer: SQLAlchemy URL of the trainer's own job database (its queue,
    # never the registry's tables); empty = SQLite under data_dir. Replicas
    # that share one Postgres database share one queue.
    trainer_dsn: str = ""
    # Trainer: its worker id and lease, when they should differ from
    # worker_id and job_lease_s (empty/unset takes those).
    trainer_worker_id: str = ""
    trainer_lease_s: float | None = None
    # Trainer: address-space limit of each training child process in MiB
    # (0 = none); going over it fails the job with an out-of-memory hint.
    trainer_memory_limit_mb: int = 0
    # Trainer: GPUs this replica may hand to jobs; -1 = every visible GPU.
    trainer_gpus: int = -1
    # TLS (services/common/tls.py); all empty = plaintext, as before. This
    # service's PEM certificate chain and private key: both set = it listens
    # with TLS only (one without the other is refused at start-up). A service
    # calling another presents them as its client certificate, so with mTLS
    # they need the clientAuth extended key usage too (or none at all).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # PEM CA bundle; set = mutual TLS: the server requires a client
    # certificate signed by it (needs tls_cert_file).
    tls_client_ca_file: str = ""
    # PEM CA bundle this process's clients (calls to the other services, the
    # CLI, the healthcheck) verify servers with; empty with TLS on = the
    # system roots. Clients use TLS when this or tls_cert_file is set.
    tls_ca_file: str = ""
    # Host name checked in server certificates instead of the address's
    # (gRPC's ssl_target_name_override), for addresses whose host is not in
    # the certificate (e.g. 127.0.0.1 against a cert for lorafleet.internal).
    tls_server_name: str = ""

    def service_port(self, name: str) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[name]

    def address_of(self, name: str) -> str:
        explicit = getattr(self, f"{name}_address")
        return explicit or f"{self.host}:{DEFAULT_PORTS[name]}"

    def inference_addresses(self) -> list[str]:
        """Every inference replica the gateway routes across, in order, once each."""
        addresses = list(dict.fromkeys(self.inference_replicas)) or [
            self.address_of("inference")
        ]
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(
                    f"inference_replicas: {address!r} is not host:port; list each "
                    "replica as host:port, e.g. inference-1:50055,inference-2:50055"
                )
        return addresses

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def checkpoint_dir(self) -> Path:
        """Trainer checkpoints, one folder per job, kept until the job ends."""
        return self.data_dir / "checkpoints"

    @property
    def effective_trainer_dsn(self) -> str:
        return self.job_dsn("trainer")

    def job_dsn(self, service: str) -> str:
        """The job database of `service`: its `<service>_dsn`, else SQLite."""
        explicit = getattr(self, f"{service}_dsn", "")
        return explicit or f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def worker_id_of(self, service: str) -> str:
        """This replica's worker id in `service`'s job queue."""
        if service == "trainer" and self.trainer_worker_id:
            return self.trainer_worker_id
        return self.worker_id

    def lease_of(self, service: str) -> float:
        if service == "trainer" and self.trainer_lease_s:
            return self.trainer_lease_s
        return self.job_lease_s

    @property
    def effective_registry_dsn(self) -> str:
        return (
            self.registry_dsn
            or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"
        )

    def readable_roots(self) -> list[Path]:
        return [self.data_dir.resolve(), *(p.resolve() for p in self.allowed_roots)]

    def as_env(self) -> dict[str, str]:
        """The env vars that reproduce this config in a child process."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, list) and f.type == "list[str]":
                value = ",".join(value)  # addresses hold ':' (os.pathsep)
            elif isinstance(value, list):
                value = os.pathsep.join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[f"LORAFLEET_{f.name.upper()}"] = str(value)
        return env


def _coerce(name: str, raw: Any, annotation: str) -> Any:
    try:
        if annotation == "list[str]":
            if isinstance(raw, str):
                raw = raw.split(",")
            return [str(v).strip() for v in raw if str(v).strip()]
        if "list[Path]" in annotation:
            if isinstance(raw, str):
                raw = [p for p in raw.split(os.pathsep) if p]
            return [Path(p).expanduser() for p in raw]
        if "Path" in annotation:
            return Path(str(raw)).expanduser()
        if "bool" in annotation:
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        if "int" in annotation:
            return None if raw in (None, "") else int(raw)
        if "float" in annotation:
            if raw in (None, "") and "None" in annotation:
                return None
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"config field {name!r}: cannot parse {raw!r} ({exc})"
        ) from exc


def load_config(
    path: str | os.PathLike | None = None, env: dict | None = None, **overrides: Any
) -> Config:
    """Builds a Config from defaults, an optional YAML file, env vars, overrides."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    path = path or env.get("LORAFLEET_CONFIG")
    fields = {f.name: str(f.type) for f in dataclasses.fields(Config)}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field: value")
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            raise ConfigError(
                f"config file {path}: unknown fields {unknown}; "
                f"valid fields are {sorted(fields)}"
            )
        values.update(loaded)
    for name in fields:
        key = f"LORAFLEET_{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    coerced = {k: _coerce(k, v, fields[k]) for k, v in values.items()}
    return Config(**coerced)
