"""``mmaplog diff RUN_A RUN_B``: the first divergence and per-type counts
(``mmaplog.query.diff``). Exit 0 when identical, 1 when not."""

from __future__ import annotations

import argparse
import json
from typing import Any

import msgspec

from mmaplog.cli.common import EXIT_FAIL, EXIT_OK, Parser, UsageError, out, resolve
from mmaplog.cli.text import align
from mmaplog.errors import InvalidIndexKindError
from mmaplog.query.diff import ALIGNMENTS, RunDiff, diff_runs
from mmaplog.runs.reader import Reader

__all__ = ["add_diff_parser"]


def add_diff_parser(sub: Any, common: Parser) -> None:
    p = sub.add_parser("diff", parents=[common], help="compare two runs entry by entry")
    p.add_argument("run_a", metavar="RUN_A", help="run id, unique prefix, or 'latest'")
    p.add_argument("run_b", metavar="RUN_B", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--by", choices=ALIGNMENTS, default="seq", help="align by seq (default), topic, type or key"
    )
    p.add_argument(
        "--key-kind", metavar="KIND", default=None, help="with --by key: the index key kind"
    )
    p.add_argument(
        "--ignore",
        metavar="FIELD",
        action="append",
        default=[],
        help="leave a field out (headers, topic, or a payload field); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    if args.by == "key" and args.key_kind is None:
        raise UsageError("--by key needs --key-kind KIND (e.g. client_order_id)")
    if args.key_kind is not None and args.by != "key":
        raise UsageError("--key-kind goes with --by key")
    # One run each, as the help says: never resolve_many, which reads 'all' as every run.
    a_info = resolve(args, args.run_a)
    b_info = resolve(args, args.run_b)
    with Reader(a_info.run_dir) as a, Reader(b_info.run_dir) as b:
        try:
            result = diff_runs(a, b, by=args.by, key_kind=args.key_kind, ignore=args.ignore)
        except InvalidIndexKindError as exc:
            raise UsageError(f"--key-kind: {exc}") from None
    if args.json:
        out(json.dumps(msgspec.to_builtins(result), indent=2, default=str))
    else:
        for line in render(result):
            out(line)
    return EXIT_OK if result.identical else EXIT_FAIL


def render(result: RunDiff) -> list[str]:
    lines = [f"A  {result.a_run_id}", f"B  {result.b_run_id}"]
    d = result.divergence
    if d is None:
        state = "identical" if result.identical else "same entries, different counts"
        lines.append(
            f"{state}: {result.compared:,} entries match on (topic, type, payload, headers), "
            f"aligned by {result.by}"
        )
    else:
        group = f" of {result.by} {d.group!r}" if d.group is not None else ""
        lines.append(f"DIVERGED after {d.index - 1:,} matching entries{group}")
        lines.append(f"  first divergence at entry {d.index} (A seq {d.a_seq} / B seq {d.b_seq}):")
        lines.append(f"  {d.field}: {d.detail}")
        lines.append(f"  A: {d.a}")
        lines.append(f"  B: {d.b}")
        if d.fields:
            lines.append("")
            rows = [["FIELD", "A", "B"]] + [[f.field, repr(f.a), repr(f.b)] for f in d.fields]
            lines.extend("  " + line for line in align(rows))
    lines.append("")
    rows = [["PAYLOAD TYPE", "A", "B", "DIFF"]]
    for name, (x, y) in result.counts.items():
        rows.append([name, f"{x:,}", f"{y:,}", "" if x == y else f"{y - x:+,}"])
    lines.extend(align(rows, right=(1, 2, 3)))
    return lines
