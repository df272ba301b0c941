"""What is remembered and queried: the event log folded into DuckDB.

* :mod:`projections.base`: the fold engine (Arrow batches, set-based writes, dead letters);
* one module per projection (:mod:`~projections.history`, :mod:`~projections.memory`,
  :mod:`~projections.twin`, :mod:`~projections.requests`, :mod:`~projections.learning`,
  :mod:`~projections.legacy`) with its DDL in ``<name>.sql``; :mod:`projections.registry`;
* :mod:`projections.runner`: one durable consumer per projection, exactly-once effect;
* :mod:`projections.host`: :class:`~projections.host.ProjectionHost`, the process that owns the
  file, runs all projections and serves queries (``wait_for(seq)``, ``catch_up()``,
  ``rebuild(name)``);
* :mod:`projections.rebuild`: rebuild beside the live tables, checksum, swap atomically;
* :mod:`projections.query`: read-only SQL and Parquet export, running or stopped.

CLI: ``mvs projections ls|run [--once]|rebuild NAME``, ``mvs query "SQL" [--format ...]``,
``mvs export --parquet DIR``. Table contract: ``notes/SCHEMA.md`` and the ``*.sql`` files.
"""
