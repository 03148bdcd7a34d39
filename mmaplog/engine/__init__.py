"""The engine side: what runs inside the user's process while it captures.

Owns the writer thread and its commit side (``writer``, ``committer``, ``writer_config``,
``writer_state``, ``writer_errors``), durability, halting (``halt``), clocks (``clock``), the
encoder registry and the capture adapter (``capture``) and the message bus (``bus``). Imports
``mmaplog.storage`` and ``mmaplog.errors``, never integrity, runs, the CLI or the demo.
"""
