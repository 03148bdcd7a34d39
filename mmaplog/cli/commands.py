"""The ``mmaplog`` admin CLI: a thin layer over library calls.

Library errors become one line on stderr and an exit code: 0 success, 1 integrity findings or
a failed operation, 2 bad usage or a run that cannot be opened. Never a traceback.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec
import numpy as np

from mmaplog.cli.common import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Parser,
    Terminated,
    UsageError,
    instance_arg,
    int_in_range,
    out,
    parse_args,
    print_json,
    progress_bar,
    raise_on_termination,
    resolve,
    store_of,
)
from mmaplog.cli.diff import add_diff_parser
from mmaplog.cli.export import add_export_parser
from mmaplog.cli.output import check_output_target, open_output
from mmaplog.cli.salvage import add_salvage_parser
from mmaplog.cli.sql import add_sql_parser
from mmaplog.cli.text import (
    align,
    entry_record,
    format_bytes,
    format_ns,
    format_span,
    short_uuid,
    silence_stdout,
)
from mmaplog.errors import (
    CorruptionError,
    IndexCorruptError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidIndexKindError,
    LogBusyError,
    LogClosedError,
    MmapLogError,
    ProofError,
    RunNotFoundError,
    SigningKeyError,
)
from mmaplog.integrity.findings import Finding, FindingKind, VerifyReport, group_findings
from mmaplog.integrity.recovery import recover_predecessors, recover_run
from mmaplog.integrity.retention import (
    DELETING_PREFIX,
    RetentionKind,
    RetentionMode,
    apply_retention,
    parse_duration,
    plan_retention,
)
from mmaplog.integrity.verify import verify
from mmaplog.query.errors import MissingExtraError, SelectionError, SqlError
from mmaplog.query.files import make_dirs
from mmaplog.runs.reader import Reader
from mmaplog.runs.store import RunInfo
from mmaplog.storage.manifest import RunManifest, RunStatus
from mmaplog.storage.run_dir import lock_is_held
from mmaplog.version import version_line

if TYPE_CHECKING:
    from mmaplog.integrity.verify_trust import TrustReport as VerifyTrustReport

__all__ = ["main"]


# `demo --entries`: the demo writes about 700 bytes per entry, so this is ~7 GB on disk.
DEMO_MAX_ENTRIES = 10_000_000


def _root_parent() -> Parser:
    parent = Parser(add_help=False)
    parent.add_argument(
        "--root",
        type=Path,
        default=None,
        help="store root (default: $MMAPLOG_ROOT or ./mmaplog-data)",
    )
    parent.add_argument(
        "--instance", type=instance_arg, default=None, help="only runs of this instance id"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = _root_parent()
    parser = Parser(
        prog=PROG,
        description="Inspect, verify, recover and prune mmaplog runs.",
        epilog="Exit status: 0 success, 1 integrity findings or a failed operation, 2 bad usage "
        "or nothing to open (docs/CLI.md).",
    )
    parser.add_argument("--version", action="version", version=version_line(PROG))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("runs", parents=[common], help="list runs")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", parents=[common], help="manifest and per-topic / per-type counts")
    p.add_argument("run", metavar="RUN", help="run id, unique prefix, or 'latest'")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("tail", parents=[common], help="print the last entries; -f follows")
    p.add_argument("run", metavar="RUN", help="run id, unique prefix, or 'latest'")
    p.add_argument("-n", "--lines", type=int, default=20, help="entries to print (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.set_defaults(func=cmd_tail)

    add_export_parser(sub, common)

    p = sub.add_parser("demo", help="run the simulated trading engine with capture on")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="store root (default: $MMAPLOG_ROOT or ./mmaplog-data)",
    )
    p.add_argument(
        "--entries",
        type=int_in_range(1, DEMO_MAX_ENTRIES),
        default=10_000,
        metavar="N",
        help=f"about how many entries to capture (default 10000, at most {DEMO_MAX_ENTRIES:,})",
    )
    p.add_argument(
        "--seed",
        type=int_in_range(0, 2**63 - 1),
        default=42,
        metavar="S",
        help="random seed, 0 to 2**63-1 (default 42)",
    )
    p.add_argument(
        "--instance",
        type=instance_arg,
        default="demo",
        metavar="I",
        help="instance id (default demo)",
    )
    p.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        metavar="KEY",
        help="Ed25519 private key (PEM) signing the checkpoints (default: $MMAPLOG_SIGNING_KEY)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("verify", parents=[common], help="check a run; never modifies a file")
    p.add_argument("run", metavar="RUN", help="run id, unique prefix, or 'latest'")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--fast", action="store_true", help="skip recomputing entry hashes (checksums only)"
    )
    p.add_argument(
        "--trust",
        type=Path,
        default=None,
        metavar="PUBKEY",
        help="also check the Merkle tree against checkpoints signed by this public key",
    )
    p.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        metavar="FILE",
        help="external checkpoint file (JSON lines) to check the run against",
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("keygen", help="write an Ed25519 key pair for signing checkpoints")
    p.add_argument("out", metavar="OUT", type=Path, help="private key file (OUT.pub: public)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("prove", parents=[common], help="write an inclusion or consistency proof")
    p.add_argument("run", metavar="RUN", help="run id, unique prefix, or 'latest'")
    p.add_argument("seq", metavar="SEQ", type=int, nargs="?", help="the entry to prove")
    p.add_argument(
        "--consistency",
        nargs=2,
        type=int,
        metavar=("OLD", "NEW"),
        help="prove the checkpoint of tree size NEW extends the one of size OLD",
    )
    p.add_argument("--out", type=Path, default=None, help="output file (default: stdout)")
    p.set_defaults(func=cmd_prove)

    p = sub.add_parser("check-proof", help="check a proof file without the run")
    p.add_argument("file", metavar="FILE", type=Path, help="proof JSON from mmaplog prove")
    p.add_argument(
        "--trust", type=Path, required=True, metavar="PUBKEY", help="the signer's public key"
    )
    p.add_argument("--run-id", default=None, metavar="ID", help="reject a proof of any other run")
    p.set_defaults(func=cmd_check_proof)

    p = sub.add_parser("recover", parents=[common], help="recover crashed runs and seal them")
    p.add_argument("run", metavar="RUN", nargs="?", help="one run (default: use --all)")
    p.add_argument("--all", action="store_true", help="every crashed run of every instance")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("gc", parents=[common], help="delete old sealed runs")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N runs")
    mode.add_argument("--older-than", metavar="AGE", help="delete runs ended before AGE ago (7d)")
    mode.add_argument(
        "--snapshot-anchored",
        action="store_true",
        help="delete runs older than the newest run with a valid snapshot anchor",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_gc)

    add_salvage_parser(sub, common)
    add_sql_parser(sub, common)
    add_diff_parser(sub, common)
    return parser


# --- helpers -----------------------------------------------------------------------------------
def run_row(info: RunInfo) -> dict[str, Any]:
    m = info.manifest
    if m is None:
        return {
            "run_id": info.run_id,
            "instance_id": info.instance_id,
            "status": "unreadable",
            "error": info.error,
            "path": str(info.run_dir),
        }
    entries = m.high_watermark
    live = False
    last_ts = m.end_ts_init
    if not m.is_sealed():
        live = info.is_live()
        try:
            with Reader(info.run_dir) as reader:
                entries = reader.high_watermark
                arr = reader.index()
                last_ts = int(arr["ts_max"][-1]) if len(arr) else None
        except MmapLogError:
            entries = m.high_watermark
    return {
        "run_id": m.run_id,
        "instance_id": m.instance_id,
        "status": m.status.value,
        "live": live,
        "entries": entries,
        "start_ts_init": m.start_ts_init,
        "end_ts_init": m.end_ts_init,
        "span": run_span(m, last_ts),
        "size_bytes": info.size_bytes(),
        "parent_run_id": m.parent_run_id,
        "source_run_id": m.source_run_id,
        "path": str(info.run_dir),
    }


def run_span(manifest: RunManifest, last_ts: int | None) -> str:
    """The one span of a run everywhere: from its start to its end (a sealed run's manifest
    end, else the newest entry's ts_init so far)."""
    end = manifest.end_ts_init if manifest.end_ts_init is not None else last_ts
    return format_span(manifest.start_ts_init, end)


# --- commands -------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    rows = [run_row(info) for info in store_of(args).runs(args.instance)]
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        out(f"no runs under {store_of(args).root}")
        return EXIT_OK
    table = [["RUN", "INSTANCE", "STATUS", "ENTRIES", "START (UTC)", "SPAN", "SIZE", "PARENT"]]
    for r in rows:
        if r["status"] == "unreadable":
            table.append([r["run_id"], r["instance_id"], "unreadable", "-", "-", "-", "-", "-"])
            continue
        status = r["status"] + (" (live)" if r["live"] else "")
        if r["status"] == "running" and not r["live"]:
            status = "running (crashed)"
        table.append(
            [
                r["run_id"],
                r["instance_id"],
                status,
                f"{r['entries']:,}",
                format_ns(r["start_ts_init"])[:19],
                r["span"],
                format_bytes(r["size_bytes"]),
                r["parent_run_id"] or "-",
            ]
        )
    for line in align(table, right=(3, 6)):
        out(line)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    info = resolve(args)
    with Reader(info.run_dir) as reader:
        arr = reader.index()
        names = _checked_symbol_names(reader, arr)
        topics = collections.Counter(arr["topic"].tolist())
        types = collections.Counter(arr["ptype"].tolist())
        manifest = reader.manifest
        by_topic = {names[i - 1]: n for i, n in topics.most_common()}
        by_type = {names[i - 1]: n for i, n in types.most_common()}
        first_ts = int(arr["ts_init"].min()) if len(arr) else None
        last_ts = int(arr["ts_max"][-1]) if len(arr) else None
    if args.json:
        print_json(
            {
                "manifest": msgspec.to_builtins(manifest),
                "entries": len(arr),
                "first_ts_init": first_ts,
                "last_ts_init": last_ts,
                "by_topic": by_topic,
                "by_payload_type": by_type,
            }
        )
        return EXIT_OK
    fields = [
        ("run", manifest.run_id),
        ("instance", manifest.instance_id),
        ("status", manifest.status.value),
        ("entries", f"{len(arr):,}"),
        ("started", format_ns(manifest.start_ts_init)),
        ("ended", format_ns(manifest.end_ts_init)),
        ("span", run_span(manifest, last_ts)),
        ("parent", manifest.parent_run_id or "-"),
        ("source", manifest.source_run_id or "-"),
        ("seed", "-" if manifest.seed is None else str(manifest.seed)),
        ("uncaptured", _uncaptured_text(manifest.uncaptured)),
        ("path", str(info.run_dir)),
    ]
    for line in align([[k, v] for k, v in fields]):
        out(line)
    for title, counts in (("topic", by_topic), ("payload type", by_type)):
        out()
        rows = [[title.upper(), "ENTRIES"]] + [[k, f"{v:,}"] for k, v in counts.items()]
        for line in align(rows, right=(1,)):
            out(line)
    return EXIT_OK


def _checked_symbol_names(reader: Reader, arr: Any) -> list[str]:
    """The run's symbol names, after checking every index record names one of them: a
    truncated symbols.sym or a damaged record is an IndexCorruptError, never an IndexError."""
    names = reader.backend.symbol_names()
    ids = np.concatenate((arr["topic"], arr["ptype"]))
    bad = np.flatnonzero((ids == 0) | (ids > len(names)))
    if bad.size:
        seq = int(bad[0]) % len(arr) + 1
        raise IndexCorruptError(
            f"unknown symbol id {int(ids[bad[0]])} ({len(names)} symbols in symbols.sym)",
            path=reader.backend.index_path,
            seq=seq,
        )
    return names


def _uncaptured_text(counts: dict[str, int]) -> str:
    """Publishes of unregistered classes, e.g. ``3 (Heartbeat 2, Ping 1)``, or ``-``."""
    if not counts:
        return "-"
    total = sum(counts.values())
    return f"{total:,} ({', '.join(f'{name} {n:,}' for name, n in counts.items())})"


def entry_line(entry_fields: dict[str, Any]) -> list[str]:
    return [
        str(entry_fields["seq"]),
        entry_fields["time"],
        entry_fields["topic"],
        entry_fields["payload_type"],
        short_uuid(entry_fields["correlation_id"]),
        f"{entry_fields['payload_len']} B",
    ]


TAIL_HEADER = ["SEQ", "TIME (UTC)", "TOPIC", "PAYLOAD TYPE", "CORR", "SIZE"]


def tail_widths(names: Sequence[str], hwm: int) -> list[int]:
    """Column widths fixed before the first line, so the backlog and the followed lines
    line up: seqs up to 10x the high-watermark; topics and types as wide as the run's longest
    name, and at least 28 and 20 (a longer name that first appears while following is printed
    whole, and only its line shifts)."""
    longest = max((len(n) for n in names), default=0)
    return [
        max(len(TAIL_HEADER[0]), len(str(max(hwm, 1) * 10))),
        len(format_ns(0)),
        max(28, longest),
        max(20, longest),
        8,
        max(len(TAIL_HEADER[5]), 10),
    ]


def _print_entries(
    entries: Sequence[dict[str, Any]], fmt: str, stream: IO[str], widths: Sequence[int]
) -> None:
    if fmt == "jsonl":
        for record in entries:
            stream.write(json.dumps(record) + "\n")
    else:
        for cells in map(entry_line, entries):
            stream.write(_row(cells, widths) + "\n")
    stream.flush()


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    right = (0, 5)
    return "  ".join(
        c.rjust(w) if i in right else c.ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


def cmd_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError("--lines must be >= 0")
    info = resolve(args)
    with Reader(info.run_dir) as reader:
        hwm = reader.high_watermark
        start = max(1, hwm - args.lines + 1)
        records = [entry_record(e, include_payload=False) for e in reader.scan(start, hwm)]
        widths = tail_widths(reader.backend.symbol_names(), hwm)
        if args.format == "table":
            out(_row(TAIL_HEADER, widths))
        _print_entries(records if args.lines else [], args.format, sys.stdout, widths)
        if not args.follow:
            return EXIT_OK
        crashed = False

        def writer_gone() -> bool:
            # Asked only when caught up: a RUNNING run whose LOCK no process holds will never
            # get another entry (replay --follow stops the same way).
            nonlocal crashed
            crashed = not lock_is_held(info.run_dir) and not reader.refresh_manifest().is_sealed()
            return crashed

        batch: list[dict[str, Any]] = []
        last = hwm
        for entry in reader.follow(hwm + 1, poll_interval=0.1, stop=writer_gone):
            batch.append(entry_record(entry, include_payload=False))
            last = entry.seq
            if entry.seq >= reader.high_watermark:
                _print_entries(batch, args.format, sys.stdout, widths)
                batch = []
        # Entries the writer committed between our last look and its death.
        batch += [entry_record(e, include_payload=False) for e in reader.scan(last + 1)]
        _print_entries(batch, args.format, sys.stdout, widths)
        if crashed:
            print(
                f"{PROG}: the run is not sealed and no writer holds it (crashed): stopped "
                f"following after seq {reader.high_watermark}",
                file=sys.stderr,
            )
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    info = store_of(args).resolve(args.run, args.instance)
    entries = _entries_to_verify(info)
    with progress_bar(entries, "verify", "entries") as advance:
        report = verify(
            info.run_dir,
            entry_hashes=not args.fast,
            progress=lambda done, total: advance(entries * done // max(total, 1)),
        )
    trust = _verify_trust(info.run_dir, args.trust, args.checkpoints)
    if args.json:
        print_json(report.to_dict() | ({} if trust is None else {"trust": trust.to_dict()}))
    else:
        status = "-" if report.status is None else report.status.value
        state = "clean" if report.is_clean else f"corrupt findings={len(report.findings)}"
        out(
            f"{state} run_id={report.run_id} status={status} "
            f"high_watermark={report.high_watermark} entries_scanned={report.entries_scanned} "
            f"elapsed={report.elapsed_s:.2f}s"
        )
        for line in verify_finding_lines(report.findings):
            out(line)
        out(verify_summary(report))
        if trust is not None:
            state = "trusted" if trust.is_clean else f"untrusted findings={len(trust.findings)}"
            out(
                f"{state} tree_size={trust.tree_size} root={trust.root} "
                f"checkpoints={trust.checkpoints_checked}"
            )
            for finding in trust.findings:
                out(f"- {finding.kind.name}: {finding.message}")
    clean = report.is_clean and (trust is None or trust.is_clean)
    return EXIT_OK if clean else EXIT_FAIL


def _entries_to_verify(info: RunInfo) -> int:
    """The entry count the progress bar counts to: the sealed high-watermark, or the committed
    count of a running run (0, no bar, when it cannot be read: verify reports why)."""
    m = info.manifest
    if m is not None and m.is_sealed():
        return m.high_watermark
    try:
        with Reader(info.run_dir) as reader:
            return reader.high_watermark
    except (MmapLogError, OSError):
        return 0


# Follow-on findings listed under their root before the rest is counted.
FOLLOW_ONS_SHOWN = 3
_FOLLOW_ON_NOUNS = {
    FindingKind.INDEX_DANGLING: "dangling keys",
    FindingKind.INDEX_DRIFT: "index drift findings",
    FindingKind.INDEX_MISSING_KEY: "missing keys",
    FindingKind.GAP: "gaps",
}
_ROOT_NOUNS = {
    FindingKind.CHECKSUM_MISMATCH: "damaged frame",
    FindingKind.SEQ_MISMATCH: "misplaced frame",
    FindingKind.GAP: "gap",
    FindingKind.UNREADABLE: "unreadable file",
}


def verify_finding_lines(findings: Sequence[Finding]) -> list[str]:
    """Root causes first (``- …``), each with its follow-on findings indented under it: at most
    ``FOLLOW_ONS_SHOWN`` of each kind, then ``… and N more dangling keys from the same gap``."""
    lines: list[str] = []
    for group in group_findings(findings):
        root = findings[group.root]
        lines.append(f"- {root.message}")
        members = [findings[i] for i in group.follow_ons]
        has_gap = root.kind is FindingKind.GAP or any(m.kind is FindingKind.GAP for m in members)
        source = "gap" if has_gap else _ROOT_NOUNS.get(root.kind, "finding")
        by_kind: dict[FindingKind, list[Finding]] = {}
        for member in members:
            by_kind.setdefault(member.kind, []).append(member)
        for kind, same in by_kind.items():
            lines.extend(f"    {m.message}" for m in same[:FOLLOW_ONS_SHOWN])
            rest = len(same) - FOLLOW_ONS_SHOWN
            if rest > 0:
                noun = _FOLLOW_ON_NOUNS.get(kind, f"{kind.value} findings")
                lines.append(f"    \u2026 and {rest:,} more {noun} from the same {source}")
    return lines


def verify_summary(report: VerifyReport) -> str:
    """``scanned 30 entries, 7.1 KiB in 0.01 s (0.001 GB/s)``."""
    rate = report.bytes_scanned / report.elapsed_s / 1e9 if report.elapsed_s > 0 else 0.0
    return (
        f"scanned {report.entries_scanned:,} entries, {format_bytes(report.bytes_scanned)} "
        f"in {report.elapsed_s:.2f} s ({rate:.3f} GB/s)"
    )


def _verify_trust(
    run_dir: Path, trust: Path | None, checkpoints: Path | None
) -> VerifyTrustReport | None:
    if trust is None and checkpoints is None:
        return None
    from mmaplog.integrity.signing import load_trusted_key
    from mmaplog.integrity.verify_trust import verify_trust
    from mmaplog.storage.checkpoints import read_checkpoint_lines

    key = None if trust is None else load_trusted_key(trust)
    external = [] if checkpoints is None else read_checkpoint_lines(checkpoints)
    return verify_trust(run_dir, key, external)


def cmd_keygen(args: argparse.Namespace) -> int:
    from mmaplog.integrity.signing import generate_key_pair

    private, public, key_id = generate_key_pair(args.out)
    out(f"key_id={key_id} private={private} public={public}")
    return EXIT_OK


def cmd_prove(args: argparse.Namespace) -> int:
    from mmaplog.integrity.proofs import consistency_document, inclusion_document

    if (args.seq is None) == (args.consistency is None):
        raise UsageError("give a SEQ or --consistency OLD NEW")
    if args.out is not None:
        check_output_target(args.out, "--out")
    info = resolve(args)
    with Reader(info.run_dir) as reader:
        if args.seq is not None:
            doc = inclusion_document(reader.backend, args.seq)
        else:
            doc = consistency_document(reader.backend, *args.consistency)
    text = json.dumps(doc, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        with open_output(args.out) as stream:
            stream.write(text)
    return EXIT_OK


def cmd_check_proof(args: argparse.Namespace) -> int:
    from mmaplog.errors import ProofError
    from mmaplog.integrity.proofs import check_proof, load_proof
    from mmaplog.integrity.signing import load_trusted_key

    key = load_trusted_key(args.trust)
    try:
        summary = check_proof(load_proof(args.file), key, run_id=args.run_id)
    except ProofError as exc:
        print(f"{PROG}: proof rejected: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if summary["kind"] == "inclusion":
        out(
            f"ok inclusion run_id={summary['run_id']} seq={summary['seq']} "
            f"tree_size={summary['tree_size']} key_id={key.key_id}"
        )
    else:
        out(
            f"ok consistency run_id={summary['run_id']} old_size={summary['old_size']} "
            f"new_size={summary['new_size']} key_id={key.key_id}"
        )
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    store = store_of(args)
    if args.run is not None and args.all:
        raise UsageError("give a RUN or --all, not both")
    if args.run is not None:
        reports = [recover_run(store.resolve(args.run, args.instance).run_dir)]
    elif args.all:
        instances = [args.instance] if args.instance is not None else store.instances()
        reports = [r for inst in instances for r in recover_predecessors(store, inst)]
    else:
        raise UsageError("give a RUN to recover, or --all")
    if args.json:
        print_json([r.to_dict() for r in reports])
    elif not reports:
        out("no crashed runs")
    else:
        rows = [["RUN", "STATUS", "HWM", "LOST", "TRUNCATED", "REBUILT"]]
        for r in reports:
            status = "already sealed" if r.already_sealed else r.status.value
            if r.error:
                status = f"failed: {r.error}"
            lost = "-"
            if r.lost_seq_range:
                lost = f"{r.entries_lost} ({r.lost_seq_range[0]}..{r.lost_seq_range[1]})"
            rows.append(
                [
                    r.run_id,
                    status,
                    f"{r.recovered_high_watermark:,}",
                    lost,
                    format_bytes(r.bytes_truncated),
                    ",".join(r.indexes_rebuilt) or "-",
                ]
            )
        for line in align(rows, right=(2, 4)):
            out(line)
    failed = any(r.error or r.status is RunStatus.QUARANTINED for r in reports)
    return EXIT_FAIL if failed else EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    if args.keep_last is not None:
        if args.keep_last < 0:
            raise UsageError("--keep-last must be >= 0")
        mode = RetentionMode.KEEP_LAST(args.keep_last)
    elif args.older_than is not None:
        try:
            mode = RetentionMode.OLDER_THAN(parse_duration(args.older_than))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        mode = RetentionMode(RetentionKind.SNAPSHOT_ANCHORED)
    store = store_of(args)
    plan = plan_retention(store, mode, instance_id=args.instance)
    _warn_deleting_links(store.root, args.instance)
    links = plan.refused
    if links:
        # The plan keeps a run to delete whose directory is a symbolic link (deleting through
        # it would delete data outside the store, or fail half-way and hide the run): say so
        # and delete nothing, rather than the rest of the plan.
        first = links[0]
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        print(
            f"{PROG}: error: gc refuses run {first.instance_id}/{first.run_id}{more}: its "
            f"directory is a symbolic link (to {os.readlink(first.run_dir)}); nothing was deleted",
            file=sys.stderr,
        )
        return EXIT_FAIL
    sizes = {info.run_dir: info.size_bytes() for info in plan.reclaim}
    deleted = [] if args.dry_run else apply_retention(plan)
    gone = list(sizes) if args.dry_run else deleted
    freed = sum(sizes[path] for path in gone)
    if args.json:
        print_json(
            {
                **plan.to_dict(),
                "dry_run": args.dry_run,
                "deleted": [str(p) for p in deleted],
                "bytes_freed": 0 if args.dry_run else freed,
                "bytes_to_free": freed if args.dry_run else 0,
            }
        )
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    rows = [
        [verb, f"{info.instance_id}/{info.run_id}", format_bytes(sizes[info.run_dir])]
        for info in plan.reclaim
        if args.dry_run or info.run_dir in deleted
    ]
    rows += [["kept", f"{info.instance_id}/{info.run_id}", plan.reason(info)] for info in plan.kept]
    for line in align(rows):
        out(line)
    freeing = "would free" if args.dry_run else "freed"
    out(
        f"{verb} {len(gone)} run{'' if len(gone) == 1 else 's'}, {freeing} "
        f"{format_bytes(freed)}, kept {len(plan.kept)} ({mode})"
    )
    return EXIT_OK


def _warn_deleting_links(root: Path, instance: str | None) -> None:
    """Say so of a ``.deleting-*`` symbolic link (left by a gc that renamed a symlinked run
    before gc refused them): retention's sweep cannot remove it, and gc never follows it."""
    instance_dirs = [root / instance] if instance is not None else list(root.iterdir())
    for inst in instance_dirs:
        try:
            leftovers = sorted(inst.glob(f"{DELETING_PREFIX}*"))
        except OSError:
            continue
        for link in (p for p in leftovers if p.is_symlink()):
            run_id = link.name.removeprefix(DELETING_PREFIX)
            print(
                f"{PROG}: warning: {link} is a symbolic link left by an earlier gc; gc leaves "
                f"it and its target ({os.readlink(link)}): rename it to {run_id} to restore "
                "the run, or remove the link",
                file=sys.stderr,
            )


def cmd_demo(args: argparse.Namespace) -> int:
    from mmaplog.demo import run_demo

    root = store_of(args, must_exist=False).root
    if not root.exists():
        make_dirs(root)  # 0755 whatever the umask: the engine's mkdir -p would leave it 0777
    with progress_bar(args.entries, "demo", "entries") as advance:
        summary = run_demo(
            root,
            entries=args.entries,
            seed=args.seed,
            instance_id=args.instance,
            progress=advance,
            signing_key=args.signing_key,
        )
    rate = f"{summary.elapsed_s:.2f} s ({summary.entries_per_s:,.0f} entries/s)"
    fields = [
        ("run", summary.run_id),
        ("instance", summary.instance_id),
        ("status", summary.status.value),
        ("entries", f"{summary.entries:,}"),
        ("seed", str(summary.seed)),
        ("elapsed", rate),
        ("path", str(summary.run_dir)),
    ]
    for line in align([[k, v] for k, v in fields]):
        out(line)
    out()
    rows = [["PAYLOAD TYPE", "ENTRIES"]] + [[k, f"{v:,}"] for k, v in summary.counts.items()]
    for line in align(rows, right=(1,)):
        out(line)
    if summary.interrupted:
        print(
            f"{PROG}: interrupted: stopped after the message cascade in progress; the run is "
            "sealed",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


# --- entry point -------------------------------------------------------------------------------
# The library errors that mean bad usage or nothing to open (exit 2, docs/CLI.md): a bad,
# unknown or ambiguous run id or root, a run locked by a live writer or in the wrong state for
# the command, bad SQL or filters, a missing extra, an unusable key or proof request. Every other
# MmapLogError is an operation that failed (exit 1): a halted capture, a broken writer, a full
# disk.
USAGE_ERRORS: tuple[type[MmapLogError], ...] = (
    RunNotFoundError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidIndexKindError,
    LogBusyError,
    LogClosedError,
    SqlError,
    SelectionError,
    MissingExtraError,
    SigningKeyError,
    ProofError,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        with raise_on_termination():
            args = parse_args(parser, argv)
            if args.command is None:
                raise UsageError(f"give a COMMAND: {', '.join(_commands(parser))}")
            return int(args.func(args))
    except Terminated as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except UsageError as exc:
        print(f"{PROG}: usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CorruptionError as exc:
        print(f"{PROG}: corrupt: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except MmapLogError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAIL
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()  # the reader went away (| head): stop quietly, like other Unix tools
        return EXIT_OK
    except OSError as exc:
        print(
            f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
