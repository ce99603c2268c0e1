"""`shoal chaos run ...`: the chaos suite (docs/chaos.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.console import Console

from shoal.chaos.fault_names import all_fault_names, parse_faults

app = typer.Typer(help="The chaos suite.", no_args_is_help=True)


def _bad(msg: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {msg}")
    return typer.Exit(2)


@app.command("run")
def run(
    db: str = typer.Option(..., "--db", help="The database to torture."),
    faults: str | None = typer.Option(
        None,
        "--faults",
        help=(
            f"Comma-separated faults, from: {', '.join(all_fault_names())}; "
            "join two or three with + for a compound fault (pause-replica+kill-primary)."
        ),
    ),
    duration: float | None = typer.Option(None, "--duration", help="Workload seconds."),
    report_dir: str = typer.Option("chaos-report", "--report", help="Report directory."),
    suite: str = typer.Option("smoke", "--suite", help="smoke, full, safety or a suite YAML file."),
    workload: str | None = typer.Option(None, "--workload", help="set or bank."),
    interval: float | None = typer.Option(None, "--settle", help="Seconds between faults."),
    fault_duration: float | None = typer.Option(None, "--fault-duration", help="Hold seconds."),
    image: str | None = typer.Option(None, "--image", help="Client image (operator image)."),
    password_file: str | None = typer.Option(
        None, "--password-file", help="Read the app password here, not `shoal credentials`."
    ),
) -> None:
    """Run a workload against DB while injecting faults; exit 1 if anything was lost."""
    from shoal import names
    from shoal.chaos.runner import BadInput, ChaosAborted, RunOptions, run_chaos
    from shoal.chaos.suite import SuiteError, load_suite

    report = Path(report_dir)
    try:
        s = load_suite(suite)
        updates: dict[str, object] = {}
        if faults is not None:
            names_ = [f.strip() for f in faults.split(",") if f.strip()]
            for f in names_:
                parse_faults(f)
            if not names_:
                raise ValueError("--faults: at least one fault is needed")
            updates["faults"] = names_
        if duration is not None:
            if duration <= 0:
                raise ValueError(f"--duration: must be positive, got {duration}")
            updates["duration"] = duration
        if workload is not None:
            if workload not in ("set", "bank"):
                raise ValueError(f"--workload: must be set or bank, got {workload!r}")
            updates["workload"] = workload
        if interval is not None:
            updates["settle"] = max(0.0, interval)
        if fault_duration is not None:
            updates["fault_duration"] = max(0.0, fault_duration)
        s = s.model_copy(update=updates)
        password = None
        if password_file is not None:
            try:
                password = Path(password_file).read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ValueError(f"--password-file: {e}") from None
        if report.exists() and not report.is_dir():
            raise ValueError(f"--report: {report} exists and is not a directory")
    except (SuiteError, ValueError) as e:
        raise _bad(str(e)) from None
    console = Console()
    opts = RunOptions(
        db=db, suite=s, report_dir=report, image=image or names.IMAGE_OPERATOR, password=password
    )
    try:
        code, rep = asyncio.run(run_chaos(opts, console))
    except BadInput as e:
        raise _bad(str(e)) from None
    except ChaosAborted as e:
        console.print(f"[red]chaos run stopped: {e}[/red]")
        raise typer.Exit(1) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]interrupted: faults undone, chaos containers removed[/yellow]")
        raise typer.Exit(130) from None
    if rep is not None:
        console.print(
            f"acknowledged={rep['acknowledged']} lost={rep['lost']} phantom={rep['phantom']} "
            f"diverged={rep['diverged']} max_outage={rep['max_outage_seconds']}s "
            f"report: {report / 'index.html'}"
        )
    raise typer.Exit(code)


report_app = typer.Typer(help="Work with chaos reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("merge")
def merge(
    dirs: list[Path] = typer.Argument(..., help="Report directories (or report.json files)."),
    out: Path | None = typer.Option(None, "--out", help="Write the merged report.json here."),
    as_json: bool = typer.Option(False, "--json", help="Print the merged report as JSON."),
) -> None:
    """Add several runs' reports up; exit 1 if any run lost or diverged anything."""
    from rich.table import Table

    from shoal.chaos.merge import ReportError, load_reports, merge_reports

    try:
        merged = merge_reports(load_reports(dirs))
    except ReportError as e:
        raise _bad(str(e)) from None
    if out is not None:
        try:
            out.write_text(json.dumps(merged, indent=1))
        except OSError as e:
            raise _bad(f"--out {out}: {e}") from None
    if as_json:
        typer.echo(json.dumps(merged, indent=1))
    else:
        console = Console()
        table = Table("fault", "injections", "recovered", "median s", "p95 s", "max s")
        for r in merged["recovery"]:
            table.add_row(
                r["type"], str(r["injections"]), str(r["recovered"]),
                *(str(r[k]) for k in ("median_recovery_seconds", "p95_recovery_seconds",
                                      "max_recovery_seconds")),
            )  # fmt: skip
        console.print(table)
        console.print(
            f"{len(merged['runs'])} runs: acknowledged={merged['acknowledged']} "
            f"lost={merged['lost']} phantom={merged['phantom']} diverged={merged['diverged']} "
            f"max_outage={merged['max_outage_seconds']}s"
        )
    raise typer.Exit(0 if merged["valid"] else 1)
