"""Flink job entry points and the topology they share."""
