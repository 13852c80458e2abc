"""Failure drills under steady load: does anything get lost or duplicated, and how long
does the job take to recover?

    rtd drill taskmanager-kill | broker-restart | model-chaos | rescale | hostile-input
              | soak | all  [--rate N] ...

Each drill runs on its own topics, consumer group and job (bench/fresh_run.py) on the
running local stack. The simulator sends at a steady rate (default 60% of the peak
measured in docs/BENCHMARKS.md) while the drill breaks something (bench/drills/faults.py).
Then the drill audits all three outputs with read_committed readers: every valid event
must have exactly one decision and one trace, every malformed one exactly one dead
letter, and no output partition may hold an open transaction. Each drill then has checks
of its own (bench/drills/judges.py). The report goes to ``out/drills/<run>/``: JSON,
Markdown and a chart of throughput and latency (and TaskManager memory) over the drill.
``--publish`` also puts it in docs/RELIABILITY.md.

- ``taskmanager-kill``: kill -9 the TaskManager that runs the job, ``--kills`` times,
  ``--interval`` s apart. A replacement is started at once, as a supervisor would, and a
  spare TaskManager stands by (``flink.taskmanagers`` = 2), so the job restarts on free
  slots and does not wait for a new JVM. Recovery time per kill: the last decision
  before the kill to the first decision after it (by the job's ``decided_at``).
- ``broker-restart``: kill -9 the Kafka broker, keep it down ``--down`` s, start it
  again. The job must recover by itself: nothing restarts it.
- ``model-chaos``: the model server answers past the call deadline, then fails 20% of
  calls, then is killed and down 60 s. Decisions go on by rules alone with the right
  ``fallback_reason``, within the latency budget, and take the model path again within
  seconds of the server's return.
- ``rescale``: stop with a savepoint under load, resume at parallelism 2 on two
  TaskManagers, then stop and resume at 1 again. Every on-time decision's features are
  judged against the independent reference (bench/reference_features.py).
- ``hostile-input``: 100,000 fuzzed and hostile payloads (simulator/hostile.py)
  beside the valid load: no restart, and each one ends as exactly one decision or one
  dead letter (matched by the dead letter's partition and offset).
- ``soak``: an hour of steady load; TaskManager memory must level off and p99 stay
  stable. Not part of ``all``.
"""

from bench.drills.core import DrillSettings, audit_ids, longest_stall, recovery_times, windows
from bench.drills.report import publish_section, summary_line, write_report
from bench.drills.runner import ALL, NAMES, DrillResult, run_drill

__all__ = ["ALL", "NAMES", "DrillResult", "DrillSettings", "audit_ids", "longest_stall",
           "publish_section", "recovery_times", "run_drill", "summary_line", "windows",
           "write_report"]
