"""Keying and side outputs in the JVM, where PyFlink's own API adds a Python operator.

Each Python operator is one more entry into Python per record, under the TaskManager's
one GIL in thread mode (docs/BENCHMARKS.md, 2026-12-05: validation out of the source):

- ``DataStream.key_by`` runs the key selector in a Python operator of its own, which
  emits ``Row(key, value)`` for the JVM's ``KeyByKeySelector`` (field 0). A stream whose
  rows are already ``(key, value)``, computed in SQL, needs only the JVM half.
- ``DataStream.get_side_output`` reads the side output through a Python identity map.
  The JVM side output already carries the tag's type, which the sinks read as is.
- A projection of some fields of a stream's records (``Tuple`` types) is the JVM's
  ``DataStream.project``; ``DataStream.map`` would run Python.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import DataStream, KeyedStream, OutputTag
from pyflink.java_gateway import get_gateway


def keyed_by_first_field(rows: DataStream, value_type: TypeInformation) -> KeyedStream:
    """``rows`` of (INT key, ``value_type`` value), keyed by the key in the JVM. A keyed
    Python operator on the result gets the value; ``ctx.get_current_key()`` the key.

    ``rows`` must have a ``RowTypeInfo`` (``to_append_stream`` with a row type gives
    one): the embedded keyed operator casts its input type to it, and a Table-to-
    DataStream conversion's ``ExternalTypeInfo`` fails there."""
    selector = get_gateway().jvm.KeyByKeySelector()
    keyed = rows._j_data_stream.keyBy(selector, Types.ROW([Types.INT()]).get_java_type_info())
    return KeyedStream(keyed, value_type, rows)


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """The side output ``tag`` of ``stream``, read in the JVM."""
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


def projected(stream: DataStream, fields: tuple[int, ...]) -> DataStream:
    """The Tuple ``fields`` of ``stream``'s Tuple records, projected in the JVM."""
    gateway = get_gateway()
    indexes = gateway.new_array(gateway.jvm.int, len(fields))
    for i, field in enumerate(fields):
        indexes[i] = field
    return DataStream(stream._j_data_stream.project(indexes))
