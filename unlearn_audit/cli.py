"""Command line: ``unlearn-audit audit | report | calibrate | forget | precompute``. No logic lives here: each
command parses its arguments, calls the library, prints, and maps errors to exit codes (0 pass, 1 fail, 2 usage/input
error, 3 inconclusive, 4 internal error: a bug, reported in one line with the traceback saved to a file; forget only:
5 applied and released, but the deletion capacity is spent and a retrain is due; 130 when interrupted by SIGINT, 143
by SIGTERM: the interrupted step cleans up after itself, as after any failure). Every error is one line on stderr,
click's usage errors included."""

from __future__ import annotations

import sys
from pathlib import Path

import click

USAGE_ERROR = 2
INTERNAL_ERROR = 4
RETRAIN_DUE = 5             # forget: applied and released, but the deletion capacity is spent


def _fail(message: str) -> None:
    message = _one_line(message)                        # exactly one line, whatever the error text held
    click.echo(f"error: {message}", err=True)
    sys.exit(USAGE_ERROR)


def _input_errors():
    from unlearn_audit.audit import AuditInputError, OutputDirError
    from unlearn_audit.audit.methods import MethodError
    from unlearn_audit.certify import CertificationError
    from unlearn_audit.config import ConfigError
    from unlearn_audit.data import DataError
    from unlearn_audit.hfocu import UnlearningError
    from unlearn_audit.models import ModelError
    from unlearn_audit.plugins import PluginError
    from unlearn_audit.report import ReportError

    return (AuditInputError, OutputDirError, CertificationError, ConfigError, DataError, UnlearningError, ModelError,
            ReportError, PluginError, MethodError)


class _Progress:
    """Progress of the pipeline's steps on stderr. On a terminal: one rich bar per step (spinner, bar, count for
    counted steps, elapsed time; a tick when done). Otherwise (logs, CI, pipes): one plain line per finished step."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = console
        self.live = console.is_terminal
        self.bar = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description:<28}"),
                            BarColumn(bar_width=32), TextColumn("{task.fields[count]:>9}"), TimeElapsedColumn(),
                            console=console, transient=False, disable=not self.live)
        self.tasks: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.finished: set[str] = set()

    def __call__(self, step: str, done: int, total: int) -> None:
        import time

        count = f"{done}/{total}" if total > 1 else ""
        if step not in self.tasks:
            self.tasks[step] = self.bar.add_task(step, total=max(total, 1), count=count)
            self.started[step] = time.perf_counter()
        self.bar.update(self.tasks[step], completed=done, total=max(total, 1), count=count)
        if done >= total and step not in self.finished:
            self.finished.add(step)
            if not self.live:
                self.console.print(f"done: {step} ({time.perf_counter() - self.started[step]:.1f} s)", highlight=False,
                                   markup=False)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _exit_stopped(stop=None):
    """One line and exit code 128 + signal for a stop (:class:`unlearn_audit.interrupts.Stopped`); a
    KeyboardInterrupt that did not come through the signal handler counts as SIGINT."""
    import signal

    from unlearn_audit.interrupts import Stopped

    stop = stop if stop is not None else Stopped(signal.SIGINT)
    click.echo(f"error: {stop.message}", err=True)
    sys.exit(stop.code)


class _Commands(click.Group):
    """Any exception a command does not map to an exit code is a bug: one line on stderr naming it and the file
    holding its traceback, exit code 4 (never 1, which means "audit failed"). Usage errors are one line (exit 2);
    SIGINT exits 130 and SIGTERM 143, after the command cleaned up."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from unlearn_audit.interrupts import Stopped, StopSignals

        with StopSignals():
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except Stopped as stop:
                _exit_stopped(stop=stop)
            except (click.exceptions.Abort, KeyboardInterrupt):   # a KeyboardInterrupt not raised by SIGINT
                _exit_stopped()
            except click.ClickException as err:
                where = ""
                ctx = getattr(err, "ctx", None)
                if ctx is not None:
                    where = f" (see '{ctx.command_path} --help')"
                click.echo(f"error: {_one_line(err.format_message())}{where}", err=True)
                sys.exit(err.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _exit_stopped()
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as err:                                  # noqa: BLE001 - the last resort, by design
            import tempfile
            import traceback

            with tempfile.NamedTemporaryFile("w", prefix="unlearn-audit-error-", suffix=".txt", delete=False,
                                             encoding="utf-8") as f:
                traceback.print_exc(file=f)
            message = " ".join(f"{type(err).__name__}: {err}".split())
            click.echo(f"internal error: {message} (traceback in {f.name}; please report it)", err=True)
            sys.exit(INTERNAL_ERROR)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--plugin-path", "plugin_path", multiple=True, type=click.Path(file_okay=False),
              help="Folder searched first for the user code the config names (model.factory, "
                   "'package.module:Class' methods); repeatable. Importing user code runs it.")
@click.option("--unlearned-weights", "unlearned_weights", type=click.Path(dir_okay=False), default=None,
              help="A .npy weight vector unlearned outside the tool from the exported trained run, for the ids of "
                   "unlearning.forget_file: judged as the method 'external' (a single model: can fail, never pass).")
@click.option("--trained-run", "trained_run", type=click.Path(file_okay=False), default=None,
              help="With --unlearned-weights: the trained run they were unlearned from (checked to be the model "
                   "this config trains).")
def audit(config_path, out_dir, force, no_pdf, quiet, plugin_path, unlearned_weights, trained_run):
    """Train with approximators, delete a forget set, attack, test, and write a report.

    \b
    Examples:
      unlearn-audit audit                          # default audit on scikit-learn digits
      unlearn-audit audit --config examples/digits.toml --out runs/digits
      unlearn-audit audit --config examples/plugin/audit.toml --plugin-path examples/plugin
    Exit codes: 0 pass, 1 fail, 2 usage or input error, 3 inconclusive.
    """
    from rich.console import Console

    from unlearn_audit.audit import default_run_dir, execute_audit
    from unlearn_audit.audit.run import check_out_dir, preflight
    from unlearn_audit.config import load_config

    errors = _input_errors()
    try:
        cfg = load_config(config_path).with_command_line(plugin_path=plugin_path, unlearned_weights=unlearned_weights,
                                                         trained_run=trained_run)
        out = Path(out_dir) if out_dir is not None else default_run_dir()
        check_out_dir(out, force)
        preflight(cfg)
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
      unlearn-audit calibrate --epsilon 1 --delta 1e-5 --sensitivity 1     # prints 3.73064 (rounded up)
    """
    from unlearn_audit.certify import calibrate as calibrate_sigma
    from unlearn_audit.certify import sigma_text

    try:
        sigma = calibrate_sigma(epsilon, delta, sensitivity, mechanism, finite=True)
    except _input_errors() as err:
        _fail(str(err))
    click.echo(sigma_text(sigma))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--requests", "requests_file", type=click.Path(dir_okay=False), required=True,
              help="The record ids of one deletion request: one id per line, or JSON lines (a JSON string per "
                   "line) for a file named *.jsonl.")
@click.option("--epsilon", type=float, default=1.0, show_default=True, help="ε > 0 of the released model")
@click.option("--delta", type=float, default=1e-5, show_default=True, help="δ in (0, 1)")
@click.option("--mechanism", type=click.Choice(["analytic", "classic"]), default="analytic", show_default=True)
@click.option("--request-id", default=None,
              help="Idempotency key (default: a keyed hash of the record ids, under RUN_DIR/record_id.key).")
def forget(run_dir, requests_file, epsilon, delta, mechanism, request_id):
    """Delete records from a finished run's model through its deletion ledger, and release it certified.

    RUN_DIR is an audit run folder (with trained_run/) or a trained-run folder (such as the --out folder of
    `unlearn-audit precompute`). The request is recorded in
    RUN_DIR/ledger.sqlite; re-sending the same request id applies it once. The released weights (fresh noise
    calibrated to every record deleted so far) go to RUN_DIR/releases/<request_id>.npy. Record ids are one line of
    visible text each; use a *.jsonl file (one JSON string per line) for ids that need escaping.

    \b
    Example:
      printf 'digits:17\\ndigits:302\\n' > erase.txt
      unlearn-audit forget reports/run-20250101-120000 --requests erase.txt --epsilon 1 --delta 1e-5
    Exit codes: 0 done (or already done), 2 usage or input error (including a release that is not certifiable in
    this regime: nothing is applied), 5 done, but the deletion capacity is spent: this release's noise exceeds the
    run's utility budget (privacy.max_accuracy_loss of the audit that saved it), so a retrain is due.
    """
    from unlearn_audit.deletion import LedgerError, forget_from_file

    try:
        receipt, path, recovered = forget_from_file(run_dir, requests_file, epsilon=epsilon, delta=delta,
                                                    mechanism=mechanism, request_id=request_id)
    except _input_errors() + (LedgerError,) as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"{err.filename or run_dir}: {err.strerror or err}")
    for entry in recovered:
        click.echo(f"recovered: pending request {entry.request_id} from an interrupted run was rolled back "
                   "(never applied, never released)")
    for line in receipt.describe():
        click.echo(line)
    click.echo(f"released weights: {path}")
    if receipt.retrain_due:
        sys.exit(RETRAIN_DUE)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Audit TOML config (data, model, training sections). Default: the bundled digits audit.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder: a trained run (store/, weights, ids, schedule, spec, manifest) and precompute.json. "
                   "Must be empty unless --force.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes, each owning a contiguous shard of the records.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="cuda/auto: nccl with one GPU per process when available, else CPU with gloo.")
@click.option("--store-dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True)
@click.option("--chunk-rows", type=click.IntRange(min=1), default=None, help="Rows per store chunk (default ~16 MiB).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads per process.")
@click.option("--force", is_flag=True, help="Replace a previous precompute in --out.")
@click.option("--layout", type=click.Choice(["auto", "time_outer", "chunk_outer", "reverse"]), default=None,
              help="Default: the config's unlearning.layout (auto: a cost model picks, reverse when d < n; "
                   "precompute.json says which and why).")
@click.option("--start-method", type=click.Choice(["spawn", "fork"]), default="spawn", show_default=True,
              help="How workers start; fork (CPU only) skips their import time.")
@click.option("--verbose", is_flag=True, help="Log the per-epoch weight checks.")
@click.option("--plugin-path", "plugin_path", multiple=True, type=click.Path(file_okay=False),
              help="Folder searched first for the model.factory the config names; repeatable. Importing runs it.")
def precompute(config_path, out_dir, nproc, device, store_dtype, chunk_rows, threads, force, layout, start_method,
               verbose, plugin_path):
    """Sharded HF-OCU approximator precompute on torch.distributed (gloo on CPU, nccl on GPUs).

    Writes a trained run into --out that `unlearn-audit forget OUT --requests FILE` serves. Under torchrun each
    process is one rank (--nproc is then ignored).

    \b
    Examples:
      unlearn-audit precompute --config audit.toml --out runs/pre --nproc 2
      torchrun --nproc_per_node 2 -m unlearn_audit.cli precompute --config audit.toml --out runs/pre
      unlearn-audit forget runs/pre --requests erase.txt
    """
    from unlearn_audit.config import load_config
    from unlearn_audit.deletion.precompute import DistributedError
    from unlearn_audit.deletion.precompute import precompute as run
    from unlearn_audit.hfocu.store import StoreError

    try:
        cfg = load_config(config_path).with_command_line(plugin_path=plugin_path)
        info = run(cfg, Path(out_dir), nproc=nproc, device=device, store_dtype=store_dtype, chunk_rows=chunk_rows,
                   force=force, threads=threads, layout=layout or cfg.unlearning.layout, verbose=verbose,
                   start_method=start_method)
    except _input_errors() + (DistributedError, StoreError) as err:
        _fail(str(err))
    if info is None:                     # a rank other than 0 under torchrun: rank 0 reports
        return
    click.echo(f"precompute: n={info['n']} d={info['d']} on {info['world_size']} process(es) ({info['backend']}, "
               f"{info['layout']}) in {info['wall_seconds']:.2f} s")
    if info.get("layout_reason"):
        click.echo(f"layout {info['layout']}: {info['layout_reason']}")
    if info.get("quantisation"):
        click.echo(f"bfloat16 store: max row relative error {info['quantisation']['max_row_relative_error']:.3g}")
    if info.get("device_note"):
        click.echo(f"note: {info['device_note']}")
    click.echo(f"trained run: {out_dir} (store {info['store_bytes'] / 2 ** 20:.1f} MiB; "
               f"serve deletions with: unlearn-audit forget {out_dir} --requests FILE)")


def entry() -> None:
    """The console script and ``python -m unlearn_audit.cli``: the command is the whole process, so a signal after it
    has decided its exit code is ignored on the way out (:mod:`unlearn_audit.interrupts`)."""
    from unlearn_audit.interrupts import process_exit

    process_exit()
    main()


if __name__ == "__main__":
    entry()
