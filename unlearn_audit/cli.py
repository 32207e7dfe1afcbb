"""Command line: ``unlearn-audit audit | report | calibrate``. No logic lives here: each command parses its
arguments, calls the library, prints, and maps errors to exit codes (0 pass, 1 fail, 2 usage/input error,
3 inconclusive)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

USAGE_ERROR = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(USAGE_ERROR)


def _input_errors():
    from unlearn_audit.audit import AuditInputError, OutputDirError
    from unlearn_audit.certify import CertificationError
    from unlearn_audit.config import ConfigError
    from unlearn_audit.data import DataError
    from unlearn_audit.hfocu import UnlearningError
    from unlearn_audit.models import ModelError
    from unlearn_audit.report import ReportError

    return (AuditInputError, OutputDirError, CertificationError, ConfigError, DataError, UnlearningError, ModelError,
            ReportError)


class _Progress:
    """rich progress bars, one task per pipeline step."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), console=console, transient=False)
        self.tasks = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.bar.add_task(step, total=total)
        self.bar.update(self.tasks[step], completed=done, total=total)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="unlearn-audit")
def main() -> None:
    """Certified machine unlearning (HF-OCU) and a statistically sound audit of it."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config (see docs/config.md). Default: the bundled digits audit.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder to write (default: reports/run-<UTC time>). Must be empty unless --force.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--no-pdf", is_flag=True, help="Skip report.pdf (HTML only).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def audit(config_path, out_dir, force, no_pdf, quiet):
    """Train with approximators, delete a forget set, attack, test, and write a report.

    \b
    Examples:
      unlearn-audit audit                          # default audit on scikit-learn digits
      unlearn-audit audit --config examples/digits.toml --out runs/digits
    Exit codes: 0 pass, 1 fail, 2 usage or input error, 3 inconclusive.
    """
    from rich.console import Console

    from unlearn_audit.audit import default_run_dir, execute_audit
    from unlearn_audit.audit.run import check_out_dir
    from unlearn_audit.config import load_config

    errors = _input_errors()
    try:
        cfg = load_config(config_path)
        out = Path(out_dir) if out_dir else default_run_dir()
        check_out_dir(out, force)
    except errors as err:
        _fail(str(err))
    console = Console(stderr=True)
    progress = None if quiet else _Progress(console)
    try:
        if progress:
            with progress.bar:
                results = execute_audit(cfg, out, force=force, pdf=not no_pdf, progress=progress)
        else:
            results = execute_audit(cfg, out, force=force, pdf=not no_pdf)
    except errors as err:
        _fail(str(err))
    from unlearn_audit.report.summary import summary_table

    click.echo(summary_table(results))
    click.echo(f"report: {out / 'report.html'}")
    sys.exit(results["verdict"]["exit_code"])


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--no-pdf", is_flag=True, help="Skip report.pdf.")
def report(run_dir, no_pdf):
    """Re-render report.html / report.pdf of a finished run from its results.json (no recomputation).

    \b
    Example:
      unlearn-audit report reports/example
    """
    from unlearn_audit.report import write_report

    try:
        paths = write_report(Path(run_dir), pdf=not no_pdf)
    except _input_errors() as err:
        _fail(str(err))
    for p in paths:
        click.echo(f"wrote {p}")


@main.command()
@click.option("--epsilon", type=float, required=True, help="ε > 0")
@click.option("--delta", type=float, required=True, help="δ in (0, 1)")
@click.option("--sensitivity", type=float, required=True, help="L2 sensitivity Δ ≥ 0")
@click.option("--mechanism", type=click.Choice(["analytic", "classic"]), default="analytic", show_default=True)
def calibrate(epsilon, delta, sensitivity, mechanism):
    """Print the Gaussian noise σ for (ε, δ) and sensitivity Δ.

    \b
    Example:
      unlearn-audit calibrate --epsilon 1 --delta 1e-5 --sensitivity 1     # 3.7307...
    """
    from unlearn_audit.certify import calibrate as calibrate_sigma

    try:
        sigma = calibrate_sigma(epsilon, delta, sensitivity, mechanism)
    except _input_errors() as err:
        _fail(str(err))
    click.echo(f"{sigma:.6g}")


if __name__ == "__main__":
    main()
