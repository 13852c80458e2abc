"""Event-time watermarks from the validated event's ``event_time``."""

from __future__ import annotations

from typing import Any

from pyflink.common import Duration, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner


class EventTimeAssigner(TimestampAssigner):
    def extract_timestamp(self, value: dict[str, Any], record_timestamp: int) -> int:
        return int(value["event"]["event_time"])


def event_time_watermarks(delay_ms: int, idleness_ms: int) -> WatermarkStrategy:
    """Bounded out-of-orderness with idleness, so a quiet partition cannot stall time."""
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(delay_ms))
    if idleness_ms > 0:
        strategy = strategy.with_idleness(Duration.of_millis(idleness_ms))
    return strategy.with_timestamp_assigner(EventTimeAssigner())
