"""MVS benchmarks: each ``bench_<topic>.py`` module has ``main(argv) -> int`` and ``--quick``.

Run one with ``python -m benchmarks.bench_<topic>``, or all of them (quick) with
``python -m benchmarks``. They print figures and ratios against a baseline measured in the
same run; they are not part of the test suite.
"""
