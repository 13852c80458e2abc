"""`rtd audit ...` and `rtd explain`: answers from the audit store, never a topic scan."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from decisioning.trace import trace_event
from rtd.cli_config import ConfigOption, config_or_exit
from rtd_core.config import RtdConfig

audit_app = typer.Typer(help="The audit store: search, SQL over the archive, completeness.",
                        no_args_is_help=True)
console = Console()




def _open(cfg: RtdConfig) -> Any:
    from audit.service import index_path
    from audit.store import AuditStore

    try:
        return AuditStore(index_path(cfg), read_only=True)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _parse_time(text: str) -> int:
    """Epoch ms, or an ISO 8601 time (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: give epoch ms or ISO 8601, "
                                 "e.g. 2026-03-15T14:23:07") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def progress_lines(cfg: RtdConfig, store: Any) -> list[str]:
    """How far the store has got: its offsets against the topics' ends, newest decision."""
    from confluent_kafka import KafkaException, TopicPartition

    from rtd_core.topic_reader import consumer

    ends: dict[tuple[str, int], int] = {}
    try:
        c = consumer(cfg, **{"socket.timeout.ms": 3000})
        try:
            # One bounded metadata call first: a broker that is down costs 3 s, not 3 s
            # for every partition.
            c.list_topics(timeout=3)
            for (topic, partition) in store.offsets():
                ends[(topic, partition)] = c.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=3)[1]
        finally:
            c.close()
    except KafkaException as exc:  # the broker may be down; the store still answers
        ends.clear()
        unreachable = f" (topic ends unknown: {exc})"
    else:
        unreachable = ""
    lines = [(f"The store has indexed {store.counts['traces']} traces and "
              f"{store.counts['decisions']} decisions, the newest decided at "
              f"{_time(store.counts['last_decided_at'])}{unreachable}.")]
    for (topic, partition), offset in sorted(store.offsets().items()):
        end = ends.get((topic, partition))
        behind = "" if end is None else f" of {end} ({max(end - offset, 0)} behind)"
        lines.append(f"  {topic}[{partition}] next offset {offset}{behind}")
    return lines


@audit_app.command("explain")
def explain(
    event_id: Annotated[str, typer.Argument(help="An event id or a decision id")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw trace")] = False,
) -> None:
    """Why was this transaction decided so? Answers from the audit store's index."""
    from rtd.explain import explanation_lines

    cfg = config_or_exit(config)
    with _open(cfg) as store:
        trace = store.trace(event_id)
        if trace is None:
            console.print(f"[red]{event_id!r} is not in the audit store[/red] (yet). Check the "
                          "id; if the decision is recent, the store may not have reached it:",
                          highlight=False)
            for line in progress_lines(cfg, store):
                console.print(line, highlight=False)
            console.print("Is the audit service running? `rtd stack status`")
            raise typer.Exit(1)
    if as_json:
        console.print_json(json.dumps(trace))
        return
    for line in explanation_lines(trace):
        console.print(line, highlight=False)


@audit_app.command("search")
def search(
    card: Annotated[str | None, typer.Option(help="card_id")] = None,
    customer: Annotated[str | None, typer.Option(help="customer_id")] = None,
    start: Annotated[str, typer.Option("--from", help="decided at or after (ISO or ms)")] = "0",
    end: Annotated[str, typer.Option("--to", help="decided before (ISO or ms)")]
    = "9999999999999",
    limit: Annotated[int, typer.Option(help="At most this many rows")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One trace per line")] = False,
    config: ConfigOption = None,
) -> None:
    """Every decision of one card or customer in a time range, oldest first."""
    if (card is None) == (customer is None):
        console.print("[red]error:[/red] give exactly one of --card or --customer")
        raise typer.Exit(2)
    cfg = config_or_exit(config)
    with _open(cfg) as store:
        traces = store.search(card=card, customer=customer, start_ms=_parse_time(start),
                              end_ms=_parse_time(end), limit=limit)
    if as_json:
        for trace in traces:
            print(json.dumps(trace, separators=(",", ":")))
        return
    table = Table("decided at (UTC)", "decision_id", "event_id", "card", "amount",
                  "outcome", "score", "path", "reasons")
    for t in traces:
        event = trace_event(t)
        score = "-" if t.get("score") is None else f"{t['score']:.4f}"
        table.add_row(_time(t["decided_at"]), t["decision_id"], t["event_id"],
                      event["card_id"], str(event["amount"]), t["outcome"], score,
                      t["path"], ",".join(t["reasons"]))
    console.print(table)
    console.print(f"{len(traces)} decisions" + (" (limit reached)" if len(traces) >= limit
                                                else ""))


@audit_app.command("sql")
def sql(
    query: Annotated[str, typer.Argument(help="DuckDB SQL over the view `decisions`")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Rows as JSON lines")] = False,
) -> None:
    """Run DuckDB SQL over the hourly Parquet archive (view `decisions`)."""
    from audit.archive import sql as run_sql
    from audit.service import archive_path

    cfg = config_or_exit(config)
    try:
        columns, rows = run_sql(archive_path(cfg), query)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except Exception as exc:  # DuckDB's own message says what is wrong
        console.print(f"[red]SQL error:[/red] {exc}\nThe archive is the view `decisions`; "
                      "its columns: `rtd audit sql \"DESCRIBE decisions\"`", highlight=False)
        raise typer.Exit(2) from exc
    if as_json:
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


@audit_app.command("completeness")
def completeness(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole report as JSON")] = False,
) -> None:
    """Share of decisions with a complete trace; every decision or trace without its pair."""
    import time

    from audit.completeness import completeness_report

    cfg = config_or_exit(config)
    with _open(cfg) as store:
        report = completeness_report(
            store, decisions_topic=cfg.kafka.topics.decisions,
            traces_topic=cfg.kafka.topics.traces, grace_ms=cfg.audit.completeness_grace_ms,
            now_ms=int(time.time() * 1000))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        share = report["share_complete"]
        colour = "green" if share == 1.0 else "red"
        console.print(f"[{colour}]{share:.4%}[/{colour}] of {report['decisions']} decisions "
                      f"have a complete trace ({report['traces']} traces; in flight: "
                      f"{report['in_flight']})", highlight=False)
        for title, key in (("decisions without a trace", "decisions_without_trace"),
                           ("traces without a decision", "traces_without_decision"),
                           ("incomplete traces", "incomplete_traces")):
            if report[key]:
                table = Table("decision_id", "topic", "partition", "offset", "decided at",
                              title=title)
                for e in report[key]:
                    table.add_row(e["decision_id"], e["topic"], str(e["partition"]),
                                  str(e["offset"]), _time(e["decided_at"]))
                console.print(table)
    if report["decisions_without_trace"] or report["incomplete_traces"]:
        raise typer.Exit(1)


@audit_app.command("status")
def status(config: ConfigOption = None) -> None:
    """How far the store has got, per topic partition."""
    cfg = config_or_exit(config)
    with _open(cfg) as store:
        for line in progress_lines(cfg, store):
            console.print(line, highlight=False)
        console.print(f"store {store.path}: {store.disk_bytes() / 2**20:.1f} MiB")


if __name__ == "__main__":
    # `python -m rtd.audit_cli` (or the `rtd-audit` script): the store's commands without
    # importing the whole `rtd` CLI (replay, training), which triples the start-up time.
    audit_app()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def accuracy_table(window_min: str, body: dict[str, Any]) -> Table:
    """One rolling window of the health snapshot's accuracy, as the console shows it."""
    table = Table("model", "path", "events", "fraud", "decision P / R", "rules only P / R",
                  "model score P / R", "AUC model",
                  title=f"accuracy, last {window_min} mature min (review threshold)")
    for g in body["groups"]:
        def pr(m: dict[str, Any] | None) -> str:
            return "-" if m is None else f"{_pct(m['review']['precision'])} / " \
                                         f"{_pct(m['review']['recall'])}"
        auc = g["model_score"]["auc"] if g["model_score"] else None
        table.add_row("-" if g["model_version"] is None else f"v{g['model_version']}",
                      g["path"], str(g["n"]), str(g["fraud"]), pr(g["decision"]),
                      pr(g["rules_only"]), pr(g["model_score"]),
                      "-" if auc is None else f"{auc:.3f}")
    return table


def fetch_health(cfg: RtdConfig) -> dict[str, Any] | None:
    import requests

    try:
        response = requests.get(f"{cfg.audit.console_url}/api/health", timeout=3)
    except requests.RequestException:
        return None
    return response.json() if response.ok else None


def print_demo_accuracy(cfg: RtdConfig, out: Console, poll_s: float = 3.0) -> None:
    """Wait until every joined label's decision is mature (inside the longest window),
    then print their accuracy (the model beside rules only); give up after maturity plus
    3 min and print what is there."""
    import time

    deadline = time.monotonic() + cfg.audit.label_maturity_ms / 1000 + 180
    window = str(max(cfg.audit.accuracy_windows_min))
    health: dict[str, Any] | None = None
    with out.status(f"waiting for the decisions to mature ({cfg.audit.label_maturity_ms // 1000}"
                    " s after their minute: labels arrive late), for the accuracy"):
        while time.monotonic() < deadline:
            health = fetch_health(cfg)
            if health is not None:
                acc = health["accuracy"]
                labelled = acc["windows"][window]["labelled"]
                if (labelled and acc.get("labels_behind") == 0 and not acc["labels_pending"]
                        and labelled >= acc["labels_joined"]):
                    break
            time.sleep(poll_s)
    if health is None or not health["accuracy"]["windows"][window]["labelled"]:
        out.print(f"no mature labelled decision yet: see {cfg.audit.console_url}")
        return
    out.print(accuracy_table(window, health["accuracy"]["windows"][window]))
    out.print(f"per model version over time: {cfg.audit.console_url}/accuracy/all")


@audit_app.command("health")
def health(config: ConfigOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="The whole snapshot")] = False
           ) -> None:
    """The health snapshot of the running audit service (what the console shows)."""
    cfg = config_or_exit(config)
    snap = fetch_health(cfg)
    if snap is None:
        console.print(f"[red]error:[/red] no health from {cfg.audit.console_url}: is the "
                      "audit service running (`rtd stack status`)?")
        raise typer.Exit(1)
    if as_json:
        console.print_json(json.dumps(snap))
        return
    lat, vis, fb, comp = (snap["latency_ms"], snap["visibility_ms"], snap["fallback"],
                          snap["completeness"])
    console.print(f"last {snap['tile_window_min']} min: {snap['traffic']['decisions']} "
                  f"decisions; latency p50/p99/p99.9 {lat['p50']}/{lat['p99']}/{lat['p999']} ms; "
                  f"commit visible p99 {vis['p99']} ms; fallback {_pct(fb['rate'])} "
                  f"{fb['causes']}; completeness {_pct(comp and comp['share_complete'])}")
    for window_min, body in snap["accuracy"]["windows"].items():
        console.print(accuracy_table(window_min, body))
