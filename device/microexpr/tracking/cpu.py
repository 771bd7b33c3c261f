"""Which tracker backend this CPU can run (no backend is imported here).

MediaPipe's aarch64 ``libmediapipe.so`` is built for the ARMv8.1 LSE
atomics and aborts the process with SIGILL on a core without them, a
Raspberry Pi 4's Cortex-A72 among them (seen under emulation,
benchmarks/results/aarch64-qemu/). ONNX Runtime's aarch64 wheel runs there.
``[tracker] backend = "auto"`` (the default) therefore picks MediaPipe
where it can run and ONNX Runtime where it cannot; naming a backend
explicitly keeps it, and MediaPipe on such a core is refused with one line.
"""

from __future__ import annotations

import ctypes
import platform

#: getauxval(AT_HWCAP) key and the arm64 HWCAP bit for the ARMv8.1 LSE atomics.
_AT_HWCAP = 16
_HWCAP_ATOMICS = 1 << 8


def _hwcap() -> int | None:
    try:
        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        libc.getauxval.argtypes = [ctypes.c_ulong]
        return int(libc.getauxval(_AT_HWCAP))
    except (OSError, AttributeError):  # no getauxval: let MediaPipe decide
        return None


def mediapipe_refusal(machine: str | None = None, hwcap: int | None = None) -> str | None:
    """Why MediaPipe cannot run on this CPU, or None when it can (or it cannot be told).

    Only aarch64 is checked; ``machine`` and ``hwcap`` are for tests."""
    machine = machine if machine is not None else platform.machine()
    if machine not in ("aarch64", "arm64"):
        return None
    hwcap = hwcap if hwcap is not None else _hwcap()
    if hwcap is None or hwcap & _HWCAP_ATOMICS:
        return None
    return ("this CPU lacks the ARMv8.1 LSE atomics MediaPipe's aarch64 library requires "
            "(e.g. a Raspberry Pi 4's Cortex-A72)")
