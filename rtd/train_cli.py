"""`rtd train`: train on a replay dataset, report, and roll out when better."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rtd.cli_config import config_or_exit
from rtd_core.config import PROJECT_ROOT, RtdConfig

_err = Console(stderr=True)


def latest_dataset(config: RtdConfig) -> Path:
    folder = config.stack_path / "datasets"
    found = sorted((p for p in folder.glob("replay-*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not found:
        raise typer.BadParameter(f"no replay dataset in {folder}: run `rtd replay` first "
                                 "or pass --dataset")
    return found[-1]




def train(
    config: Annotated[Path | None, typer.Option("--config", help="JSON config file")] = None,
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", help="Replay dataset (default: the newest under <stack_dir>/datasets)")
    ] = None,
    base_path: Annotated[Path | None, typer.Option(
        "--base-path", help="Model base path (default: the config's serving.base_path)")
    ] = None,
    report: Annotated[Path, typer.Option("--report", help="Markdown report to write")
                      ] = PROJECT_ROOT / "docs" / "model_evaluation.md",
    holdout: Annotated[float, typer.Option(
        "--holdout", min=0.01, max=0.99, help="Share of the latest events held out")] = 0.2,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 8,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    force: Annotated[bool, typer.Option(
        "--force", help="Export even if the serving model is as good or better")] = False,
    json_out: Annotated[Path | None, typer.Option(
        "--json-out", help="Also write the result as JSON to this file")] = None,
) -> None:
    """Train the Keras model on a replayed dataset (time-based split), write the
    evaluation report, and export version N+1 into the model base path when it beats
    the serving model on the holdout; the model server hot-loads it."""
    from model_training.dataset import TrainingDataError
    from model_training.report import scorers, write_report
    from model_training.train import TrainSettings, train_and_evaluate

    cfg = config_or_exit(config)
    path = dataset or latest_dataset(cfg)
    base = base_path or cfg.path(cfg.serving.base_path)
    settings = TrainSettings(dataset=path, base_path=base, holdout_fraction=holdout,
                             epochs=epochs, seed=seed, force=force, thresholds=cfg.thresholds,
                             serving_version=cfg.serving.model_version)
    try:
        with _err.status(f"training on {path}"):
            result = train_and_evaluate(settings)
    except (TrainingDataError, FileNotFoundError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    command = "rtd train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    roc, pr = write_report(result, report, command.strip())
    if json_out:
        json_out.write_text(json.dumps({
            "exported": result.exported, "reason": result.reason,
            "candidate_version": result.candidate_version,
            "serving_version": result.serving_version,
            "published": str(result.published) if result.published else None,
            "report": str(report),
            "scores": {s.name: {"auc": s.auc, "pr_auc": s.pr_auc} for s in scorers(result)},
        }, indent=1))
    table = Table("scorer", "ROC-AUC", "PR-AUC", title=f"holdout: {result.holdout_rows:,} rows, "
                  f"{result.holdout_fraud:,} fraud", title_justify="left")
    for s in scorers(result):
        table.add_row(s.name, f"{s.auc:.4f}", f"{s.pr_auc:.4f}")
    _err.print(table)
    verdict = (f"[green]exported version {result.candidate_version}[/green] to "
               f"{result.published}" if result.exported else "[yellow]not exported[/yellow]")
    _err.print(f"{verdict}: {result.reason}")
    _err.print(f"report: {report} (plots {roc.name}, {pr.name})")
