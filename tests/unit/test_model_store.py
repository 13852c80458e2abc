from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from serving.model_store import (
    ModelStore,
    ServableNotFound,
    UnknownVersionLabel,
    VersionState,
    list_versions,
)
from tests.unit.fake_model import FakeModel, add_version

pytestmark = pytest.mark.unit


def states(store: ModelStore) -> dict[int, VersionState]:
    return {s.version: s.state for s in store.statuses()}


def serving_model(store: ModelStore) -> FakeModel:
    with store.acquire() as handle:
        assert isinstance(handle.model, FakeModel)
        return handle.model


def test_list_versions_ignores_staging_non_numeric_and_incomplete_dirs(tmp_path: Path) -> None:
    add_version(tmp_path, 3)
    add_version(tmp_path, 10)
    (tmp_path / ".bootstrap-1-4").mkdir()
    (tmp_path / ".bootstrap-1-4" / "saved_model.pb").write_bytes(b"")
    add_version(tmp_path / "sub", 1)
    (tmp_path / "12").mkdir()  # still being copied: no saved_model.pb yet
    (tmp_path / "7").write_text("a file, not a version")
    (tmp_path / "١").mkdir()  # a non-ASCII digit is not a version number
    assert list_versions(tmp_path) == [3, 10]
    assert list_versions(tmp_path / "missing") == []


def test_start_loads_and_warms_the_latest_version(tmp_path: Path) -> None:
    add_version(tmp_path, 1)
    add_version(tmp_path, 2)
    store = ModelStore("fraud", tmp_path, loader=FakeModel)
    store.start()
    try:
        assert store.serving_version == 2
        assert states(store) == {2: VersionState.AVAILABLE}
        model = serving_model(store)
        assert len(model.runs) == 1  # the warm-up predict, before any request
        assert model.runs[0][1]["amount"].tolist() == [0.0, 0.0]
        with store.acquire(2) as handle:
            assert handle.version == 2
        with pytest.raises(ServableNotFound, match=r"Specific\(fraud, 1\)"), store.acquire(1):
            pass
    finally:
        store.stop()
    assert states(store) == {2: VersionState.END}


def test_new_version_replaces_the_old_only_once_ready(tmp_path: Path) -> None:
    add_version(tmp_path, 1)
    gate = threading.Event()
    loads_v2 = []

    def loader(path: Path) -> FakeModel:
        if path.name == "2":
            loads_v2.append(path)
            return FakeModel(path, gate)
        return FakeModel(path)

    store = ModelStore("fraud", tmp_path, loader=loader)
    store.poll_once()
    add_version(tmp_path, 2)
    poller = threading.Thread(target=store.poll_once)
    poller.start()
    deadline = time.monotonic() + 5
    while not loads_v2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert states(store) == {2: VersionState.LOADING, 1: VersionState.AVAILABLE}
    assert store.serving_version == 1  # still answering while version 2 loads
    gate.set()
    poller.join(5)
    assert store.serving_version == 2
    assert states(store) == {2: VersionState.AVAILABLE, 1: VersionState.END}
    assert [s.version for s in store.statuses()] == [2, 1]  # highest first, as TF Serving


def test_unload_waits_for_in_flight_requests(tmp_path: Path) -> None:
    add_version(tmp_path, 1)
    store = ModelStore("fraud", tmp_path, loader=FakeModel)
    store.poll_once()
    add_version(tmp_path, 2)
    with store.acquire() as handle:
        assert handle.version == 1
        poller = threading.Thread(target=store.poll_once)
        poller.start()
        deadline = time.monotonic() + 5
        while states(store).get(1) is not VersionState.UNLOADING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert states(store)[1] is VersionState.UNLOADING
        assert store.serving_version == 2  # new requests already go to version 2
    poller.join(5)
    assert states(store)[1] is VersionState.END


def test_failed_load_keeps_the_old_version_and_ends_after_retries(tmp_path: Path) -> None:
    add_version(tmp_path, 1)
    store = ModelStore("fraud", tmp_path, loader=FakeModel, max_load_retries=2)
    store.poll_once()
    add_version(tmp_path, 2, broken=True)
    for _ in range(2):
        store.poll_once()
        assert states(store)[2] is VersionState.LOADING
    store.poll_once()
    final = {s.version: s for s in store.statuses()}
    assert final[2].state is VersionState.END and "cannot read" in final[2].error
    assert final[1].state is VersionState.AVAILABLE and store.serving_version == 1
    store.poll_once()  # no further attempts
    assert states(store)[2] is VersionState.END


def test_removing_the_latest_version_rolls_back(tmp_path: Path) -> None:
    add_version(tmp_path, 1)
    v2 = add_version(tmp_path, 2)
    store = ModelStore("fraud", tmp_path, loader=FakeModel)
    store.poll_once()
    (v2 / "saved_model.pb").unlink()
    v2.rmdir()
    store.poll_once()
    assert store.serving_version == 1
    assert states(store) == {2: VersionState.END, 1: VersionState.AVAILABLE}


def test_empty_base_path_serves_nothing(tmp_path: Path) -> None:
    store = ModelStore("fraud", tmp_path, loader=FakeModel)
    store.poll_once()
    assert store.statuses() == [] and store.serving_version is None
    with pytest.raises(ServableNotFound, match=r"Latest\(fraud\)"), store.acquire():
        pass


def test_labels(tmp_path: Path) -> None:
    add_version(tmp_path, 4)
    store = ModelStore("fraud", tmp_path, loader=FakeModel)
    store.poll_once()
    assert store.resolve_label("stable") == 4
    with pytest.raises(UnknownVersionLabel, match="canary"):
        store.resolve_label("canary")


def test_poll_thread_picks_up_new_versions(tmp_path: Path) -> None:
    add_version(tmp_path, 1)
    store = ModelStore("fraud", tmp_path, poll_interval_s=0.05, loader=FakeModel)
    store.start()
    try:
        add_version(tmp_path, 2)
        deadline = time.monotonic() + 5
        while store.serving_version != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.serving_version == 2
    finally:
        store.stop()
