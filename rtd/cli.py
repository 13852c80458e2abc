"""`rtd`: one CLI for the local stack, the job, the simulator, the demo and the audit."""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rtd.audit_cli import audit_app
from rtd.bench_cli import bench
from rtd.cli_config import ConfigOption, config_or_exit
from rtd.drill_cli import drill
from rtd.replay_cli import replay
from rtd.simulator_cli import simulate
from rtd.train_cli import train
from stack.processes import StackError

app = typer.Typer(help="Real-time decisions on PyFlink: local stack, job, simulator, audit.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
stack_app = typer.Typer(help="The local stack: Kafka (KRaft), Flink cluster, model server.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.command("simulate")(simulate)
app.command("replay")(replay)
app.command("train")(train)
app.command("bench")(bench)
app.command("drill")(drill)
app.add_typer(audit_app, name="audit")
console = Console()





def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


@app.command()
def setup(config: ConfigOption = None) -> None:
    """Fetch what is missing: Kafka, connector and Flink reporter jars (Maven Central),
    the bootstrap model, headless Chromium for the console's browser test and jemalloc for
    the Flink processes (Debian)."""
    from stack.browser import ensure_browser
    from stack.flink_cluster import ensure_jemalloc
    from stack.jars import ensure_jars
    from stack.model_server import ModelServer

    cfg = config_or_exit(config)
    try:
        with console.status("resolving jars from Maven Central"):
            ensure_jars(cfg)
        with console.status("checking for a model version"):
            version = ModelServer(cfg).ensure_model()
    except StackError as exc:
        raise _fail(exc) from exc
    console.print(f"jars in {cfg.jars_path}; model base path "
                  f"{cfg.path(cfg.serving.base_path)} (latest version {version})")
    try:
        with console.status("checking for chromium and chromium-driver"):
            console.print(ensure_browser())
    except StackError as exc:
        # Only the browser test needs it (and skips, saying why, without it).
        console.print(f"[yellow]warning:[/yellow] {exc}")
    try:
        with console.status("checking for jemalloc"):
            console.print(ensure_jemalloc())
    except StackError as exc:
        # Without it the Flink processes keep glibc's malloc (flink.allocator).
        console.print(f"[yellow]warning:[/yellow] {exc}; Flink keeps glibc's malloc")


@stack_app.command("up")
def stack_up(
    config: ConfigOption = None,
    secure: Annotated[bool, typer.Option(
        "--secure", help="Kafka on SASL_SSL (SCRAM-SHA-512) and the model server on TLS, "
        "with a CA, certificates and passwords generated under <stack>/secrets")] = False,
) -> None:
    """Start Kafka, the model server and the Flink cluster (a no-op for what runs)."""
    from stack.local_stack import LocalStack
    from stack.secrets import ensure_secrets, secured

    cfg = config_or_exit(config)
    try:
        if secure:
            cfg = secured(cfg)
            ensure_secrets(cfg)
            # Paths only: the passwords stay in their files under <stack>/secrets.
            secure_file = cfg.stack_path / "secure-config.json"
            secure_file.write_text(cfg.to_json())
        LocalStack(cfg).up(log=console.print)
    except StackError as exc:
        raise _fail(exc) from exc
    if secure:
        console.print(f"secured: every other command needs --config {secure_file} "
                      f"(or export RTD_CONFIG={secure_file})")


@stack_app.command("down")
def stack_down(config: ConfigOption = None) -> None:
    """Stop the Flink cluster, the model server and Kafka (data is kept)."""
    from stack.local_stack import LocalStack

    LocalStack(config_or_exit(config)).down(log=console.print)


@stack_app.command("status")
def stack_status(config: ConfigOption = None) -> None:
    """Show what runs, where."""
    from stack.local_stack import LocalStack

    table = Table("component", "state", "address", "detail")
    statuses = LocalStack(config_or_exit(config)).status()
    for s in statuses:
        table.add_row(s.name, "[green]up[/green]" if s.running else "[red]down[/red]",
                      s.address, s.detail)
    console.print(table)
    if not all(s.running for s in statuses):
        raise typer.Exit(1)


@app.command()
def submit(
    config: ConfigOption = None,
    restart: Annotated[bool, typer.Option(help="Cancel a running job of that name first")] = False,
    from_savepoint: Annotated[str | None, typer.Option(
        help="Resume from this savepoint (`rtd stop --savepoint` prints it), at "
             "flink.parallelism")] = None,
) -> None:
    """Submit the decision job to the local Flink cluster with `flink run --python`."""
    from stack.job_submission import submit as submit_job

    cfg = config_or_exit(config)
    try:
        with console.status("submitting the decision job"):
            job_id = submit_job(cfg, restart=restart, savepoint=from_savepoint)
    except StackError as exc:
        raise _fail(exc) from exc
    console.print(f"job {cfg.job.name} running: {cfg.flink.rest_url}/#/job/running/{job_id}")


@app.command()
def stop(
    config: ConfigOption = None,
    savepoint: Annotated[bool, typer.Option(
        help="Stop with a savepoint, to resume from with `rtd submit --from-savepoint`")] = True,
) -> None:
    """Stop the running decision job (the stack keeps running)."""
    from stack.flink_cluster import FlinkCluster

    cfg = config_or_exit(config)
    cluster = FlinkCluster(cfg)
    job = cluster.running_job(cfg.job.name)
    if job is None:
        console.print(f"[red]no job {cfg.job.name} is running[/red] on {cfg.flink.rest_url}")
        raise typer.Exit(1)
    if not savepoint:
        cluster.cancel(job["jid"])
        console.print(f"job {cfg.job.name} cancelled")
        return
    try:
        with console.status("stopping with a savepoint"):
            location = cluster.stop_with_savepoint(job["jid"])
    except StackError as exc:
        raise _fail(exc) from exc
    console.print(f"job {cfg.job.name} stopped; savepoint {location}")
    console.print(f"resume with: rtd submit --from-savepoint {location}")


@app.command()
def demo(
    config: ConfigOption = None,
    rate: Annotated[float, typer.Option(help="Events per second")] = 500.0,
    duration: Annotated[float, typer.Option(help="Seconds of traffic")] = 60.0,
    seed: Annotated[int, typer.Option(help="Simulator seed")] = 42,
    accuracy: Annotated[bool, typer.Option(
        help="At the end, wait until the demo's decisions are mature (audit.label_maturity_ms) "
             "and print their accuracy as the console shows it")] = True,
) -> None:
    """Set up what is missing, start the stack, submit the job, simulate traffic and
    show a live tally of committed decisions."""
    from rtd.tally import live_tally
    from simulator.producer import run_simulation
    from stack.job_submission import submit as submit_job
    from stack.local_stack import LocalStack

    cfg = config_or_exit(config)
    try:
        LocalStack(cfg).up(log=console.print)
        with console.status("submitting the decision job"):
            job_id = submit_job(cfg)
    except StackError as exc:
        raise _fail(exc) from exc
    console.print(f"job running: {cfg.flink.rest_url}/#/job/running/{job_id}")
    if cfg.audit.enabled and cfg.audit.console_port:
        console.print(f"decision console: {cfg.audit.console_url}  (Flink UI: "
                      f"{cfg.flink.rest_url})")
    stop = threading.Event()
    tally_thread = threading.Thread(target=live_tally, args=(cfg, stop), daemon=True)
    tally_thread.start()
    try:
        summary = run_simulation(cfg, count=None, rate=rate, duration_s=duration, seed=seed,
                                 progress=False)
        # Decisions become visible when the checkpoint covering them completes.
        stop.wait(cfg.flink.checkpoint_interval_ms / 1000 * 3 + 3)
    except KeyboardInterrupt:
        summary = None
    finally:
        stop.set()
        tally_thread.join(timeout=10)
    if summary is not None:
        console.print(f"sent {len(summary.valid_event_ids)} valid and {len(summary.malformed)} "
                      f"malformed events at {summary.events_per_s:.0f}/s")
    if summary is not None and accuracy and cfg.audit.enabled and cfg.audit.console_port:
        from rtd.audit_cli import print_demo_accuracy

        print_demo_accuracy(cfg, console)
    console_note = (f"Decision console: {cfg.audit.console_url}. "
                    if cfg.audit.enabled and cfg.audit.console_port else "")
    console.print(
        f"The stack keeps running. {console_note}Flink UI: {cfg.flink.rest_url}. Explain a "
        "decision: `rtd explain EVENT_ID`. Stop everything: `make down` (or `rtd stack down`)."
    )


@app.command()
def explain(
    event_id: Annotated[str, typer.Argument(help="An event id or a decision id")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw trace")] = False,
    scan_kafka: Annotated[bool, typer.Option(
        "--scan-kafka", help="Read `decision-traces` from offset 0 instead of the audit "
        "store (slow: for a stack without the audit service)")] = False,
) -> None:
    """Why was this transaction decided so? Answers from the audit store."""
    from rtd.audit_cli import explain as explain_from_store
    from rtd.explain import explanation_lines, find_trace

    if not scan_kafka:
        explain_from_store(event_id, config, as_json)
        return
    cfg = config_or_exit(config)
    try:
        trace = find_trace(cfg, event_id)
    except Exception as exc:
        raise _fail(RuntimeError(f"reading {cfg.kafka.topics.traces} failed ({exc}); "
                                 "is the stack up? (`rtd stack status`)")) from exc
    if trace is None:
        console.print(f"[red]no committed trace for {event_id!r}[/red]: check the id, or wait "
                      "for the next checkpoint to commit it")
        raise typer.Exit(1)
    if as_json:
        console.print_json(json.dumps(trace))
        return
    for line in explanation_lines(trace):
        console.print(line, highlight=False)


@app.command("console-consumer")
def console_consumer(
    topic: Annotated[str, typer.Argument(help="Topic to read")] = "decisions",
    config: ConfigOption = None,
    max_messages: Annotated[int, typer.Option(help="Stop after N messages")] = 10,
) -> None:
    """Run Kafka's own console consumer with --isolation-level read_committed."""
    import shutil
    import tempfile

    from rtd_core.security import kafka_java_properties
    from stack.jars import kafka_classpath_dir

    cfg = config_or_exit(config)
    java = shutil.which("java") or "java"
    cmd = [java, "-cp", f"{kafka_classpath_dir(cfg)}/*",
           "org.apache.kafka.tools.consumer.ConsoleConsumer",
           "--bootstrap-server", cfg.kafka.bootstrap_servers, "--topic", topic,
           "--from-beginning", "--isolation-level", "read_committed",
           "--max-messages", str(max_messages), "--property", "print.key=true"]
    # Security settings (with the password) go in a file readable by its owner only,
    # not on the command line, where `ps` would show them.
    with tempfile.NamedTemporaryFile("w", suffix=".properties") as props:
        props.write("".join(f"{k}={v}\n" for k, v in kafka_java_properties(cfg.kafka).items()))
        props.flush()
        raise typer.Exit(subprocess.call([*cmd, "--consumer.config", props.name]))


if __name__ == "__main__":
    app()
