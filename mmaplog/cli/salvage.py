"""``mmaplog salvage``: rebuild the derived files of a sealed run from its frames."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from mmaplog.cli.common import EXIT_FAIL, EXIT_OK, out, print_json, store_of
from mmaplog.cli.text import format_bytes
from mmaplog.integrity.salvage import salvage_run
from mmaplog.integrity.verify import Finding, verify

__all__ = ["add_salvage_parser", "cmd_salvage"]


def add_salvage_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "salvage",
        parents=[common],
        help="rebuild index.idx and keys.hix of a sealed run from its frames",
    )
    p.add_argument("run", metavar="RUN", help="run id, unique prefix, or 'latest'")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_salvage)


def cmd_salvage(args: argparse.Namespace) -> int:
    info = store_of(args).resolve(args.run, args.instance)
    report = salvage_run(info.run_dir)
    # What is still wrong: after a repair, verify again. The findings from before it
    # (report.other_findings) may have been follow-ons of the damaged derived files.
    remaining = verify(info.run_dir).findings if report.replaced else report.other_findings
    if args.json:
        print_json(report.to_dict() | {"remaining_findings": [f.to_dict() for f in remaining]})
        return EXIT_OK if report.ok else EXIT_FAIL
    if report.already_clean:
        out(f"nothing to salvage run_id={report.run_id}: the derived files agree with the frames")
        _other(remaining, "{n} other finding(s) are not about derived files")
        return EXIT_OK
    out(f"found {len(report.damaged_before)} finding(s) in run {report.run_id}:")
    for finding in report.damaged_before[:5]:
        out(f"  - {finding.message}")
    if len(report.damaged_before) > 5:
        out(f"  ... and {len(report.damaged_before) - 5} more")
    rebuilt = f"{report.frames_rebuilt:,} of {report.high_watermark:,} entries re-indexed"
    if report.ok:
        out(
            f"salvaged run_id={report.run_id}: {rebuilt} from the frames; replaced "
            f"{', '.join(report.replaced)}; they verify against the frames "
            f"({format_bytes(report.bytes_scanned)} scanned)"
        )
        _other(remaining, "verify still finds {n} finding(s) not about derived files")
        return EXIT_OK
    out(f"not salvaged run_id={report.run_id}: {rebuilt}; the original files are unchanged")
    for line in report.not_rebuilt:
        out(f"  could not rebuild: {line}")
    for finding in report.staged_findings[:5]:
        out(f"  rebuilt run still has: {finding.message}")
    return EXIT_FAIL


def _other(findings: Sequence[Finding], lead: str) -> None:
    if findings:
        out(f"{lead.format(n=len(findings))}; salvage leaves them:")
        for finding in findings[:5]:
            out(f"  - {finding.message}")
