"""A config of its own for one benchmark run on the running stack: fresh topics, consumer
group and job name (so runs never read each other's records), plus JSON overrides."""

from __future__ import annotations

import json
import uuid

from rtd_core.config import RtdConfig, load_config

TOPIC_ROLES = ("transactions", "labels", "decisions", "traces", "dlq")


def fresh_run_config(kind: str, override_json: str = "{}") -> tuple[str, dict[str, str], RtdConfig]:
    """(run id, topics by role, config) for a run of ``kind`` (e.g. "bench", "soak")."""
    run = uuid.uuid4().hex[:6]
    topics = {role: f"{role}-{kind}-{run}" for role in TOPIC_ROLES}
    overrides = json.loads(override_json)
    kafka = {**overrides.pop("kafka", {}), "topics": topics, "consumer_group": f"{kind}-{run}"}
    job = {**overrides.pop("job", {}), "name": f"rtd-{kind}-{run}"}
    return run, topics, load_config(None, kafka=kafka, job=job, **overrides)
