"""The ``mmaplog`` admin CLI (``commands``: runs, show, verify, recover, gc, tail, export, demo)
and the text formatting it shares with ``replay`` and ``tui`` (``text``).

The top layer of ``mmaplog``: it may import everything below it (the package root's public
names, ``runs``, ``integrity``, ``engine``, ``storage``, the demo) and nothing imports it but
``mmaplog.__main__`` and the other packages' CLIs.
"""
