"""Runs as a user opens them: the store of runs, a capture session, a reader.

Owns ``Store`` (a root of runs: list, resolve, open a reader or a session — ``store``),
``RunSession`` and its boot sequence (recover predecessors, open a run, start the writer and the
bus — ``session``) and ``Reader`` (read-only access to one run — ``reader``). Imports every
layer below: ``storage``, ``engine``, ``integrity``, ``errors``.
"""
