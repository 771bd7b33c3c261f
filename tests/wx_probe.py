"""Run the real inference stack under the unit's memory and syscall restrictions.

systemd cannot run here, so this reproduces, with a seccomp filter installed
in this process before anything is imported, the two restrictions of
``services/microexpr.service`` that a native library could trip over:

* ``MemoryDenyWriteExecute=yes`` — systemd's filter refuses ``mmap`` with
  PROT_WRITE|PROT_EXEC, ``mprotect``/``pkey_mprotect`` adding PROT_EXEC and
  ``shmat`` with SHM_EXEC. A JIT (XNNPACK, ONNX Runtime) would fail here.
* ``SystemCallFilter=~@resources`` with ``SystemCallErrorNumber=EPERM`` —
  the @resources calls (sched_setaffinity, setpriority, setrlimit, mbind, ...)
  fail with EPERM.

It then checks the filter bites (a W+X mapping and sched_setaffinity are
refused) and runs the FaceLandmarker on a real face and an ONNX Runtime
session, printing one JSON line. Usage: ``wx_probe.py MODEL IMAGE``.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import struct
import sys

# (audit arch, {call: nr}, @resources numbers) — from the kernel's syscall tables.
_ARCHES = {
    "x86_64": (0xC000003E, {"mmap": 9, "mprotect": 10, "pkey_mprotect": 329, "shmat": 30},
               (251, 237, 256, 279, 203, 314, 142, 144, 238, 450, 141, 160)),
    "aarch64": (0xC00000B7, {"mmap": 222, "mprotect": 226, "pkey_mprotect": 288, "shmat": 196},
                (30, 235, 238, 239, 122, 274, 118, 119, 237, 450, 140, 164)),
}
_LD_ABS, _JEQ, _JSET, _AND, _RET = 0x20, 0x15, 0x45, 0x54, 0x06
_ALLOW, _EPERM, _KILL = 0x7FFF0000, 0x00050000 | 1, 0x80000000
_PROT_W, _PROT_X, _SHM_EXEC = 0x2, 0x4, 0o100000
_ARG2 = 16 + 2 * 8  # offsetof(struct seccomp_data, args[2]), low 32 bits (little endian)


def build_filter(machine: str) -> list[tuple[int, int, int, int]]:
    """A classic-BPF seccomp program as (code, jt, jf, k) tuples."""
    audit, nr, resources = _ARCHES[machine]
    prog: list[list] = []
    labels: dict[str, int] = {}

    def op(code: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        prog.append([code, jt, jf, k])

    op(_LD_ABS, 4)
    op(_JEQ, audit, None, "kill")
    op(_LD_ABS, 0)
    op(_JEQ, nr["mmap"], "mmap")
    op(_JEQ, nr["mprotect"], "exec_bit")
    op(_JEQ, nr["pkey_mprotect"], "exec_bit")
    op(_JEQ, nr["shmat"], "shm_exec")
    for number in resources:
        op(_JEQ, number, "deny")
    op(_RET, _ALLOW)
    labels["mmap"] = len(prog)
    op(_LD_ABS, _ARG2)
    op(_AND, _PROT_W | _PROT_X)
    op(_JEQ, _PROT_W | _PROT_X, "deny", "allow")
    labels["exec_bit"] = len(prog)
    op(_LD_ABS, _ARG2)
    op(_JSET, _PROT_X, "deny", "allow")
    labels["shm_exec"] = len(prog)
    op(_LD_ABS, _ARG2)
    op(_JSET, _SHM_EXEC, "deny", "allow")
    labels["deny"] = len(prog)
    op(_RET, _EPERM)
    labels["allow"] = len(prog)
    op(_RET, _ALLOW)
    labels["kill"] = len(prog)
    op(_RET, _KILL)
    out = []
    for index, (code, jt, jf, k) in enumerate(prog):
        rel = [0 if label is None else labels[label] - index - 1 for label in (jt, jf)]
        out.append((code, rel[0], rel[1], k))
    return out


def install_filter() -> None:
    program = build_filter(platform.machine())
    raw = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


# -- a tiny ONNX model, protobuf encoded by hand (no `onnx` package needed) --


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int_field(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes_field(field: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_bytes_field(1, _int_field(1, d)) for d in shape)
    tensor_type = _int_field(1, 1) + _bytes_field(2, dims)  # elem_type FLOAT, shape
    return _bytes_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))


def matmul_relu_model(weights) -> bytes:  # type: ignore[no-untyped-def]
    """ModelProto for Y = Relu(X @ W), opset 13."""
    n, m = weights.shape
    init = (b"".join(_int_field(1, d) for d in (n, m)) + _int_field(2, 1) + _bytes_field(8, "W")
            + _bytes_field(9, weights.astype("<f4").tobytes()))
    matmul = _bytes_field(1, "X") + _bytes_field(1, "W") + _bytes_field(2, "H") + _bytes_field(4, "MatMul")
    relu = _bytes_field(1, "H") + _bytes_field(2, "Y") + _bytes_field(4, "Relu")
    graph = (_bytes_field(1, matmul) + _bytes_field(1, relu) + _bytes_field(2, "g") + _bytes_field(5, init)
             + _bytes_field(11, _value_info("X", (1, n))) + _bytes_field(12, _value_info("Y", (1, m))))
    return _int_field(1, 8) + _bytes_field(7, graph) + _bytes_field(8, _bytes_field(1, "") + _int_field(2, 13))


def main(model: str, image_path: str) -> dict:
    install_filter()
    result: dict = {}
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        result["wx_mmap_refused"] = False
    except PermissionError:
        result["wx_mmap_refused"] = True
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(0))
        result["setaffinity_refused"] = False
    except PermissionError:
        result["setaffinity_refused"] = True

    import cv2
    import mediapipe as mp
    import numpy as np
    import onnxruntime as ort
    from mediapipe.tasks.python import BaseOptions, vision

    rgb = cv2.cvtColor(cv2.imread(image_path), cv2.COLOR_BGR2RGB)
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model), running_mode=vision.RunningMode.VIDEO,
        output_face_blendshapes=True, output_facial_transformation_matrixes=True, num_faces=1,
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for index in range(3):
            found = landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), index * 33)
    result["faces"] = len(found.face_landmarks)
    result["landmarks"] = len(found.face_landmarks[0]) if found.face_landmarks else 0
    result["blendshapes"] = len(found.face_blendshapes[0]) if found.face_blendshapes else 0

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((256, 128)).astype(np.float32)
    x = rng.standard_normal((1, 256)).astype(np.float32)
    expected = np.maximum(x @ weights, 0)
    for threads in (0, 1):  # 0: ORT's default pool (tries sched_setaffinity), 1: explicit
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 4
        session = ort.InferenceSession(matmul_relu_model(weights), opts, providers=["CPUExecutionProvider"])
        y = session.run(None, {"X": x})[0]
        result[f"onnx_threads_{threads}_ok"] = bool(np.allclose(y, expected, atol=1e-4))
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
