"""The audit store: point index, columnar archive, completeness (docs/audit.md)."""
