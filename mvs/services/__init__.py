"""The MVS services, one module each, all built on :mod:`mvs.service`.

Core services (no ML libraries, run in the ``core``/``pc2`` process groups):
:mod:`~mvs.services.registry` (ServiceRegistry), :mod:`~mvs.services.twin`
(SystemDigitalTwin), :mod:`~mvs.services.observability` (ObservabilityHub),
:mod:`~mvs.services.async_processor` (AsyncProcessor), :mod:`~mvs.services.cache`
(CacheManager). The request pipeline and model services (RequestCoordinator,
MemoryOrchestratorService, ModelManagerSuite) and, in a later issue, the speech, emotion,
translation and learning services live beside them; the config's ``services.<name>.module``
says which class runs each one, and ``processes`` which OS process hosts it.
"""
