"""The local stack outlives the terminal that started it.

`rtd stack up` runs in a shell on a pseudo-terminal, as in a user's terminal window.
Then the terminal is closed: its master end (the kernel hangs the terminal up, which
SIGHUPs the shell, and then the terminal's foreground process group), and SIGHUP to
every process still in the terminal's session, as the harshest terminal or ssh
session does. Every daemon must keep running: each must have left that session.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest

from rtd_core.config import PROJECT_ROOT
from stack.flink_cluster import FlinkCluster
from stack.local_stack import LocalStack
from tests.conftest import _OFFSET, stack_config_for

pytestmark = pytest.mark.integration


def _own_stack_config():
    # Its own folder and ports (offset +300 from the shared test stack), so closing
    # "its" terminal cannot touch the session's stack; small memory, as it runs no job.
    base = 300 + _OFFSET
    return stack_config_for(
        "hup", stack_dir=f".stack-test-hup{_OFFSET or ''}",
        kafka={"bootstrap_servers": f"127.0.0.1:{19092 + base}",
               "controller_port": 19093 + base, "heap": "256m"},
        flink={"rest_port": 18081 + base, "rpc_port": 16123 + base,
               "taskmanager_memory": "1280m", "jobmanager_memory": "768m"},
        serving={"port": 18500 + base,
                 "base_path": f".stack-test-hup{_OFFSET or ''}/models/fraud"},
        audit={"enabled": True},
    )


def _read_until(fd: int, marker: bytes, timeout_s: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_closing_the_terminal_leaves_every_daemon_running(tmp_path):
    config = _own_stack_config()
    stack = LocalStack(config)
    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json())
    rtd = os.path.join(os.path.dirname(sys.executable), "rtd")
    pid, master = pty.fork()
    if pid == 0:  # the terminal's shell: session leader with the pty as controlling tty
        # A terminal's shell starts with SIGHUP at its default (death); a test runner
        # started under nohup would pass "ignored" down and the hang-up would prove nothing.
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.chdir(PROJECT_ROOT)
        # Without job control, as `bash -c` or a script: what it starts shares its process
        # group, the terminal's foreground group. The marker is split in the command, so
        # only its output matches.
        os.execvp("bash", ["bash", "--norc", "--noprofile", "-c",
                           (f"{rtd} stack up --config {config_file}; "
                           f"echo STACK-UP\"-RC=\"$?.; exec sleep 3600")])
    try:
        out = _read_until(master, b"STACK-UP-RC=", 420)
        out += _read_until(master, b".", 5)
        assert b"STACK-UP-RC=0." in out, out[-3000:].decode(errors="replace")
        assert all(s.running for s in stack.status()), stack.status()
        daemons = _daemon_pids(config)
        assert len(daemons) == 5, daemons  # kafka, model server, audit, JM, TM
        assert pid in _session_members(pid)
        # Close the terminal, then SIGHUP whatever is left of its session.
        os.close(master)
        master = -1
        for member in _session_members(pid):
            try:
                os.kill(member, signal.SIGHUP)
            except ProcessLookupError:
                pass
        _reap(pid, timeout_s=30)
        time.sleep(10)  # Flink's handler logs and exits within a second or two of SIGHUP
        dead = {name: p for name, p in daemons.items() if not _alive(p)}
        assert not dead, f"daemons stopped with their terminal: {dead}"
        assert all(os.getsid(p) != pid for p in daemons.values())
        assert all(s.running for s in stack.status()), stack.status()
    finally:
        if master >= 0:
            os.close(master)
        stack.down(log=lambda line: None)


def _reap(pid: int, timeout_s: float) -> None:
    """Wait for the terminal's shell to die of its hang-up; kill it if it did not, so the
    test fails on its checks instead of hanging."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the terminal's shell outlived its hang-up")


def _daemon_pids(config) -> dict[str, int]:
    stack = LocalStack(config)
    flink = FlinkCluster(config)
    pids = {"kafka": stack.kafka.process.pid(), "model-server": stack.model_server.process.pid(),
            "audit": stack.audit.process.pid()}
    pids.update({f"jobmanager-{i}": p for i, p in enumerate(flink._pids("standalonesession"))})
    pids.update({f"taskmanager-{i}": p for i, p in enumerate(flink._pids("taskexecutor"))})
    return {name: p for name, p in pids.items() if p is not None}


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    members.append(int(entry))
            except OSError:
                pass
    return members


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
