"""``python -m pocoviz``: the ``pocoviz`` command.

torchrun starts each rank of a distributed run as ``python -m pocoviz train ...``
(``torchrun --nproc-per-node N -m pocoviz train ...``); there, an exception is recorded for
torchrun's failure report (which names the rank), as torch's ``record`` decorator does.
"""

from __future__ import annotations

import os

from pocoviz.cli import main


def _run() -> int:
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker
        from torch.distributed.elastic.multiprocessing.errors import record

        return int(record(main)() or 0)
    return main()


if __name__ == "__main__":
    raise SystemExit(_run())
