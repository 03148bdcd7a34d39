"""A capturing process under RLIMIT_FSIZE: ``python -m tests.disk_child ROOT LIMIT_BYTES``.

Captures until the writer halts, then prints the halt reason and the high-watermark as JSON.
SIGXFSZ is ignored so an oversized write fails with EFBIG instead of killing the process.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from pathlib import Path

from mmaplog import CaptureError, EncodedPayload, EncoderRegistry, Store
from mmaplog.engine.writer import WriterConfig
from mmaplog.runs.session import SessionConfig


class Blob:
    pass


def main() -> None:
    root, limit = Path(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    registry = EncoderRegistry()
    registry.register(Blob, "Blob", lambda _: EncodedPayload(bytes(900)))
    config = SessionConfig(writer=WriterConfig(min_free_bytes=0), segment_size=128 * 1024)
    session = Store(root).open_session("full", registry=registry, config=config)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    n = 0
    try:
        while n < 1_000_000:
            n += 1
            session.adapter.capture("blob", Blob(), ts_init=n)
    except CaptureError:
        pass
    session.halt_signal.wait(10)
    reason = session.halt_reason
    print(
        json.dumps(
            {
                "reason": type(reason).__name__,
                "message": getattr(reason, "msg", ""),
                "uncommitted": getattr(reason, "uncommitted", 0),
                "hwm": session.writer.high_watermark,
                "run_id": session.run_id,
                "captured": n,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
