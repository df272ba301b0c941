"""The module name the startup config gives RequestCoordinator; the service lives in
:mod:`mvs.services.request_coordinator`."""

from mvs.services.request_coordinator import RequestCoordinator

__all__ = ["RequestCoordinator"]
