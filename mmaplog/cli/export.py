"""``mmaplog export RUN… [--format jsonl|parquet|csv]``: JSON lines of one or more runs, or
the hive-partitioned Parquet/CSV dataset (``mmaplog.query.dataset``), with the same filters
as ``replay`` (topic, type, time window, index keys)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import msgspec

from mmaplog.cli.common import (
    EXIT_OK,
    Parser,
    UsageError,
    progress_bar,
    resolve_many,
)
from mmaplog.cli.output import check_output_target, open_output
from mmaplog.cli.text import entry_record, format_bytes
from mmaplog.query.errors import SelectionError
from mmaplog.query.select import Selection, parse_key, parse_time
from mmaplog.runs.reader import Reader
from mmaplog.storage.catalog import RunInfo
from mmaplog.storage.schema_decode import RunDecoder

__all__ = ["add_export_parser", "add_selection_options", "selection_from"]


def add_selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", metavar="GLOB", default=None, help="topic glob or exact topic")
    p.add_argument("--type", metavar="T", default=None, help="payload type, glob or exact")
    p.add_argument("--since", metavar="T", default=None, help="ts_init >= T (ns or ISO-8601)")
    p.add_argument("--until", metavar="T", default=None, help="ts_init <= T (ns or ISO-8601)")
    p.add_argument(
        "--key",
        metavar="KIND=VALUE",
        action="append",
        default=[],
        help="entries carrying this index key (repeatable: any of them)",
    )


def selection_from(args: argparse.Namespace) -> Selection:
    """The filters of ``args``; a bad one is a usage error (exit 2)."""
    try:
        return Selection(
            topic=args.topic,
            payload_type=args.type,
            since=None if args.since is None else parse_time(args.since, "--since"),
            until=None if args.until is None else parse_time(args.until, "--until"),
            keys=tuple(parse_key(spec) for spec in args.key),
        )
    except SelectionError as exc:
        raise UsageError(str(exc)) from None


def add_export_parser(sub: Any, common: Parser) -> None:
    p = sub.add_parser(
        "export", parents=[common], help="JSON lines, or a Parquet/CSV dataset of runs"
    )
    p.add_argument(
        "runs", metavar="RUN", nargs="+", help="run ids, unique prefixes, 'latest' or 'all'"
    )
    p.add_argument("--format", choices=("jsonl", "parquet", "csv"), default="jsonl")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="jsonl: output file (default stdout); parquet/csv: the dataset directory",
    )
    p.add_argument("--decode", action="store_true", help="jsonl: also decode the payloads")
    add_selection_options(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    selection = selection_from(args)
    if args.format == "jsonl" and args.out is not None:
        check_output_target(args.out, "--out")  # before any work: not after a long export
    infos = resolve_many(args, args.runs)
    if args.format == "jsonl":
        return _export_jsonl(infos, args.out, args.decode, selection)
    if args.out is None:
        raise UsageError(f"--format {args.format} needs --out DIR (the dataset directory)")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is not a directory")
    from mmaplog.query.dataset import export_runs

    total = sum(_hwm(info) for info in infos)
    with progress_bar(total, "export", "entries") as advance:
        summary = export_runs(
            infos, args.out, fmt=args.format, selection=selection, progress=advance
        )
    print(
        f"exported {summary.entries:,} entries of {summary.runs} run"
        f"{'' if summary.runs == 1 else 's'} into {len(summary.files)} {args.format} files "
        f"({format_bytes(summary.bytes_written)}) under {args.out}",
        file=sys.stderr,
    )
    for pt, n in summary.mismatched.items():
        print(
            f"{args.format}: {n:,} {pt} entries did not match their stored schema "
            "(their fields are null)",
            file=sys.stderr,
        )
    return EXIT_OK


def _hwm(info: RunInfo) -> int:
    with Reader(info.run_dir) as reader:
        return reader.high_watermark


def _export_jsonl(
    infos: list[RunInfo], target: Path | None, decode: bool, selection: Selection
) -> int:
    written = 0
    output = nullcontext(sys.stdout) if target is None else open_output(target)
    with output as stream:
        total = sum(_hwm(info) for info in infos)
        with progress_bar(total, "export", "entries") as advance:
            for info in infos:
                with Reader(info.run_dir) as reader:
                    decoder = RunDecoder.for_run(info.run_dir) if decode else None
                    entries = (
                        reader.scan(1, reader.high_watermark)
                        if selection.is_everything
                        else reader.entries(selection.seqs(reader))
                    )
                    for entry in entries:
                        decoded = _decode(decoder, entry) if decoder is not None else None
                        stream.write(json.dumps(entry_record(entry, decoded=decoded)) + "\n")
                        written += 1
                        if written % 4096 == 0:
                            advance(written)
    if target is not None:
        print(f"exported {written:,} entries to {target}", file=sys.stderr)
    return EXIT_OK


def _decode(decoder: RunDecoder, entry: Any) -> Any:
    """The stored schema's named fields when the run has one for the type, else generic."""
    try:
        fields = decoder.decode(entry.payload_type, entry.payload, entry.seq)
        if fields is not None:
            return msgspec.to_builtins(fields, enc_hook=str)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        return msgspec.to_builtins(msgspec.msgpack.decode(entry.payload), enc_hook=str)
    except (msgspec.DecodeError, TypeError, ValueError):
        return None
