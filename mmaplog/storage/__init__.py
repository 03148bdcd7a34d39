"""The on-disk format and the two backends: everything about one run's bytes.

Owns the byte layouts (``layout``), entries and their canonical hash (``entry``,
``entry_hash``), the files of a run — segments (``segments``, ``segment_set``), frames
(``frames``), the seq index (``seqindex``), symbols (``symbols``), the manifest
(``manifest``), the hash index (``hash_index``, ``hash_index_format``,
``hash_index_rebuild``), the run directory and its ``LOCK`` (``run_dir``) — the
``EventStore`` protocol with its memory and mmap backends (``backend``, ``memory``,
``mmap_backend``), crash repair of a run's tail (``repair``), batched verified reads
(``batch``) and the listing of runs under a root (``catalog``). The native core (C sources in
``core/src``) lands here too. No threads, no bus: it imports only ``mmaplog.errors`` and the
standard library, numpy, xxhash and msgspec.
"""
