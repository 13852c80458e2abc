"""Constants the contract fixes (docs/contract.md), for the packages that must agree on
them without importing each other: the config's defaults, the feature views and the
validation all read them from here."""

from __future__ import annotations

# "Event time and watermarks": a partition's watermark trails its highest row time by
# this much (the bounded out-of-orderness), and an event at most this far behind the
# watermark still counts in its windows.
WATERMARK_DELAY_MS = 5_000
ALLOWED_LATENESS_MS = 60_000

# An event more than this far ahead of its Kafka record's timestamp is a dead letter
# (event_time_in_future) and never moves a watermark.
MAX_FUTURE_SKEW_MS = 5 * 60_000
