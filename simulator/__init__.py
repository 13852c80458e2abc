"""Transaction simulator: a deterministic generator of realistic traffic with fraud
episodes, malformed payloads and delayed labels, and a Kafka producer that writes it.

The generator is pure (no I/O) so tests and benchmarks use it without a broker; the
producer and CLI are imported from their own modules because they need confluent-kafka.
"""

from simulator.generator import (
    FRAUD_PATTERNS,
    LABEL,
    MALFORMED,
    NORMAL,
    SIM_RATE,
    TXN,
    GeneratorSettings,
    SimRecord,
    TransactionGenerator,
    format_rfc3339,
    generate,
)
from simulator.malformed import MAX_EVENT_BYTES, REASONS, MalformedPayload, make_malformed
from simulator.population import Population

__all__ = [
    "FRAUD_PATTERNS",
    "LABEL",
    "MALFORMED",
    "MAX_EVENT_BYTES",
    "NORMAL",
    "REASONS",
    "SIM_RATE",
    "TXN",
    "GeneratorSettings",
    "MalformedPayload",
    "Population",
    "SimRecord",
    "TransactionGenerator",
    "format_rfc3339",
    "generate",
    "make_malformed",
]
