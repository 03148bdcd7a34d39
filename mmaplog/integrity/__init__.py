"""Integrity tools over run directories: checking, repairing and retiring runs.

Owns ``verify`` (every check, with its findings in ``findings`` and the scans in
``verify_scan``, ``verify_postings``, ``verify_keys``, ``verify_run``), crash recovery of runs
whose writer died (``recovery``) and retention (``retention``). Works on run directories and
the run catalog; imports ``mmaplog.storage``, ``mmaplog.engine`` and ``mmaplog.errors``, never
runs, the CLI or the demo.
"""
