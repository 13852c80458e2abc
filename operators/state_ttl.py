"""The processing-time state TTL every keyed operator sets as a memory safety net.

Feature windows expire on event time (operators/keyed_features.py); this TTL only
bounds what a key that stops receiving events can leave behind.

Two PyFlink traps shape it:
- ``NeverReturnExpired`` visibility turns PyFlink's Python-side state caches off in
  process mode, making every write a blocking round trip to the JVM (measured: the main
  cost of the feature operators), so the visibility is ``ReturnExpiredIfNotCleanedUp``.
- In thread mode, a TTL config with "cleanup in background" on (the default) makes
  PyFlink build a default RocksDB compaction-filter strategy on the TaskManager, whose
  ``Duration.of_days(30)`` needs a py4j gateway that only exists in a client process:
  the operator fails to open with ``FileNotFoundError`` from trying to launch one. So
  background cleanup is off and the one background strategy that matters for RocksDB,
  the compaction filter, is set explicitly, which is what the default amounts to. Its
  periodic compaction time is never sent to the JVM by PyFlink (in either mode only
  the entry count is), so Flink's own default applies; the value given here only keeps
  PyFlink from making one.
"""

from __future__ import annotations

from datetime import timedelta

from pyflink.common import Time
from pyflink.datastream.state import StateTtlConfig

# RocksDB's compaction filter refreshes its notion of "now" after this many entries.
COMPACTION_QUERY_TIME_AFTER_ENTRIES = 1_000


def safety_ttl(days: int) -> StateTtlConfig:
    return (
        StateTtlConfig.new_builder(Time.days(days))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
        .disable_cleanup_in_background()
        .cleanup_in_rocksdb_compact_filter(COMPACTION_QUERY_TIME_AFTER_ENTRIES,
                                           periodic_compaction_time=timedelta(days=30))
        .build()
    )
