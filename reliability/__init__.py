"""Reliability checks of issue 7: fuzzing, a soak, fault injection and kill loops (docs/RELIABILITY.md).

    python -m reliability              # every long check, results in runs/reliability/
    python -m reliability faults       # one group: fuzz, soak, faults, training

The fast subset runs in CI as tests/test_reliability.py.
"""
