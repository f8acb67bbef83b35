"""What this machine can run: inference engines installed, their versions, and bf16 support.

bf16 ("brain float", 8 exponent bits like float32 but 7 mantissa bits) halves the bytes every
convolution moves and, on CPUs with native bf16 dot products, doubles their rate: on this
project's 2-core AMD EPYC (AVX512_BF16) OpenVINO ran the animal model at 2.0x ONNX Runtime's
float32 speed (benchmarks/speed.py). Without native support OpenVINO would emulate it, slower than
float32, so vetseg asks for bf16 only where the CPU has AVX512_BF16 or AMX-BF16.

Nothing here imports torch; OpenVINO is imported only when asked about.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: CPU flags (as /proc/cpuinfo spells them) that give native bf16 arithmetic.
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
#: Precisions vetseg runs a network in. ``fp32`` everywhere; ``bf16`` in OpenVINO only.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_fingerprint() -> str:
    """A short hash of the CPU model and flags: compiled code and precision decisions made on
    one CPU are not trusted on another."""
    text = cpu_name() + "|" + " ".join(sorted(cpu_flags()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def openvino_version() -> str | None:
    """The installed OpenVINO runtime's version, or None when ``openvino`` is not importable.

    Not cached (Python caches the import): tests hide the module to play a machine without it.
    """
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.get_version())


def openvino_capabilities() -> tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. ``FP32``, ``BF16``, ``INT8``);
    empty without OpenVINO."""
    if openvino_version() is None:
        return ()
    from vetseg.inference.openvino_engine import core

    return tuple(str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def bf16_native() -> bool:
    """True when the CPU computes in bf16 natively (AVX512_BF16 or AMX-BF16).

    From /proc/cpuinfo's flags; where that file does not exist (not Linux), from OpenVINO's
    capabilities.
    """
    flags = cpu_flags()
    if flags:
        return any(flag in flags for flag in BF16_FLAGS)
    return "BF16" in openvino_capabilities()


def onnxruntime_version() -> str | None:
    """The installed ONNX Runtime's version, or None."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


@dataclass(frozen=True)
class EngineSupport:
    """One engine on this machine.

    Attributes:
        name: the ``--engine`` value.
        version: the runtime's version, None when it is not installed.
        precisions: precisions it can run here.
        note: why a precision is missing, or what the engine is for.
    """

    name: str
    version: str | None
    precisions: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class MachineSupport:
    """What ``vetseg info --engines`` prints.

    Attributes:
        cpu: the CPU's model name.
        bf16_flags: the native-bf16 flags this CPU has (empty: none).
        engines: every engine vetseg knows, installed or not.
        openvino_capabilities: OpenVINO's view of the CPU (empty without OpenVINO).
    """

    cpu: str
    bf16_flags: tuple[str, ...]
    engines: tuple[EngineSupport, ...]
    openvino_capabilities: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "bf16_flags": list(self.bf16_flags),
            "openvino_capabilities": list(self.openvino_capabilities),
            "engines": [
                {
                    "name": e.name,
                    "version": e.version,
                    "precisions": list(e.precisions),
                    "note": e.note,
                }
                for e in self.engines
            ],
        }


def machine_support() -> MachineSupport:
    """The engines and precisions this machine offers."""
    import torch

    flags = cpu_flags()
    bf16 = bf16_native()
    ov = openvino_version()
    ort = onnxruntime_version()
    if ov is None:
        ov_note = "not installed (pip install openvino)"
    elif bf16:
        ov_note = "bf16 used after the accuracy check against fp32"
    else:
        ov_note = "no bf16 on this CPU (needs AVX512_BF16 or AMX)"
    engines = (
        EngineSupport("torch", str(torch.__version__), ("fp32",), "eager PyTorch"),
        EngineSupport(
            "onnx", ort, ("fp32",) if ort else (), "" if ort else "not installed (onnxruntime)"
        ),
        EngineSupport(
            "openvino", ov, (("fp32", "bf16") if bf16 else ("fp32",)) if ov else (), ov_note
        ),
    )
    return MachineSupport(
        cpu=cpu_name(),
        bf16_flags=tuple(f for f in BF16_FLAGS if f in flags),
        engines=engines,
        openvino_capabilities=openvino_capabilities(),
    )
