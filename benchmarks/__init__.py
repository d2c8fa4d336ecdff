"""chainsight's benchmark suite: ``python -m benchmarks`` (``make bench``).

Every timing is compared with a reference span **R** measured in the same process, in
interleaved rounds, so the ratios survive a noisy 2-core machine. ``--smoke`` runs each benchmark
once and checks that it measured what it claims (spans exported, metrics recorded); it asserts no
timing. See ``docs/performance.md``.
"""
