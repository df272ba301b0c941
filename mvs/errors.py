"""The one error tree of MVS.

Every error MVS raises on purpose derives from :class:`MvsError`, and also from the builtin
that matches its meaning, so callers can catch either. Driver errors (nats-py, DuckDB, SQLite)
are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "CircuitOpen",
    "ConcurrencyConflict",
    "ConfigError",
    "DecodeError",
    "LegacyFormatError",
    "ModelError",
    "MvsError",
    "NatsUnavailable",
    "ProjectionError",
    "ServiceError",
    "UnknownModel",
    "UpstreamError",
]


class MvsError(Exception):
    """Root of all errors raised by MVS."""


class ConfigError(MvsError, ValueError):
    """A configuration file or setting is wrong; the message names the key or file."""


class DecodeError(MvsError, ValueError):
    """A message or record could not be decoded into an MVS type."""


class BusError(MvsError, ConnectionError):
    """NATS or JetStream failed in a way the caller should see."""


class NatsUnavailable(BusError):
    """The NATS server could not be started or reached."""


class ConcurrencyConflict(BusError):
    """An append lost an optimistic-concurrency race on its subject."""


class ProjectionError(MvsError, RuntimeError):
    """A projection could not be built or queried."""


class LegacyFormatError(DecodeError):
    """A legacy file is not in the format it claims to be."""


class ServiceError(MvsError, RuntimeError):
    """A service failed to answer a request."""


class ModelError(MvsError, RuntimeError):
    """A model could not be found, loaded or run; the message names the model."""


class UnknownModel(ModelError, LookupError):
    """A request names a model the pool does not know."""


class UpstreamError(ServiceError, ConnectionError):
    """A remote dependency (e.g. the cloud LLM endpoint) failed or gave a bad answer."""


class ServiceCallError(ServiceError):
    """A service answered a request with an error reply; ``code`` is its error code."""

    def __init__(self, message: str, *, code: str = "500") -> None:
        super().__init__(message)
        self.code = code


class CircuitOpen(ServiceError):
    """A call was refused because the circuit breaker of its dependency is open."""
