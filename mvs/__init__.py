"""MVS: the runtime of the Minimal Viable System (bus, event store, services, supervisor, CLI)."""

__version__ = "0.1.0"
