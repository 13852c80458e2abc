"""What each drill breaks, while the steady load runs. A fault records what it did as
actions on the context (the report's timeline) and leaves what its judge needs under
``ctx.extra``."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from bench.drills.core import DrillContext, now_ms, taskmanagers_of, tm_pid_running, wait_running
from serving.drills import DRILL_FILE_NAME, write_drill_file
from serving.drills import DrillSettings as ServerDrill
from simulator.hostile import fuzzed_payloads
from simulator.producer import producer_settings
from stack.job_submission import submit
from stack.kafka_broker import KafkaBroker
from stack.model_server import ModelServer
from stack.processes import pid_alive, port_open, wait_until


def kill_taskmanagers(ctx: DrillContext) -> None:
    s, cluster = ctx.settings, ctx.cluster
    ctx.warm_up()
    for n in range(s.kills):
        wait_running(cluster, ctx.job_id)
        time.sleep(3)  # its tasks have started and a checkpoint or two completed
        pid = tm_pid_running(cluster, ctx.job_id) or max(cluster._pids("taskexecutor"))
        os.kill(pid, signal.SIGKILL)
        ctx.act("kill -9 taskmanager", f"pid {pid}")
        ctx.log(f"kill {n + 1}/{s.kills}: TaskManager pid {pid}")
        wait_until(lambda p=pid: not pid_alive(p), 10, "killed TaskManager to exit")
        for file in cluster.pid_dir.glob("flink-*-taskexecutor.pid"):
            alive = [x for x in file.read_text().split() if x.isdigit() and pid_alive(int(x))]
            file.write_text("".join(f"{x}\n" for x in alive))
        cluster._start_taskmanagers()  # the replacement, as a supervisor would start
        if n + 1 < s.kills:
            time.sleep(max(s.interval_s - 3, 0))
    time.sleep(s.tail_s)


def _down_and_back(ctx: DrillContext, what: str, pid: int, kill: Callable[[], None],
                   gone: Callable[[], bool], down_s: float, start: Callable[[], Any],
                   back: str) -> None:
    """Kill -9 a stack process, keep it down ``down_s``, start it again, then the tail."""
    kill()
    ctx.act(f"kill -9 {what}", f"pid {pid}")
    ctx.log(f"{what} pid {pid} killed; down for {down_s:g} s")
    wait_until(gone, 20, f"killed {what} to exit")
    time.sleep(down_s)
    start()
    ctx.act(back)
    ctx.log(f"{what} started again")
    time.sleep(ctx.settings.tail_s)


def restart_broker(ctx: DrillContext) -> None:
    s = ctx.settings
    broker = KafkaBroker(ctx.config)
    ctx.warm_up()
    pid = broker.process.pid()
    if pid is None:
        raise RuntimeError("the Kafka broker of the stack is not running")
    _down_and_back(ctx, "broker", pid, lambda: os.kill(pid, signal.SIGKILL),
                   lambda: not pid_alive(pid), s.broker_down_s, broker.start, "broker started")


def model_chaos(ctx: DrillContext) -> None:
    """Latency past the call deadline, then a share of errors, then the model server
    killed and down; each followed by a calm phase. The server reads its drill file
    (serving/drills.py) within one poll interval, so each phase's first seconds are
    left out of its judgement (bench/drills/judges.py)."""
    s, config = ctx.settings, ctx.config
    drill_file = config.path(config.serving.base_path) / DRILL_FILE_NAME
    server = ModelServer(config)
    if not server.running():
        raise RuntimeError("the model server of the stack is not running")
    spike_ms = 4 * config.serving.timeout_ms
    ctx.warm_up()
    try:
        write_drill_file(drill_file, ServerDrill(latency_ms=spike_ms))
        ctx.act("latency spike", f"{spike_ms} ms per call, deadline {config.serving.timeout_ms} ms")
        ctx.log(f"model server: {spike_ms} ms per call for {s.chaos_phase_s:g} s")
        time.sleep(s.chaos_phase_s)
        write_drill_file(drill_file, None)
        ctx.act("latency back to normal")
        time.sleep(s.chaos_calm_s)
        write_drill_file(drill_file, ServerDrill(error_rate=s.chaos_error_rate,
                                                 error_code="INTERNAL"))
        ctx.act("error rate", f"{s.chaos_error_rate:.0%} of calls fail with INTERNAL")
        ctx.log(f"model server: {s.chaos_error_rate:.0%} errors for {s.chaos_phase_s:g} s")
        time.sleep(s.chaos_phase_s)
    finally:
        write_drill_file(drill_file, None)
    ctx.act("errors stopped")
    time.sleep(s.chaos_calm_s)
    pid = server.process.pid()
    assert pid is not None
    serving = config.serving
    _down_and_back(ctx, "model server", pid, lambda: os.killpg(pid, signal.SIGKILL),
                   lambda: not port_open(serving.host, serving.port), s.model_down_s,
                   server.start, "model server back")


def rescale(ctx: DrillContext) -> None:
    """Stop with a savepoint under load, resume at ``rescale_to`` on the cluster's
    TaskManagers, hold, then stop with a savepoint again and resume at 1."""
    s, cluster = ctx.settings, ctx.cluster
    ctx.warm_up()
    placements: list[dict[str, Any]] = []
    for parallelism in (s.rescale_to, ctx.config.flink.parallelism):
        savepoint = cluster.stop_with_savepoint(ctx.job_id)
        ctx.act("stop with savepoint", savepoint)
        ctx.log(f"job {ctx.job_id} stopped, savepoint {savepoint}")
        flink = ctx.config.flink.model_copy(update={"parallelism": parallelism})
        config = ctx.config.model_copy(update={"flink": flink})
        job_id = submit(config, savepoint=savepoint)
        ctx.act(f"resumed at parallelism {parallelism}", job_id)
        ctx.log(f"job {job_id} resumed at parallelism {parallelism}")
        ctx.sample(job_id)
        placements.append({"parallelism": parallelism,
                           "taskmanagers": sorted(taskmanagers_of(cluster, job_id))})
        time.sleep(s.rescale_hold_s if parallelism == s.rescale_to else s.tail_s)
    ctx.extra["placements"] = placements


def hostile_input(ctx: DrillContext) -> None:
    """``hostile_count`` fuzzed and hostile payloads (simulator/hostile.py), produced
    beside the steady load. Each one's partition and offset are kept: dead letters name
    them, so every payload can be matched to what the job made of it."""
    s, config = ctx.settings, ctx.config
    ctx.warm_up()
    rng = random.Random(s.seed)
    t0 = now_ms()

    def make_event(event_id: str) -> dict[str, Any]:
        card = f"hz{rng.randrange(2_000)}"
        return {"event_id": event_id, "card_id": card, "customer_id": f"hzc-{card}",
                "merchant_id": f"m{rng.randrange(50)}", "merchant_category": "5411",
                "amount": round(rng.uniform(1, 300), 2), "currency": "USD",
                "country": rng.choice(("US", "FR", "DE")), "channel": "ecom",
                "event_time": now_ms() - rng.randrange(3_000)}

    payloads = fuzzed_payloads(make_event, s.hostile_count, seed=s.seed, now_ms=t0)
    producer = Producer({**producer_settings(config), "delivery.report.only.error": False})
    placed: dict[int, tuple[int, int]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    ctx.act("hostile payloads begin", f"{s.hostile_count} at {s.hostile_rate:g}/s")
    ctx.log(f"sending {s.hostile_count} hostile payloads at {s.hostile_rate:g}/s")
    started = time.monotonic()
    for i, payload in enumerate(payloads):
        delay = started + i / s.hostile_rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)

        def delivered(err: Any, msg: Any, i: int = i) -> None:
            with lock:
                if err is not None:
                    errors.append(f"payload {i}: {err}")
                else:
                    placed[i] = (msg.partition(), msg.offset())

        while True:
            try:
                producer.produce(config.kafka.topics.transactions, key=payload.key,
                                 value=payload.value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        if (i + 1) % 20_000 == 0:
            ctx.log(f"{i + 1:,} hostile payloads sent")
    left = producer.flush(120)
    ctx.act("hostile payloads sent", f"{len(placed)} delivered")
    ctx.extra["hostile"] = {"payloads": payloads, "placed": placed, "errors": errors,
                            "undelivered": left}
    time.sleep(s.tail_s)


def soak(ctx: DrillContext) -> None:
    """Nothing breaks: the load runs for ``soak_minutes`` while the judge's samplers
    watch memory, checkpoints and latency."""
    s = ctx.settings
    ctx.act("soak begins", f"{s.soak_minutes:g} min")
    time.sleep(s.warmup_s + s.soak_minutes * 60)
    ctx.act("soak ends")
