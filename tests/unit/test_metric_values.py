"""Pushed metric values (operators/metric_values.py): a counter that shows a set value."""

from __future__ import annotations

import pytest

from operators.metric_values import PublishedValue, Throttle

pytestmark = pytest.mark.unit


class Counter:
    def __init__(self) -> None:
        self.count, self.calls = 0, 0

    def inc(self, n: int = 1) -> None:
        self.count += n
        self.calls += 1


class Group:
    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}

    def counter(self, name: str) -> Counter:
        return self.counters.setdefault(name, Counter())


def test_a_published_value_follows_what_is_set_up_and_down():
    group = Group()
    value = PublishedValue(group, "entities_in_memory")
    for target in (5, 12, 3, 0, 7):
        value.set(target)
        assert group.counters["entities_in_memory"].count == target == value.value


def test_setting_the_same_value_again_makes_no_call_into_the_jvm():
    group = Group()
    value = PublishedValue(group, "x")
    value.set(4)
    value.set(4)
    value.set(4.0)  # type: ignore[arg-type]
    assert group.counters["x"].calls == 1


def test_throttle_is_due_at_once_then_once_per_interval():
    now = [100.0]
    throttle = Throttle(1.0, clock=lambda: now[0])
    assert throttle.due()
    assert not throttle.due()
    now[0] = 100.99
    assert not throttle.due()
    now[0] = 101.0
    assert throttle.due()
    assert not throttle.due()
