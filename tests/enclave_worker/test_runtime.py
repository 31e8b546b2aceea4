"""``runtime.keep_freed_memory``: freed tensor memory stays with the training process.

Each case runs in a fresh interpreter (the tuning is process-wide and cannot be undone): 256 MiB
are allocated, touched and freed, as a ResNet-32 or VGG-9 step does with its temporaries. With
glibc's defaults the block is a fresh ``mmap`` that ``free`` returns to the system (the next step
page-faults it back); tuned, the process keeps it and the next allocation of that size reuses it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import sys
import torch
from enclave_worker.trusted import runtime

def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

tuned = sys.argv[1] == "tuned"
if tuned:
    assert runtime.keep_freed_memory() is True
    assert runtime.keep_freed_memory() is True  # idempotent
before = resident_mib()
block = torch.ones(64 << 20)  # 256 MiB, every page touched
held = resident_mib()
del block
after = resident_mib()
print(f"{held - before:.0f} {held - after:.0f}")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc are Linux's")
@pytest.mark.parametrize("mode", ["default", "tuned"])
def test_freed_step_memory_is_kept_only_when_tuned(mode: str) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120, check=True).stdout
    grown, returned = (float(x) for x in out.split())
    assert grown > 200, f"the 256 MiB block did not become resident: {out}"
    if mode == "tuned":
        assert returned < 16, f"the tuned process gave back {returned:.0f} MiB on free"
    else:
        assert returned > 200, f"glibc's defaults kept {grown - returned:.0f} MiB: the comparison shows nothing"
