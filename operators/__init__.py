"""The thin Flink shell: functions that read/write state, set timers and emit.

All logic they call lives in plain Python (``decisioning``, ``feature_views``), which
is tested without a JVM.
"""
