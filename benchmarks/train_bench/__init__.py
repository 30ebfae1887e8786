"""The training benchmark, ``python -m benchmarks.train_bench`` (what it measures:
__main__.py).

Modules: ``config`` (the flags: one field each), ``steps`` (the trainer's step
and timing it), ``measure`` (input, training, ceiling, evaluation),
``op_profile`` (the profiler's op breakdown), ``vocab_scaling`` (4. and 6., in
subprocesses), ``report`` (the table and notes written to RESULTS.md) and
``__main__`` (the run).
"""
