"""The one module that reads environment variables.

Everything else receives these values as arguments, so that library code never reads the
environment behind a caller's back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "load_settings"]

DEFAULT_NATS_PORT = 4222


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Runtime settings taken from the environment.

    ``MVS_HOME``: the data folder (default ``./data``): JetStream store, DuckDB files, backups.
    ``MVS_NATS_URL``: connect to this server or cluster instead of starting an embedded one.
    ``MVS_NATS_PORT``: the loopback port of the embedded server (default 4222).
    ``MVS_NATS_SYNC``: ``always`` to fsync every write before acknowledging it (see README).
    ``MVS_CONFIG``: the startup config (default ``config/mvs_startup_config.yaml`` here, else the
    project's own).
    ``*_API_KEY``: every variable whose name ends so is kept in ``api_keys`` (by name), for the
    config's ``llm_routing.cloud_api.api_key_env``; never printed or logged.
    """

    home: Path
    nats_url: str | None
    nats_port: int
    nats_sync_always: bool
    config_path: Path
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def jetstream_dir(self) -> Path:
        return self.home / "jetstream"

    @property
    def duckdb_path(self) -> Path:
        return self.home / "mvs.duckdb"

    @property
    def runtime_file(self) -> Path:
        """Where a running embedded server advertises its URL to other `mvs` commands."""
        return self.home / "nats-runtime.json"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    from mvs.errors import ConfigError

    port_text = env.get("MVS_NATS_PORT", str(DEFAULT_NATS_PORT))
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ConfigError(f"MVS_NATS_PORT must be a port number, got {port_text!r}") from exc
    sync = env.get("MVS_NATS_SYNC", "").strip().lower()
    if sync not in ("", "always", "default"):
        raise ConfigError(f"MVS_NATS_SYNC must be 'always' or 'default', got {sync!r}")
    return Settings(
        home=Path(env.get("MVS_HOME", "data")).expanduser().absolute(),
        nats_url=env.get("MVS_NATS_URL") or None,
        nats_port=port,
        nats_sync_always=sync == "always",
        config_path=Path(env["MVS_CONFIG"]) if env.get("MVS_CONFIG") else _default_config(),
        api_keys={k: v for k, v in env.items() if k.endswith("_API_KEY") and v},
    )


_CONFIG_NAME = Path("config") / "mvs_startup_config.yaml"


def _default_config() -> Path:
    """``./config/...`` when the working directory has one, else the project's own copy.

    The project's copy sits beside the installed packages in a source checkout (the README's
    set-up installs MVS in editable mode), so ``mvs`` works from any directory.
    """
    local = Path(_CONFIG_NAME)
    if local.is_file():
        return local
    project = Path(__file__).resolve().parents[1] / _CONFIG_NAME
    return project if project.is_file() else local
