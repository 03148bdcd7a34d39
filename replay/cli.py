"""The ``replay`` CLI: re-dispatch a captured run to handlers, verify it, or recapture it.

A thin layer over :class:`replay.ReplayEngine`. Library errors become one line on stderr and an
exit status — never a traceback: 0 success; 1 an integrity failure (gap, hash mismatch,
quarantined run), a handler failure or a recapture divergence; 2 bad usage (arguments, run ids,
handler specs, a run that cannot be opened); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from mmaplog import (
    CorruptionError,
    MmapLogError,
    Reader,
    RunInfo,
    Store,
    default_root,
    version_line,
)
from mmaplog.cli.common import UsageError as OutputUsageError
from mmaplog.cli.common import instance_arg
from mmaplog.cli.output import check_output_target, open_output
from mmaplog.cli.text import silence_stdout
from replay.decoders import DecoderRegistry, decoders_for_run
from replay.engine import ReplayEngine
from replay.errors import (
    DeterminismError,
    HandlerError,
    HandlerSpecError,
    ReplayError,
    ReplayIntegrityError,
    ReplayOptionError,
)
from replay.handlers import CountHandler, PrintHandler, load_handler
from replay.options import (
    ReplayOptions,
    parse_correlation_id,
    parse_key,
    parse_pace,
    parse_time,
)
from replay.projection import ProjectionHandler
from replay.report import ReplayReport

__all__ = ["build_parser", "main"]

PROG = "replay"
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BUILTIN_HANDLERS = ("print", "count", "projection")


class UsageError(Exception):
    """Bad arguments: exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Re-dispatch the entries of a captured run, in seq order, to handlers.",
        epilog="Exit status: 0 success, 1 integrity or handler failure, 2 bad usage.",
    )
    p.add_argument("--version", action="version", version=version_line(PROG))
    p.add_argument("run", metavar="RUN_ID", nargs="?", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--root", type=Path, default=None, help="store root ($MMAPLOG_ROOT or ./mmaplog-data)"
    )
    p.add_argument(
        "--instance",
        type=instance_arg,
        default=None,
        metavar="I",
        help="resolve RUN_ID in instance I",
    )
    sel = p.add_argument_group("selection (filters combine with AND)")
    sel.add_argument("--from-seq", type=_seq, default=None, metavar="N", help="first seq")
    sel.add_argument("--to-seq", type=_seq, default=None, metavar="N", help="last seq")
    sel.add_argument(
        "--from-snapshot",
        action="store_true",
        help="start after the run's latest snapshot anchor",
    )
    sel.add_argument("--since", default=None, metavar="T", help="ts_init >= T (ISO-8601 or ns)")
    sel.add_argument("--until", default=None, metavar="T", help="ts_init <= T (ISO-8601 or ns)")
    sel.add_argument("--topic", default=None, metavar="GLOB", help="topic glob, e.g. 'exec.*'")
    sel.add_argument("--type", default=None, metavar="T", help="payload type (glob)")
    sel.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KIND=VALUE",
        help="entries carrying an index key, e.g. client_order_id=O-1 (repeat: any of them)",
    )
    sel.add_argument("--correlation-id", default=None, metavar="ID", help="correlation id UUID")
    out = p.add_argument_group("handlers and output")
    out.add_argument(
        "--handler",
        action="append",
        default=[],
        metavar="SPEC",
        help="print | count | projection | pkg.module:attr (repeatable; default print)",
    )
    out.add_argument(
        "--decoders",
        action="append",
        default=[],
        metavar="SPEC",
        help="register more decoders from pkg.module:attr (a DecoderRegistry or a mapping)",
    )
    out.add_argument(
        "--format", choices=("table", "jsonl"), default="table", help="output of the built-ins"
    )
    out.add_argument(
        "--json-report", type=Path, default=None, metavar="F", help="write the report as JSON to F"
    )
    run = p.add_argument_group("running")
    run.add_argument(
        "--pace", default="max", metavar="max|original|xN", help="dispatch speed (default max)"
    )
    run.add_argument(
        "--follow", action="store_true", help="keep dispatching a RUNNING run until it seals"
    )
    run.add_argument(
        "--verify-only", action="store_true", help="check hashes and gaps, dispatch nothing"
    )
    run.add_argument(
        "--recapture",
        action="store_true",
        help="re-run a demo run's inputs with capture on into a new run and compare the two",
    )
    run.add_argument(
        "--continue-on-error",
        action="store_true",
        help="record integrity and handler errors and go on (the exit status is still 1)",
    )
    return p


def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seq (integer >= 1), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"seqs are 1-based, got {value}")
    return value


# --- building the replay from arguments -----------------------------------------------------
def options_from(args: argparse.Namespace) -> ReplayOptions:
    return ReplayOptions(
        from_seq=args.from_seq,
        to_seq=args.to_seq,
        since=None if args.since is None else parse_time(args.since, "--since"),
        until=None if args.until is None else parse_time(args.until, "--until"),
        topic=args.topic,
        payload_type=args.type,
        keys=tuple(parse_key(k) for k in args.key),
        correlation_id=(
            None if args.correlation_id is None else parse_correlation_id(args.correlation_id)
        ),
        pace=parse_pace(args.pace),
        from_snapshot=args.from_snapshot,
        follow=args.follow,
        verify_only=args.verify_only,
        continue_on_error=args.continue_on_error,
    )


def handlers_from(args: argparse.Namespace) -> list[Any]:
    if args.verify_only and args.handler:
        raise UsageError("--verify-only dispatches nothing: drop --handler")
    specs = args.handler or ([] if args.verify_only else ["print"])
    handlers: list[Any] = []
    for spec in specs:
        if spec == "print":
            handlers.append(PrintHandler(sys.stdout, args.format))
        elif spec == "count":
            handlers.append(CountHandler())
        elif spec == "projection":
            handlers.append(ProjectionHandler())
        elif ":" not in spec and "/" not in spec and not spec.endswith(".py"):
            raise HandlerSpecError(
                spec,
                f"unknown built-in; use one of {', '.join(BUILTIN_HANDLERS)} or pkg.module:attr",
            )
        else:
            handlers.append(load_handler(spec))
    return handlers


def _check_recapture_args(args: argparse.Namespace) -> None:
    conflicting = [
        name
        for name, given in (
            ("--from-seq", args.from_seq is not None),
            ("--to-seq", args.to_seq is not None),
            ("--from-snapshot", args.from_snapshot),
            ("--since", args.since is not None),
            ("--until", args.until is not None),
            ("--topic", args.topic is not None),
            ("--type", args.type is not None),
            ("--key", bool(args.key)),
            ("--correlation-id", args.correlation_id is not None),
            ("--handler", bool(args.handler)),
            ("--follow", args.follow),
            ("--verify-only", args.verify_only),
        )
        if given
    ]
    if conflicting:
        raise UsageError(
            f"--recapture replays the whole run into the demo engine; it cannot be combined "
            f"with {', '.join(conflicting)}"
        )


def _json_report_target(path: Path | None) -> Path | None:
    if path is None:
        return None
    try:
        return check_output_target(path, "--json-report")
    except OutputUsageError as exc:
        raise UsageError(str(exc)) from None


def write_report(path: Path | None, data: bytes) -> None:
    if path is None:
        return
    with open_output(path) as stream:
        stream.write(data.decode())


def resolve(args: argparse.Namespace) -> RunInfo:
    """The run RUN_ID names. A missing root is a usage error (exit 2); a run whose manifest is
    damaged is a ``CorruptionError`` (exit 1), like any other damage."""
    store = Store(args.root if args.root is not None else default_root()).require_root()
    info = store.resolve(args.run, args.instance)
    if info.manifest is None:
        raise CorruptionError(f"run {info.run_id} cannot be read: {info.error}")
    return info


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


@contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        f"[bold]{label}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),
        redirect_stdout=False,
        redirect_stderr=False,
    ) as bar:
        task = bar.add_task(label, total=total or None)
        yield lambda done: bar.update(task, completed=done)


# --- commands -------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    options = options_from(args)
    handlers = handlers_from(args)
    extra_decoders = DecoderRegistry()
    for spec in args.decoders:  # checked before the run is resolved, like every other option
        extra_decoders.register_module(spec)
    report_path = _json_report_target(args.json_report)
    info = resolve(args)
    decoders = decoders_for_run(info.manifest, info.run_dir)
    decoders.update(extra_decoders)
    # Lines on a terminal are their own progress; a bar would tear through them.
    printing = any(isinstance(h, PrintHandler) for h in handlers) and sys.stdout.isatty()
    with Reader(info.run_dir) as reader:
        hwm = reader.high_watermark
        label = "verify" if options.verify_only else "replay"
        with _progress(0 if options.follow else hwm, label, not printing) as advance:
            engine = ReplayEngine(reader, decoders, handlers, options, progress=advance)
            try:
                report = engine.run()
            except KeyboardInterrupt:
                _finish(engine.report(), args, report_path, handlers)
                _err("interrupted")
                return EXIT_INTERRUPTED
            except (ReplayIntegrityError, HandlerError) as exc:
                write_report(report_path, engine.report().to_json())
                kind = "integrity" if isinstance(exc, ReplayIntegrityError) else "handler failed"
                _err(f"{kind}: {exc}")
                return EXIT_FAIL
    return _finish(report, args, report_path, handlers)


def _finish(
    report: ReplayReport, args: argparse.Namespace, path: Path | None, handlers: list[Any]
) -> int:
    write_report(path, report.to_json())
    for handler in handlers:
        render = getattr(handler, "render", None)
        if callable(render):
            for line in render(args.format):
                sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if report.mode == "verify":
        if args.format == "jsonl":
            sys.stdout.write(report.to_json(indent=0).replace(b"\n", b"").decode() + "\n")
        else:
            sys.stdout.write(report.summary() + "\n")
    else:
        print(report.summary(), file=sys.stderr)
    for note in report.notes:
        _err(f"note: {note}")
    if not report.ok:
        shown = report.errors[:5]
        for record in shown:
            where = "" if record.seq is None else f"seq {record.seq}: "
            _err(f"{record.kind}: {where}{record.message}")
        if report.error_count > len(shown):
            more = report.error_count - len(shown)
            _err(f"... and {more} more error{'' if more == 1 else 's'}")
        return EXIT_FAIL
    return EXIT_OK


def cmd_recapture(args: argparse.Namespace) -> int:
    from replay.recapture import recapture

    _check_recapture_args(args)
    options = options_from(args)
    report_path = _json_report_target(args.json_report)
    info = resolve(args)
    store = Store(args.root if args.root is not None else default_root())
    with _progress(info.manifest.high_watermark if info.manifest else 0, "recapture", True) as adv:
        result = recapture(store, info, options=options, progress=adv)
    write_report(report_path, result.to_json())
    lines = result.render(args.format)
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if result.divergence is not None:
        raise DeterminismError(result.divergence.describe())
    if not result.replay.ok:
        return _finish(result.replay, args, None, [])
    return EXIT_OK


# --- entry point ----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    # User handler modules are imported relative to the current directory, as `python -m` does.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise UsageError(f"unrecognized arguments: {' '.join(extras)}")
        if args.run is None:
            raise UsageError("give a RUN_ID: a run id, a unique prefix of one, or 'latest'")
        if args.recapture:
            return cmd_recapture(args)
        return cmd_replay(args)
    except (UsageError, ReplayOptionError, HandlerSpecError) as exc:
        _err(f"usage error: {exc}")
        return EXIT_USAGE
    except DeterminismError as exc:
        _err(f"not deterministic: {exc}")
        return EXIT_FAIL
    except (ReplayIntegrityError, HandlerError) as exc:
        _err(f"{'integrity' if isinstance(exc, ReplayIntegrityError) else 'handler failed'}: {exc}")
        return EXIT_FAIL
    except ReplayError as exc:
        _err(f"error: {exc}")
        return EXIT_FAIL
    except CorruptionError as exc:
        _err(f"corrupt: {exc}")
        return EXIT_FAIL
    except MmapLogError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()  # the reader went away (| head): stop quietly, like other Unix tools
        return EXIT_OK
    except OSError as exc:
        _err(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
