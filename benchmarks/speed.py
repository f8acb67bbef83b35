"""How fast does ``vetseg segment`` run on a CPU, and how close is that to the machine's limit?

Measured in one run, on one machine, with the same thread count throughout:

- ``matmul``: float32 and bf16 matrix-multiply GFLOP/s of this machine (PyTorch, the FLOP
  rooflines of each precision) and its memory bandwidth (GB/s of a large copy, the memory
  roofline);
- ``model``: GFLOP per 512 x 512 slice of vetseg's animal model (default architecture,
  EfficientNet-b1 body, 7 organs), counted by ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matrix products; element-wise work is not counted);
- ``throughput``: slices per second at 512 x 512 for PyTorch eager (NCHW, channels-last, bf16
  autocast), ONNX Runtime fp32, OpenVINO fp32 and bf16, and the peer MONAI FlexibleUNet
  (EfficientNet-b1 encoder) in ONNX Runtime fp32 and OpenVINO bf16, timed in turns (medians of
  interleaved batches), with the fraction of the roofline of its precision each reaches;
- ``refine``: the full-resolution scSE-MobileNetV3 module on its own: its GFLOP, the bytes
  its activations move (each layer reading its input and writing its output once), its
  arithmetic intensity and the time the memory roofline allows;
- ``end_to_end``: seconds for a synthetic 512 x 512 x 100 scan through ``vetseg segment``
  (a fresh process: start-up, model load, read, segment, post-process, report, write): the
  default engine (``auto``) on a model folder as training leaves it, first run (ONNX export,
  bf16 accuracy check, OpenVINO compile, all cached in the folder) and later runs, in turns with
  ONNX Runtime fp32 on an exported ``model.onnx`` (medians); seconds per step in process;
- ``memory``: peak RSS of ``vetseg segment`` on a synthetic 512 x 512 x 400 scan, default engine
  and ONNX Runtime.

The weights are random (speed does not depend on them; post-processing time does a little,
through the shape of what the model labels). The scans are synthetic ellipses of CT values, not
patients. On a shared machine the figures move with the other jobs: the load average before and
after is recorded.

Writes ``benchmarks/results/speed.json`` with the figures, the machine and the command.

Usage::

    python benchmarks/speed.py                                   # ~15 min on 2 cores
    python benchmarks/speed.py --quick --out /tmp/speed_quick.json  # ~1-2 min, to validate
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vetseg.config import PreprocessConfig
from vetseg.fileutil import atomic_write_json
from vetseg.labels import CORE_ORGANS

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("throughput", "refine", "end_to_end", "memory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--quick", action="store_true", help="small run to check the script")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", type=int, default=512, help="slice size in pixels")
    parser.add_argument("--batch-size", type=int, default=4, help="slices per pass (CLI: 4 at 512)")
    parser.add_argument("--slices", type=int, default=100, help="slices of the end-to-end scan")
    parser.add_argument("--rss-slices", type=int, default=400, help="slices of the memory scan")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="minimum time of each refine-module run"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument(
        "--model-spacing",
        type=float,
        default=None,
        help="end to end with a physical-scale model of this pixel spacing (mm) and --tile "
        "(e.g. 0.525 and 128: a rabbit model transferred from the shipped human model); "
        "default: a model without spacing that resizes each slice to --size",
    )
    parser.add_argument("--tile", type=int, default=128, help="tile of the physical-scale model")
    parser.add_argument(
        "--scan-spacing", type=float, default=0.8, help="in-plane spacing (mm) of the scans"
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="what to measure (the rooflines and GFLOP counts always)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.slices = min(args.slices, 8)
        args.rss_slices = min(args.rss_slices, 16)
        args.seconds = min(args.seconds, 2.0)
        args.batch_size = min(args.batch_size, 2)
        args.repeats = min(args.repeats, 1)
    return args


# --------------------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import onnxruntime

    from vetseg.inference.capabilities import BF16_FLAGS, cpu_flags, openvino_version

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino_version(),
        "bf16_flags": [flag for flag in BF16_FLAGS if flag in cpu_flags()],
        "load_average_start": list(os.getloadavg()),
    }


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one untimed warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an ``n x n`` matrix product (2 n^3 FLOP) in ``dtype``, the best of ``repeats``."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    seconds = best_seconds(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def copy_bandwidth_gbs(megabytes: int, repeats: int) -> float:
    """GB/s of copying a large float32 array (bytes read + bytes written)."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = best_seconds(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * 4 / seconds / 1e9


# --------------------------------------------------------------------------- model
def animal_model(n_organs: int = len(CORE_ORGANS)) -> nn.Module:
    """vetseg's animal model at its default architecture, random weights, eval mode."""
    from vetseg.models.animal import AnimalOrganNet
    from vetseg.models.human import HumanOrganNet

    torch.manual_seed(0)
    return AnimalOrganNet.from_human(HumanOrganNet(n_organs=n_organs), n_organs=n_organs).eval()


def gflop(module: nn.Module, x: torch.Tensor) -> float:
    """GFLOP of one forward pass (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() / 1e9


def activation_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes the leaf layers of ``module`` read and write (inputs + outputs, once each).

    A lower bound of the memory traffic for a layer-by-layer executor whose tensors do not
    fit in cache (64 MB per 64-channel 512 x 512 float32 map: they do not).
    """
    total = 0

    def hook(layer: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
        tensors += [output] if isinstance(output, torch.Tensor) else []
        total += sum(t.numel() * t.element_size() for t in tensors)

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def slices_per_second(run: Callable[[np.ndarray], Any], batch: np.ndarray, seconds: float) -> float:
    """Slices per second of ``run(batch)``, repeated for at least ``seconds`` after a warm-up."""
    run(batch)
    done, start = 0, time.perf_counter()
    while True:
        run(batch)
        done += batch.shape[0]
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def torch_runner(module: nn.Module, channels_last: bool) -> Callable[[np.ndarray], Any]:
    from vetseg.inference.engines import TorchEngine

    if not channels_last:
        return TorchEngine(module)

    def run(batch: np.ndarray) -> Any:
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(x)

    module.to(memory_format=torch.channels_last)
    return run


def autocast_runner(module: nn.Module) -> Callable[[np.ndarray], Any]:
    """PyTorch eager under bf16 autocast, channels-last."""
    module.to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> Any:
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return module(x).float()

    return run


def onnx_bytes(module: nn.Module, shape: tuple[int, ...]) -> bytes:
    """``module`` exported to ONNX for inputs of ``shape`` (batch axis dynamic)."""
    import io
    import warnings

    from vetseg.inference.engines import OPSET

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(1, *shape[1:]),),
            buffer,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def onnx_runner(module: nn.Module, shape: tuple[int, ...], threads: int) -> Callable:
    """An ONNX Runtime session of ``module`` for inputs of ``shape`` (batch axis dynamic)."""
    from vetseg.inference.engines import OnnxEngine

    return OnnxEngine(onnx_bytes(module, shape), threads=threads)


def openvino_runner(
    module: nn.Module, shape: tuple[int, ...], threads: int, precision: str
) -> Callable:
    """``module`` compiled by OpenVINO in ``precision`` (``fp32`` or ``bf16``), as vetseg does."""
    from vetseg.inference.openvino_engine import OpenVinoEngine, _compile, compile_config

    compiled = _compile(onnx_bytes(module, shape), compile_config(precision, threads))
    return OpenVinoEngine(compiled, precision)


def peer_model(n_organs: int = len(CORE_ORGANS)) -> nn.Module:
    """The peer: MONAI's FlexibleUNet with an EfficientNet-b1 encoder (random weights)."""
    from monai.networks.nets import FlexibleUNet

    torch.manual_seed(0)
    return FlexibleUNet(
        in_channels=1,
        out_channels=n_organs,
        backbone="efficientnet-b1",
        pretrained=False,
        spatial_dims=2,
    ).eval()


# --------------------------------------------------------------------------- scans
def synthetic_scan(slices: int, size: int, seed: int = 0) -> np.ndarray:
    """int16 CT values: air, a body ellipse of soft tissue with two organs, bone, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    body = (xx / 0.42) ** 2 + (yy / 0.32) ** 2 < 1
    organ = ((xx - 0.1) / 0.15) ** 2 + ((yy + 0.05) / 0.12) ** 2 < 1
    bone = (xx / 0.05) ** 2 + ((yy - 0.22) / 0.05) ** 2 < 1
    plane = np.full((size, size), -1000.0, dtype=np.float32)
    plane[body] = 40
    plane[organ] = 100
    plane[bone] = 700
    volume = np.empty((slices, size, size), dtype=np.int16)
    for k in range(slices):
        noise = rng.normal(0, 15, (size, size)).astype(np.float32)
        volume[k] = np.clip(plane + noise, -1024, 3071)
    return volume


def write_scan(volume: np.ndarray, path: Path, spacing: float = 0.8) -> Path:
    from vetseg.io.image import ImageMeta, write_image

    return write_image(volume, ImageMeta((spacing, spacing, 2.5), (0.0, 0.0, 0.0)), path)


def model_preprocess(args: argparse.Namespace) -> tuple[PreprocessConfig, dict[str, Any]]:
    """The end-to-end model's preprocessing, and what it costs per slice of the scans."""
    from vetseg.data.preprocess import tile_starts

    if args.model_spacing is None:
        config = PreprocessConfig(size=args.size)
        return config, {"spacing_mm": None, "input": f"each slice resized to {args.size} px"}
    # What `vetseg transfer` records by default: the human model's intensity statistics (every
    # model with a pixel spacing has fixed statistics; they also place the tiles on the body).
    from vetseg.models.files import read_model_info

    human = read_model_info(Path(__file__).resolve().parents[1] / "src/vetseg/assets/human_model")
    config = PreprocessConfig(
        size=args.tile, spacing=args.model_spacing, intensity=human.preprocess.intensity
    )
    pixels = int(round(args.size * args.scan_spacing / args.model_spacing))
    per_axis = len(tile_starts(pixels, args.tile))
    return config, {
        "spacing_mm": args.model_spacing,
        "tile": args.tile,
        "intensity": list(config.intensity or ()),
        "scan_spacing_mm": args.scan_spacing,
        "slice_on_model_grid_px": pixels,
        "tiles_per_slice_whole_field": per_axis**2,
        "tiles_per_slice_body_box": body_box_tiles(args, config),
        "tile_pixels_over_one_resized_slice": round(per_axis**2 * args.tile**2 / args.size**2, 2),
    }


def body_box_tiles(args: argparse.Namespace, config: PreprocessConfig) -> float:
    """Tiles per slice that inference runs on the synthetic scan (tiles over the body's box)."""
    from vetseg.data.preprocess import body_level, plan_tiles, to_model_grid

    scan = synthetic_scan(2, args.size).astype(np.float32)
    image, _ = to_model_grid(scan, (args.scan_spacing, args.scan_spacing), config)
    return len(plan_tiles(image, config.size, body_level(config))) / scan.shape[0]


#: Runs ``vetseg`` in this interpreter and writes the process's peak RSS (VmHWM, per exec,
#: unlike ``ru_maxrss``, which a child inherits from the process it was forked from).
_CHILD = """
import os
import sys
from pathlib import Path
from vetseg.cli import main
sys.argv = ["vetseg", *sys.argv[2:]]
try:
    main()
finally:
    status = Path("/proc/self/status").read_text()
    hwm = [line for line in status.splitlines() if line.startswith("VmHWM")]
    Path(os.environ["VETSEG_HWM_FILE"]).write_text(hwm[0].split()[1] if hwm else "")
"""


def run_cli_measured(args: list[str], env: dict[str, str], work: Path) -> dict[str, Any]:
    """Run ``vetseg`` in a fresh process: wall seconds and its own peak RSS (VmHWM, MB)."""
    hwm_file = work / "hwm.txt"
    hwm_file.unlink(missing_ok=True)
    command = [sys.executable, "-c", _CHILD, "vetseg", *args]
    start = time.perf_counter()
    process = subprocess.run(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**env, "VETSEG_HWM_FILE": str(hwm_file)},
        check=False,
    )
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"vetseg {shlex.join(args)} failed:\n{process.stderr.decode()[-2000:]}")
    kilobytes = hwm_file.read_text().strip() if hwm_file.exists() else ""
    return {
        "command": shlex.join(["vetseg", *args]),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(int(kilobytes) / 1024, 1) if kilobytes else None,
    }


# --------------------------------------------------------------------------- parts
def measure_model(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """GFLOP per slice and per part, slices/s of each engine, the refine module alone."""
    size, batch_size = args.size, args.batch_size
    model = animal_model()
    x1 = torch.zeros(1, 1, size, size)
    model_gflop = gflop(model, x1)
    with torch.no_grad():
        f_stem = model.stem(x1)
        f3 = torch.cat([model.upsample(model.body(f_stem)), f_stem], dim=1)
        f4 = model.fuse(f3)
        inputs = {"stem": x1, "body": f_stem, "fuse": f3, "refine": f4, "head": model.refine(f4)}
    parts = {name: round(gflop(getattr(model, name), t), 3) for name, t in inputs.items()}
    result["model"] = {
        "class": "AnimalOrganNet",
        "architecture": model.architecture(),
        "input": [1, 1, size, size],
        "gflop_per_slice": round(model_gflop, 3),
        "gflop_per_part": parts,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
    }
    print(f"model {model_gflop:.2f} GFLOP/slice: {parts}", flush=True)
    roofline = result["matmul_gflops"]

    if "throughput" in args.parts:
        measure_throughput(args, result, model_gflop)

    if "refine" in args.parts:
        refine = animal_model().refine
        f4_batch = np.random.default_rng(1).standard_normal((batch_size, *f4.shape[1:]))
        f4_batch = f4_batch.astype(np.float32)
        refine_gflop = gflop(refine, f4)
        refine_bytes = activation_bytes(refine, f4)
        refine_result: dict[str, Any] = {
            "input": list(f4.shape),
            "gflop_per_slice": round(refine_gflop, 3),
            "activation_mb_per_slice_layer_by_layer": round(refine_bytes / 1e6, 1),
            "flop_per_byte": round(refine_gflop * 1e9 / refine_bytes, 2),
            "machine_flop_per_byte": round(roofline / result["copy_bandwidth_gbs"], 2),
            "memory_roofline_slices_per_s": round(
                result["copy_bandwidth_gbs"] * 1e9 / refine_bytes, 2
            ),
            "flop_roofline_slices_per_s": round(roofline / refine_gflop, 2),
        }
        for name, run in {
            "pytorch_eager": torch_runner(refine, channels_last=False),
            "onnxruntime": onnx_runner(animal_model().refine, f4_batch.shape, args.threads),
        }.items():
            rate = slices_per_second(run, f4_batch, args.seconds / 2)
            refine_result[name] = {
                "slices_per_s": round(rate, 2),
                "gflops": round(rate * refine_gflop, 1),
                "roofline_fraction": round(rate * refine_gflop / roofline, 3),
                "gb_per_s_if_layer_by_layer": round(rate * refine_bytes / 1e9, 1),
            }
            whole = result.get("throughput", {}).get(name)
            if whole:  # seconds of the module per second of the whole model
                refine_result[name]["share_of_model_time"] = round(whole["slices_per_s"] / rate, 3)
        result["refine_module"] = refine_result
        print(f"refine: {refine_result}", flush=True)


def measure_throughput(
    args: argparse.Namespace, result: dict[str, Any], model_gflop: float
) -> None:
    """Slices/s of every engine and precision, and of the peer, timed in turns (medians)."""
    from benchcommon import interleaved_medians

    from vetseg.inference.capabilities import bf16_native, openvino_version

    size, batch_size, threads = args.size, args.batch_size, args.threads
    batch = np.random.default_rng(0).standard_normal((batch_size, 1, size, size))
    batch = batch.astype(np.float32)
    shape = batch.shape
    peer_gflop = gflop(peer_model(), torch.zeros(1, 1, size, size))
    # name -> (runner, GFLOP per slice, precision)
    runners: dict[str, tuple[Callable[[np.ndarray], Any], float, str]] = {
        "pytorch_eager": (torch_runner(animal_model(), False), model_gflop, "fp32"),
        "pytorch_channels_last": (torch_runner(animal_model(), True), model_gflop, "fp32"),
        "pytorch_bf16_autocast": (autocast_runner(animal_model()), model_gflop, "bf16"),
        "onnxruntime_fp32": (onnx_runner(animal_model(), shape, threads), model_gflop, "fp32"),
        "peer_flexibleunet_b1_onnxruntime_fp32": (
            onnx_runner(peer_model(), shape, threads),
            peer_gflop,
            "fp32",
        ),
    }
    if openvino_version() is not None:
        precisions = ("fp32", "bf16") if bf16_native() else ("fp32",)
        for precision in precisions:
            runners[f"openvino_{precision}"] = (
                openvino_runner(animal_model(), shape, threads, precision),
                model_gflop,
                precision,
            )
        if bf16_native():
            runners["peer_flexibleunet_b1_openvino_bf16"] = (
                openvino_runner(peer_model(), shape, threads, "bf16"),
                peer_gflop,
                "bf16",
            )
    seconds = interleaved_medians(
        {name: (lambda run=run: run(batch)) for name, (run, _, _) in runners.items()},
        args.repeats,
    )
    rooflines = {"fp32": result["matmul_gflops"], "bf16": result["matmul_gflops_bf16"]}
    throughput: dict[str, Any] = {
        "batch_size": batch_size,
        "size": size,
        "timing": f"median of {args.repeats} batches per engine, engines taking turns",
        "peer_gflop_per_slice": round(peer_gflop, 3),
    }
    for name, (_, slice_gflop, precision) in runners.items():
        rate = batch_size / seconds[name]
        throughput[name] = {
            "slices_per_s": round(rate, 3),
            "precision": precision,
            "gflop_per_slice": round(slice_gflop, 3),
            "gflops": round(rate * slice_gflop, 1),
            "roofline_fraction": round(rate * slice_gflop / rooflines[precision], 3),
            "fp32_roofline_fraction": round(rate * slice_gflop / rooflines["fp32"], 3),
        }
        print(f"{name}: {rate:.2f} slices/s, {throughput[name]}", flush=True)
    base = throughput["onnxruntime_fp32"]["slices_per_s"]
    for name in runners:
        throughput[name]["vs_onnxruntime_fp32"] = round(throughput[name]["slices_per_s"] / base, 2)
    result["throughput"] = throughput


def measure_command(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """``vetseg segment`` end to end (100 slices) and its peak RSS (400 slices)."""
    from vetseg.inference.engines import export_onnx
    from vetseg.models.files import ModelInfo, new_model_id, save_model

    size, batch_size = args.size, args.batch_size
    if args.model_spacing is not None:
        batch_size = None  # tiles per pass: segment's default for the tile, as a user gets
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vetseg-speed-"))
    model = animal_model()
    model_dir = work / "model"
    preprocess, scale = model_preprocess(args)
    result["end_to_end_model"] = scale
    info = ModelInfo(
        model_id=new_model_id("speed"),
        architecture=model.architecture(),
        organs=CORE_ORGANS,
        preprocess=preprocess,
        stage="benchmark",
        training={"note": "random weights, for speed measurements only"},
    )
    save_model(model, model_dir, info)
    started = time.perf_counter()
    export_onnx(model, info, model_dir / "model.onnx")
    result["onnx_export_seconds"] = round(time.perf_counter() - started, 2)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def fresh_default_folder(name: str) -> Path:
        """A model folder as training leaves it: no model.onnx, no compiled blob, no check."""
        folder = work / name
        save_model(model, folder, info)
        return folder

    def cli(scan: Path, engine: str, name: str, folder: Path = model_dir) -> list[str]:
        engine_option = [] if engine == "default" else ["--engine", engine]
        return [
            "segment", str(folder), str(scan), "--out", str(work / f"{name}.nii.gz"),
            "--report", str(work / name), *engine_option,
            *([] if batch_size is None else ["--batch-size", str(batch_size)]),
            "--threads", str(args.threads),
        ]  # fmt: skip

    if "end_to_end" in args.parts:
        scan = write_scan(
            synthetic_scan(args.slices, size), work / f"scan_{args.slices}.nii.gz",
            args.scan_spacing,
        )  # fmt: skip
        end_to_end: dict[str, Any] = {
            "slices": args.slices,
            "size": size,
            "input": "NIfTI (.nii.gz, int16), label map .nii.gz, report CSV + JSON",
            "timing": f"median of {args.repeats} runs per engine, engines taking turns",
        }
        default_dir = fresh_default_folder("model_as_trained")
        first = run_cli_measured(cli(scan, "default", "seg_first", default_dir), env, work)
        end_to_end["default_first_run"] = first
        print(f"end to end (default, first run on the folder): {first}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"default": [], "onnx": []}
        for _ in range(args.repeats):
            for engine in runs:
                folder = default_dir if engine == "default" else model_dir
                command = cli(scan, engine, f"seg_{engine}", folder)
                runs[engine].append(run_cli_measured(command, env, work))
        for engine, measured in runs.items():
            times = sorted(m["seconds"] for m in measured)
            end_to_end[engine] = {
                "command": measured[0]["command"],
                "seconds": round(statistics.median(times), 2),
                "seconds_all": times,
                "peak_rss_mb": max(m["peak_rss_mb"] or 0 for m in measured),
            }
            print(f"end to end ({engine}): {end_to_end[engine]}", flush=True)
        end_to_end["onnx_over_default"] = round(
            end_to_end["onnx"]["seconds"] / end_to_end["default"]["seconds"], 2
        )
        for engine, folder in (("default", default_dir), ("onnx", model_dir)):
            end_to_end[engine]["steps_in_process"] = in_process_steps(
                folder, scan, work, "auto" if engine == "default" else engine, batch_size,
                args.threads,
            )  # fmt: skip
            print(f"steps ({engine}): {end_to_end[engine]['steps_in_process']}", flush=True)
        result["end_to_end"] = end_to_end

    if "memory" in args.parts:
        big = write_scan(
            synthetic_scan(args.rss_slices, size, seed=1), work / "big.nii", args.scan_spacing
        )
        default_dir = work / "model_as_trained"
        if not default_dir.exists():
            default_dir = fresh_default_folder("model_as_trained")
            run_cli_measured(cli(big, "default", "warm", default_dir), env, work)  # caches
        memory: dict[str, Any] = {"slices": args.rss_slices, "size": size, "goal_mb": 3000}
        for engine in ("default", "onnx"):
            folder = default_dir if engine == "default" else model_dir
            memory[engine] = run_cli_measured(cli(big, engine, f"big_{engine}", folder), env, work)
            print(f"memory ({engine}): {memory[engine]}", flush=True)
        result["memory"] = memory


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/speed.py", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "threads": args.threads,
        "machine": machine(),
        "weights": "random initialisation (speed does not depend on the weights)",
        "scans": "synthetic CT-like ellipses, not patients",
    }
    print(f"threads {args.threads}, size {args.size}, batch {args.batch_size}", flush=True)
    # The machine's rooflines, measured in this run with the same threads.
    n = 1024 if args.quick else 2048
    result["matmul_gflops"] = round(matmul_gflops(n, 3 if args.quick else 10), 1)
    result["matmul_gflops_bf16"] = round(
        matmul_gflops(n, 3 if args.quick else 10, torch.bfloat16), 1
    )
    result["copy_bandwidth_gbs"] = round(copy_bandwidth_gbs(256, 3 if args.quick else 10), 1)
    print(
        f"matmul fp32 {result['matmul_gflops']} GFLOP/s, bf16 {result['matmul_gflops_bf16']} "
        f"GFLOP/s, copy {result['copy_bandwidth_gbs']} GB/s",
        flush=True,
    )
    measure_model(args, result)
    measure_command(args, result)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


def in_process_steps(
    model_dir: Path, scan: Path, work: Path, engine: str, batch_size: int | None, threads: int
) -> dict[str, Any]:
    """Seconds per step of one scan in this process (model already loaded)."""
    from vetseg.inference.pipeline import SegmentOutputs, segment_scan
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter

    started = time.perf_counter()
    segmenter = Segmenter.load(
        model_dir,
        engine=engine,
        threads=threads,
        batch_size=batch_size,
        postprocess=PostprocessConfig(),
    )
    load_seconds = time.perf_counter() - started
    outputs = SegmentOutputs(labels=work / "steps.nii.gz", report=work / "steps")
    result = segment_scan(segmenter, scan, outputs)
    steps = {"load_model": load_seconds, **result.step_seconds, "total_scan": result.seconds}
    precision = getattr(segmenter.engine, "precision", "fp32")
    return {"engine": f"{segmenter.engine.name} {precision}"} | {
        k: round(v, 2) for k, v in steps.items()
    }


if __name__ == "__main__":
    main()
