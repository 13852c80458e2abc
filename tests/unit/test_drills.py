from __future__ import annotations

import random
from pathlib import Path

import grpc
import pytest

from serving.drills import DrillControl, DrillSettings, write_drill_file

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_by_default() -> None:
    control = DrillControl(DrillSettings(), None, 1.0)
    assert not control.current().active
    assert control.injected_failure(control.current()) is None


def test_file_overrides_flags_within_one_refresh_interval(tmp_path: Path) -> None:
    clock, file = Clock(), tmp_path / ".drill.json"
    control = DrillControl(DrillSettings(latency_ms=5), file, 2.0, clock=clock)
    assert control.current() == DrillSettings(latency_ms=5)
    write_drill_file(file, DrillSettings(latency_ms=300, error_rate=0.5, error_code="UNAVAILABLE"))
    clock.now = 1.0
    assert control.current().latency_ms == 5  # not re-read yet
    clock.now = 2.5
    assert control.current() == DrillSettings(300, 0.5, "UNAVAILABLE")
    write_drill_file(file, None)
    clock.now = 5.0
    assert control.current() == DrillSettings(latency_ms=5)


def test_partial_file_keeps_the_other_flags(tmp_path: Path) -> None:
    file = tmp_path / "drill.json"
    file.write_text('{"error_rate": 1.0}')
    control = DrillControl(DrillSettings(latency_ms=7), file, 0.0)
    assert control.current() == DrillSettings(latency_ms=7, error_rate=1.0)


def test_invalid_file_is_ignored(tmp_path: Path) -> None:
    file = tmp_path / "drill.json"
    file.write_text('{"error_rate": 3}')
    control = DrillControl(DrillSettings(), file, 0.0)
    assert control.current() == DrillSettings()
    file.write_text("not json")
    assert control.current() == DrillSettings()


def test_error_rate_injects_the_chosen_code() -> None:
    control = DrillControl(DrillSettings(), None, 1.0, rng=random.Random(1))
    settings = DrillSettings(error_rate=0.5, error_code="UNAVAILABLE")
    outcomes = [control.injected_failure(settings) for _ in range(1000)]
    failures = [o for o in outcomes if o is not None]
    assert set(failures) == {grpc.StatusCode.UNAVAILABLE}
    assert 400 < len(failures) < 600


@pytest.mark.parametrize(
    "bad", [{"latency_ms": -1}, {"error_rate": 1.5}, {"error_code": "OK"}, {"error_code": "NOPE"}]
)
def test_settings_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DrillSettings(**bad)  # type: ignore[arg-type]
