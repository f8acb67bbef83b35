"""The ``vetseg`` command line: one typer app, subcommands named for the user's verbs.

Each command is a thin caller of the library. Heavy modules (torch, SimpleITK, monai) are
imported inside the commands so that ``vetseg --help`` answers at once. A
:class:`~vetseg.errors.VetsegError` becomes one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from vetseg.errors import InputError, VetsegError

app = typer.Typer(
    name="vetseg",
    help="CT organ segmentation for animals from a handful of labelled scans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
#: errno values of a full disk or an exhausted quota.
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT}


def _code(orientation: str | None) -> str | None:
    """A checked ``--orientation`` code (one sentence and exit 2 when it is not one)."""
    from vetseg.io.orientation import parse_orientation

    return parse_orientation(orientation)


def user_errors(func: F) -> F:
    """Report a VetsegError as one sentence on stderr with exit code 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VetsegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except OSError as exc:
            if exc.errno not in _FULL_DISK:
                raise
            # Every write is atomic (vetseg.fileutil), so what was there before is intact.
            where = f" writing {exc.filename}" if exc.filename else ""
            print(
                f"error: no space left on the disk{where}; nothing was changed: free some "
                "space and run the command again.",
                file=sys.stderr,
            )
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


_ORIENTATION = typer.Option(
    None,
    "--orientation",
    help="Where the scan's array axes x, y, z point (letters L/R, P/A, S/I: PIR = x to "
    "posterior, y to inferior, z to right), overriding the header; for micro-CT headers that "
    "do not say how the animal lay. The scan's file is not changed.",
)


_DATA_ORIENTATION = typer.Option(
    None,
    "--orientation",
    help="Where the array axes x, y, z of every scan of the dataset point (e.g. PIR), "
    "overriding the headers (see vetseg segment --orientation); the files are not changed.",
)


# --------------------------------------------------------------------------- foundation
@app.command()
@user_errors
def phantoms(
    out: Path = typer.Argument(..., help="Folder for the MSD-layout dataset (created)."),
    species: str = typer.Option("human", help="human or rabbit."),
    cases: int = typer.Option(10, min=1, help="Number of synthetic cases."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same cases."),
    non_contrast: bool = typer.Option(
        False, "--non-contrast", help="Non-contrast HU values instead of contrast-enhanced."
    ),
    variety: str = typer.Option(
        "default",
        help="default (the demo's 7-organ phantoms), wide (human: contrast phases, scanners, "
        "body sizes, arms, table, metal, fields of view; 12 organs), wide-kidneys (wide, and "
        "kidneys as real contrast scans show them: nephrogram, renal sinus, position) or "
        "wide-ribs (wide-kidneys, and ribs as real CT shows them: thin cortex around marrow, "
        "tapering, costal cartilage labelled bone) or wide-stomach (wide-ribs, and half the "
        "stomachs collapsed around food with a thick rugal wall).",
    ),
    workers: int = typer.Option(1, min=1, help="Processes that draw cases in parallel."),
) -> None:
    """Write synthetic CT phantoms (image + organ labels) in the MSD / nnU-Net layout."""
    from vetseg.data.phantoms import write_phantom_dataset

    paths = write_phantom_dataset(
        out,
        species=species,
        cases=cases,
        seed=seed,
        contrast=not non_contrast,
        variety=variety,
        workers=workers,
    )
    print(f"wrote {len(paths)} synthetic {species} cases to {out} (synthetic data, not real scans)")


@app.command()
@user_errors
def synth(
    labels: Path = typer.Argument(..., help="A real label atlas (e.g. Digimouse labels.nii.gz)."),
    out: Path = typer.Argument(..., help="Folder for the synthesised MSD-layout dataset."),
    cases: int = typer.Option(5, min=1, help="Number of synthesised cases."),
    seed: int = typer.Option(0, help="Random seed."),
    mapping: str = typer.Option(
        "auto", help="Label ids of the atlas: auto, digimouse, totalseg, mouse_head, vetseg."
    ),
    organs: str | None = typer.Option(
        None,
        "--organs",
        help="Organs to label: comma-separated, or 'all' for every vetseg organ the atlas draws"
        " (default: the 7 core organs).",
    ),
) -> None:
    """Synthesise CT-like cases from a real label atlas (tissue HU, deformation, noise, blur)."""
    from vetseg.data.synth import synthesize_dataset
    from vetseg.labels import HUMAN_ORGANS

    chosen = HUMAN_ORGANS if organs == "all" else _organ_list(organs)
    paths = synthesize_dataset(labels, out, cases=cases, seed=seed, mapping=mapping, organs=chosen)
    print(f"wrote {len(paths)} synthesised cases to {out} (synthesised from an atlas, not real CT)")


@app.command()
@user_errors
def preview(
    scan: Path = typer.Argument(..., help="CT scan: NIfTI, NRRD, MHA or a DICOM folder."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    labels: Path | None = typer.Option(None, "--labels", help="Label map on the same grid."),
    orientation: str | None = _ORIENTATION,
) -> None:
    """Axial, coronal and sagittal mid-slices of a scan with the label overlay, as a PNG."""
    from vetseg.io.orientation import parse_orientation
    from vetseg.viz.preview import save_preview_file

    warnings: list[str] = []
    save_preview_file(
        scan, out, labels=labels, orientation=parse_orientation(orientation), warnings=warnings
    )
    print(f"wrote {out}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


@app.command()
@user_errors
def info(
    path: Path | None = typer.Argument(
        None,
        help="CT scan or label map (NIfTI, NRRD, MHA, DICOM folder); with --engines, a model.",
    ),
    engines: bool = typer.Option(
        False,
        "--engines",
        help="Say which engines and precisions this machine runs; with a MODEL, also what "
        "--engine auto picks for it (runs the bf16 accuracy check once if not cached).",
    ),
    threads: int | None = typer.Option(None, "--threads", help="Threads for the check."),
    orientation: str | None = _ORIENTATION,
) -> None:
    """Shape, spacing, orientation, intensity range and the labels present, with names.

    With --engines: the engines, versions and precisions of this machine instead.
    """
    if engines:
        from vetseg.inference.command import run_info_engines

        run_info_engines(path, threads=threads)
        return
    if path is None:
        raise VetsegError("Give a scan or label map, or --engines.")
    from vetseg.io.info import describe, format_description
    from vetseg.io.orientation import parse_orientation

    description = describe(path, parse_orientation(orientation))
    print(format_description(description))
    if description.get("posture_warning"):
        print(f"warning: {description['posture_warning']}", file=sys.stderr)


# --------------------------------------------------------------------------- the method
def _stage_config(kind: str, config_file: Path | None, **options: Any) -> Any:
    """Stage defaults (DESIGN section 4), then the JSON file's values, then explicit options."""
    import dataclasses

    from vetseg.config import AugmentConfig, StageConfig, from_dict, load_json

    base = {"human": StageConfig.human, "transfer": StageConfig.transfer}[kind]()
    if config_file is not None:
        merged = {**dataclasses.asdict(base), **load_json(config_file)}
        base = from_dict(StageConfig, merged)
    size = options.pop("size", None)
    spacing = options.pop("spacing", None)
    context = options.pop("context_slices", None)
    tile = options.pop("tile", None)
    no_augment = options.pop("no_augment", False)
    hu_shift = options.pop("hu_shift", None)
    changes = {k: v for k, v in options.items() if v is not None}
    if size is not None or spacing is not None or context is not None or tile is not None:
        changes["preprocess"] = dataclasses.replace(
            base.preprocess,
            size=size if size is not None else base.preprocess.size,
            spacing=spacing if spacing is not None else base.preprocess.spacing,
            context_slices=context if context is not None else base.preprocess.context_slices,
            tile=tile if tile is not None else base.preprocess.tile,
        )
    if no_augment:
        if hu_shift:
            raise InputError("--hu-shift is an augmentation: leave out --no-augment.")
        changes["augment"] = AugmentConfig(enabled=False)
    elif hu_shift is not None:
        changes["augment"] = dataclasses.replace(base.augment, hu_shift=hu_shift)
    return dataclasses.replace(base, **changes)


_EPOCHS = typer.Option(None, "--epochs", help="Epochs in total (human 10, transfer 100).")
_FREEZE = typer.Option(None, "--freeze-epochs", help="First epochs with the body frozen (50).")
_SIZE = typer.Option(
    None, "--size", help="Tile the network sees, in pixels (human 256; transfer: the human's)."
)
_LR = typer.Option(None, "--lr", help="Adam learning rate (1e-4).")
_WD = typer.Option(None, "--weight-decay", help="Adam weight decay (1e-5).")
_ALPHA = typer.Option(None, "--tversky-alpha", help="Tversky false-positive weight (0.5 / 0.3).")
_BETA = typer.Option(None, "--tversky-beta", help="Tversky false-negative weight (0.5 / 0.7).")
_THRESHOLD = typer.Option(
    None, "--threshold", help="Extend training while best Dice < this (0.95)."
)
_EXTEND = typer.Option(None, "--extend", help="Extension epochs when under the threshold.")
_BATCH = typer.Option(None, "--batch-size", help="Slices per step (8).")
_STEPS = typer.Option(
    None, "--steps-per-epoch", help="Cap on steps per epoch (default: all slices)."
)
_SEED = typer.Option(None, "--seed", help="Seed of split, sampling and initialisation (0).")
_VAL_SLICES = typer.Option(
    None, "--val-slices", help="Validate on at most N slices, evenly strided (default: all)."
)
_CONFIG = typer.Option(None, "--config", help="JSON file with any of these settings.")
_RESUME = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoint.")
_NO_AUG = typer.Option(False, "--no-augment", help="Train without augmentation.")
_HU_SHIFT = typer.Option(
    None,
    "--hu-shift",
    help="Chance (0-1) that a training slice's soft tissue is moved in HU: up to +-40 HU for"
    " all of it and +-20 HU more per organ, as another contrast timing would (default 0: off;"
    " ranges: hu_shift_case / hu_shift_organ under augment in --config).",
)
_SKIP_UNITS_TRAIN = typer.Option(
    False,
    "--skip-units-check",
    help="Train even on cases without air (no value below -500) when the model works in HU, "
    "which is refused by default: raw scanner values, or crops inside the body.",
)
_CONTEXT = typer.Option(
    None,
    "--context-slices",
    help="Neighbouring slices on each side as extra input channels (default 0: the patent's"
    " one-channel stem; N gives 1+2N channels; a one-channel human stem is widened with the"
    " neighbours' weights at zero).",
)


@app.command("train-human")
@user_errors
def train_human_cmd(
    data: Path = typer.Argument(
        ..., help="Labelled human CT: MSD, TotalSegmentator or pairs layout."
    ),
    out: Path = typer.Option(..., "--out", help="Model folder to write."),
    epochs: int | None = _EPOCHS,
    size: int | None = _SIZE,
    spacing: float | None = typer.Option(
        None, "--spacing", help="Model pixel spacing in mm (1.5, as TotalSegmentator)."
    ),
    organs: str | None = typer.Option(
        None, "--organs", help="Comma-separated organs to train (default: the 7 core organs)."
    ),
    lr: float | None = _LR,
    weight_decay: float | None = _WD,
    tversky_alpha: float | None = _ALPHA,
    tversky_beta: float | None = _BETA,
    threshold: float | None = _THRESHOLD,
    extend: int | None = _EXTEND,
    batch_size: int | None = _BATCH,
    steps_per_epoch: int | None = _STEPS,
    seed: int | None = _SEED,
    val_slices: int | None = _VAL_SLICES,
    config: Path | None = _CONFIG,
    resume: bool = _RESUME,
    no_augment: bool = _NO_AUG,
    hu_shift: float | None = _HU_SHIFT,
    context_slices: int | None = _CONTEXT,
    orientation: str | None = _DATA_ORIENTATION,
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Slice cache from vetseg prepare: slices are read from it, not decoded (DATA may "
        "also be the cache itself).",
    ),
    tile: int | None = typer.Option(
        None,
        "--tile",
        help="Tile the model runs on when it segments a scan, in pixels (default: --size; "
        "with --init, the parent's). Training still uses --size tiles.",
    ),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Start from this human model's weights (fine-tuning): its organs and input "
        "definition are kept, and the new model records it as its parent.",
    ),
    skip_units_check: bool = _SKIP_UNITS_TRAIN,
) -> None:
    """S100: train the human organ model (stem + EfficientNet-b1 module + first head).

    Under torchrun (torchrun --nproc_per_node N -m vetseg train-human ...) every process
    trains on its share of each batch; --batch-size is the batch of all processes together.
    """
    if init is not None:
        from vetseg.models.files import read_model_info

        kept = read_model_info(init).preprocess
        for flag, asked, own in (
            ("--spacing", spacing, kept.spacing),
            ("--size", size, kept.size),
            ("--context-slices", context_slices, kept.context_slices),
        ):
            if asked is not None and asked != own:
                raise InputError(
                    f"{init}: the model works with {flag} {own}; --init keeps its input "
                    f"definition (asked for {asked}). Leave {flag} out."
                )
    cfg = _stage_config(
        "human",
        config,
        epochs=epochs,
        size=size,
        spacing=spacing,
        lr=lr,
        weight_decay=weight_decay,
        tversky_alpha=tversky_alpha,
        tversky_beta=tversky_beta,
        threshold=threshold,
        extend=extend,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        val_slices=val_slices,
        no_augment=no_augment,
        hu_shift=hu_shift,
        context_slices=context_slices,
        tile=tile,
    )
    from vetseg.training.stages import train_human

    info = train_human(
        data,
        out,
        cfg,
        _organ_list(organs),  # None: train_human's default (the core organs, or --init's)
        resume=resume,
        orientation_override=_code(orientation),
        cache=cache,
        init=init,
        check_units=not skip_units_check,
    )
    _print_model_summary(info, out)


@app.command()
@user_errors
def prepare(
    data: Path = typer.Argument(..., help="Labelled CT: MSD, TotalSegmentator or pairs layout."),
    out: Path = typer.Option(..., "--out", help="Slice cache folder to write (or finish)."),
    spacing: float | None = typer.Option(
        None, "--spacing", help="Model pixel spacing in mm (as train-human: 1.5)."
    ),
    window: str | None = typer.Option(
        None, "--window", help="CT window LOW,HIGH in HU (as train-human: -1000,1000)."
    ),
    organs: str | None = typer.Option(
        None, "--organs", help="Comma-separated organs (as train-human: the 7 core organs)."
    ),
    config: Path | None = _CONFIG,
    workers: int = typer.Option(1, "--workers", help="Cases decoded in parallel (processes)."),
    orientation: str | None = _DATA_ORIENTATION,
) -> None:
    """Write every labelled case once on the model grid (memory-mapped .npy) for training.

    Resumable: run it again after an interruption and only the missing cases are done.
    train-human then reads slices from the cache (--cache, or the cache as DATA).
    """
    import dataclasses

    from vetseg.data.cache import CacheSettings, prepare_cache
    from vetseg.labels import CORE_ORGANS
    from vetseg.training.progress import make_progress

    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}.")
    preprocess = _stage_config("human", config, spacing=spacing).preprocess
    if window is not None:
        preprocess = dataclasses.replace(preprocess, window=_parse_window(window))
    settings = CacheSettings.of(preprocess, _organ_list(organs) or CORE_ORGANS, _code(orientation))
    with make_progress() as progress:
        task = progress.add_task("prepare", total=None, info="")

        def started(todo: int, total: int) -> None:
            progress.update(task, total=todo, info=f"{total - todo} of {total} cached before")

        cache = prepare_cache(
            data,
            out,
            settings,
            workers=workers,
            on_start=started,
            on_case=lambda case_id: progress.update(task, advance=1, info=case_id),
        )
    slices = sum(case.slices for case in cache.cases.values())
    print(
        f"slice cache {out}: {len(cache.cases)} cases, {slices} slices at"
        f" {settings.spacing:g} mm, window {settings.window[0]:g}..{settings.window[1]:g} HU"
    )
    from vetseg.io.units import training_units_problem

    problem = training_units_problem(
        {cid: case.lowest for cid, case in cache.cases.items()}, settings.window
    )
    if problem is not None:
        print(f"warning: train-human will refuse this cache: {problem}")


@app.command()
@user_errors
def transfer(
    human_model: Path = typer.Argument(..., help="A trained human model folder."),
    data: Path = typer.Argument(..., help="Labelled animal CT (a handful of cases)."),
    out: Path = typer.Option(..., "--out", help="Model folder to write."),
    epochs: int | None = _EPOCHS,
    freeze_epochs: int | None = _FREEZE,
    size: int | None = _SIZE,
    lr: float | None = _LR,
    weight_decay: float | None = _WD,
    tversky_alpha: float | None = _ALPHA,
    tversky_beta: float | None = _BETA,
    threshold: float | None = _THRESHOLD,
    extend: int | None = _EXTEND,
    batch_size: int | None = _BATCH,
    steps_per_epoch: int | None = _STEPS,
    seed: int | None = _SEED,
    val_slices: int | None = _VAL_SLICES,
    config: Path | None = _CONFIG,
    resume: bool = _RESUME,
    no_augment: bool = _NO_AUG,
    hu_shift: float | None = _HU_SHIFT,
    scratch: bool = typer.Option(
        False, "--scratch", help="Baseline: same architecture from random weights, nothing frozen."
    ),
    context_slices: int | None = _CONTEXT,
    spacing: str | None = typer.Option(
        None,
        "--spacing",
        help="Model pixel spacing: mm, 'species' (human spacing x the species' body scale),"
        " 'native' (the training scans' median) or 'auto' (default: species, unless over"
        " 1.5x finer than the scans, then native).",
    ),
    species: str | None = typer.Option(
        None, "--species", help="The animal (default: the dataset's 'species')."
    ),
    organs: str | None = typer.Option(
        None, "--organs", help="Comma-separated organs to train (default: all labelled ones)."
    ),
    orientation: str | None = _DATA_ORIENTATION,
    skip_units_check: bool = _SKIP_UNITS_TRAIN,
) -> None:
    """S101: build the animal model from a human model and train it on animal CT."""
    cfg = _stage_config(
        "transfer",
        config,
        epochs=epochs,
        freeze_epochs=freeze_epochs,
        lr=lr,
        weight_decay=weight_decay,
        tversky_alpha=tversky_alpha,
        tversky_beta=tversky_beta,
        threshold=threshold,
        extend=extend,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        val_slices=val_slices,
        no_augment=no_augment,
        hu_shift=hu_shift,
        context_slices=context_slices,
    )
    from vetseg.training.stages import transfer as run_transfer

    info = run_transfer(
        human_model,
        data,
        out,
        cfg,
        organs=_organ_list(organs),
        spacing=spacing,
        size=size,
        species=species,
        resume=resume,
        from_scratch=scratch,
        orientation_override=_code(orientation),
        check_units=not skip_units_check,
    )
    _print_model_summary(info, out)
    if not _is_rank0():
        return
    training = info.training
    print(f"pixel spacing {training.get('spacing_rule')}; tiles of {info.preprocess.size} px")
    if training.get("organs_new_to_human"):
        print(
            "organs the human model lacks, trained from the animal labels alone: "
            + ", ".join(training["organs_new_to_human"])
        )
    if training.get("organs_not_trained"):
        print(
            "labelled in the data but NOT trained (not in --organs): "
            + ", ".join(training["organs_not_trained"])
        )


def _organ_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; None or empty -> None."""
    if not text:
        return None
    organs = tuple(o.strip() for o in text.split(",") if o.strip())
    if len(set(organs)) != len(organs):
        raise InputError(f"--organs {text!r} names an organ twice.")
    return organs or None


def _is_rank0() -> bool:
    """False in the torchrun processes of rank > 0: rank 0 speaks for the run."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _print_model_summary(info: Any, out: Path) -> None:
    if not _is_rank0():
        return
    metrics = info.metrics
    print(
        f"model {info.model_id} written to {out}: best validation mean Dice "
        f"{metrics.get('val_mean_dice', float('nan')):.3f} at epoch {metrics.get('best_epoch')}"
        + (f" (trained on {info.data_note})" if info.data_note else "")
    )


@app.command()
@user_errors
def segment(
    model: Path = typer.Argument(..., help="A vetseg model folder."),
    scan: Path = typer.Argument(
        ..., help="CT scan (NIfTI, NRRD, MHA, DICOM series folder) or a folder of scans."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Label map (.nii.gz, .nii, .nrrd, .seg.nrrd, .mha); a folder for a folder of scans.",
    ),
    preview_png: Path | None = typer.Option(None, "--preview", help="Also write a PNG preview."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Slices per forward pass (default: 4 at 512 x 512)."
    ),
    engine: str = typer.Option(
        "auto",
        "--engine",
        help="openvino, onnx (ONNX Runtime), torch, or auto: OpenVINO bf16 where the CPU has "
        "it and the model passes the accuracy check, else ONNX Runtime fp32 (models of 256 x "
        "256 and more; smaller ones: onnx on MODEL/model.onnx, else torch).",
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto, fp32 or bf16 (OpenVINO; used only where it agrees with fp32, else fp32).",
    ),
    onnx_file: Path | None = typer.Option(
        None, "--onnx-file", help="Exported model for --engine onnx (default: MODEL/model.onnx)."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Organ report: writes PREFIX.csv and PREFIX.json."
    ),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="Folder for <scan>.csv and <scan>.json organ reports."
    ),
    uncertainty: Path | None = typer.Option(
        None, "--uncertainty", help="Per-voxel uncertainty map (uint8, percent)."
    ),
    dicom_seg: Path | None = typer.Option(
        None, "--dicom-seg", help="DICOM Segmentation (.dcm) for a DICOM series input."
    ),
    preview_dir: Path | None = typer.Option(
        None, "--preview-dir", help="Folder of scans: write <scan>.png previews here."
    ),
    label_format: str | None = typer.Option(
        None, "--format", help="Folder of scans: label map format (nii.gz, nrrd, ...)."
    ),
    threshold: float = typer.Option(0.5, help="Organ probability threshold."),
    postprocess: bool = typer.Option(
        True, "--postprocess/--no-postprocess", help="Clean masks (largest parts, holes)."
    ),
    rules: Path | None = typer.Option(None, "--rules", help="JSON file of post-processing rules."),
    threads: int | None = typer.Option(
        None, "--threads", help="ONNX Runtime / OpenVINO threads (default: all cores)."
    ),
    smooth_slices: int = typer.Option(
        0,
        "--smooth-slices",
        help="Average organ probabilities over N neighbouring slices on each side (binomial "
        "weights) so that slices do not decide alone; 0: off.",
    ),
    mirror: bool = typer.Option(
        False,
        "--mirror",
        help="Also segment every slice mirrored left-right and average the two answers "
        "(test-time augmentation, paired organs swapped); twice the network's time.",
    ),
    tilings: int | None = typer.Option(
        None,
        "--tilings",
        help="Grids of tiles averaged per slice: 1, 3 or 5 (the grid moved a quarter tile; "
        "each one more pass of the network); default: the model's own (model.json).",
    ),
    orientation: str | None = _ORIENTATION,
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="Folder of scans: segment only shard I of N (I from 0), e.g. "
        "$SLURM_ARRAY_TASK_ID/N; the N shards of the sorted scans are disjoint.",
    ),
    rescale_intercept: float = typer.Option(
        0.0,
        "--rescale-intercept",
        help="Add this to every value before segmenting: -1024 for files that store the "
        "scanner's raw values instead of Hounsfield units (the DICOM RescaleIntercept).",
    ),
    skip_units_check: bool = typer.Option(
        False,
        "--skip-units-check",
        help="Segment even when a model that works in HU is given a scan without air (no "
        "value below -500), which is refused by default: raw scanner values, or a crop inside "
        "the body.",
    ),
) -> None:
    """S201: segment a scan into an organ label map on the scan's own grid.

    With a folder of scans (files and DICOM series subfolders) every scan is segmented into
    the --out folder; a scan that fails is reported and the others go on. Exit code 0: all
    done; 1: some scans of a folder failed; 2: bad input, nothing written.
    """
    from vetseg.inference.command import SegmentRequest, run_segment

    request = SegmentRequest(
        model=model,
        scan=scan,
        out=out,
        preview=preview_png,
        report=report,
        report_dir=report_dir,
        uncertainty=uncertainty,
        dicom_seg=dicom_seg,
        preview_dir=preview_dir,
        label_format=label_format,
        engine=engine,
        onnx_file=onnx_file,
        batch_size=batch_size,
        threshold=threshold,
        postprocess=postprocess,
        postprocess_file=rules,
        threads=threads,
        precision=precision,
        smooth_slices=smooth_slices,
        mirror=mirror,
        tilings=tilings,
        orientation=orientation,
        shard=_parse_shard(shard),
        rescale_intercept=rescale_intercept,
        check_units=not skip_units_check,
    )
    code = run_segment(request)
    if code:
        raise typer.Exit(code=code)


@app.command()
@user_errors
def export(
    model: Path = typer.Argument(..., help="A vetseg model folder."),
    onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write (e.g. MODEL/model.onnx)."),
) -> None:
    """Export a model to ONNX for --engine onnx, checked against PyTorch (within 1e-3)."""
    from vetseg.inference.command import run_export

    run_export(model, onnx)


@app.command()
@user_errors
def evaluate(
    model: Path = typer.Argument(..., help="A vetseg model folder."),
    data: Path = typer.Argument(..., help="A labelled dataset."),
    split: str = typer.Option("all", help="all, or train/val/test of the model's own split."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON here."),
    raw: bool = typer.Option(
        False, "--raw", help="Score the model's raw label map, without segment's post-processing."
    ),
    orientation: str | None = _DATA_ORIENTATION,
) -> None:
    """Dice and HD95 per organ of a model on a labelled dataset, scoring what segment writes."""
    from rich.console import Console

    from vetseg.reporting import evaluation_table
    from vetseg.training.evaluation import evaluate as run_evaluate

    result = run_evaluate(
        model, data, split=split, raw=raw, orientation_override=_code(orientation)
    )
    Console().print(evaluation_table(result))
    if json_out is not None:
        import json

        from vetseg.fileutil import atomic_write_text
        from vetseg.models.files import relative_path

        # Paths relative to the JSON's folder: no machine's absolute path in a result file.
        for key in ("model", "data"):
            result[key] = relative_path(result[key], json_out.parent)
        # Strict JSON: the result holds null, never NaN, and a NaN that slipped in is an error.
        atomic_write_text(json_out, json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"wrote {json_out}")


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for data, models, results."),
    full: bool = typer.Option(False, "--full", help="Longer run; trains the human model here."),
    train_human: bool = typer.Option(
        False, "--train-human", help="Train the human model here instead of using the shipped one."
    ),
    labelled: int | None = typer.Option(None, "--labelled", help="Labelled rabbits (k, 5)."),
    human_model: Path | None = typer.Option(
        None, "--human-model", help="Start from this human model instead of the shipped one."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Epochs of transfer and scratch training (8)."
    ),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", min=1, help="Steps per epoch of transfer and scratch (40)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of phantoms and training (0)."),
    rounds: int = typer.Option(
        0, "--rounds", min=0, help="Then N pre-label / correct / refine rounds (vet = truth)."
    ),
) -> None:
    """Phantoms -> human model -> rabbit transfer -> Dice on held-out rabbits vs two baselines."""
    import dataclasses

    from vetseg.demo import DemoConfig, run_demo

    config = DemoConfig.full() if full else DemoConfig()
    changes: dict[str, Any] = {"train_human": config.train_human or train_human}
    if labelled is not None:
        if labelled < 2:
            raise typer.BadParameter("--labelled needs at least 2 rabbits (one validates).")
        changes["labelled"] = labelled
    if seed is not None:
        changes["seed"] = seed
    animal_changes = {
        k: v for k, v in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)) if v
    }
    if animal_changes:
        changes["animal"] = dataclasses.replace(config.animal, **animal_changes)
    if human_model is not None:
        from vetseg.models.files import resolve_model_dir

        changes["human_model"] = str(resolve_model_dir(human_model))
    changes["rounds"] = rounds
    run_demo(out, dataclasses.replace(config, **changes))


@app.command("rl-tune")
@user_errors
def rl_tune_cmd(
    target: Path = typer.Argument(
        ..., help="A model folder (with DATA), or a workspace: its current model and cases."
    ),
    data: Path | None = typer.Argument(None, help="Labelled CT to tune on (with a model folder)."),
    out: Path | None = typer.Option(
        None, "--out", help="Child model folder (needed with MODEL DATA; workspace: models/<id>)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Online PPO updates (200)."),
    sync_every: int | None = typer.Option(None, "--sync-every", help="old <- new every N (10)."),
    kappa: float | None = typer.Option(None, "--kappa", help="Penalty kappa|D_new-D_old| (0.5)."),
    clip: float | None = typer.Option(None, "--clip", help="PPO ratio clip epsilon (0.2)."),
    replay_size: int | None = typer.Option(None, "--replay-size", help="Replay pool size (256)."),
    replay_updates: int | None = typer.Option(
        None, "--replay-updates", help="Offline updates from the pool per step (1)."
    ),
    samples_per_image: int | None = typer.Option(
        None, "--samples-per-image", help="Masks sampled per image and copy (2)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (1e-5)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per update (4)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of split and sampling (0)."),
    baseline: str | None = typer.Option(
        None, "--baseline", help="Advantage baseline: greedy (DESIGN) or mean (other samples)."
    ),
    eval_every: int = typer.Option(
        0, "--eval-every", help="Log validation Dice every N steps (0: start and end)."
    ),
    skip_units_check: bool = _SKIP_UNITS_TRAIN,
) -> None:
    """S104: PPO-style RL fine-tuning against Dice rewards; writes a child model."""
    import dataclasses

    from vetseg.config import RLConfig
    from vetseg.errors import InputError
    from vetseg.training.rl import check_rl_config, rl_tune
    from vetseg.workflow.rl_round import rl_tune_workspace

    options = {
        "steps": steps,
        "sync_every": sync_every,
        "kappa": kappa,
        "clip": clip,
        "replay_size": replay_size,
        "replay_updates": replay_updates,
        "samples_per_image": samples_per_image,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "baseline": baseline,
    }
    cfg = dataclasses.replace(RLConfig(), **{k: v for k, v in options.items() if v is not None})
    check_rl_config(cfg)
    if (target / "vetseg.toml").is_file():
        if data is not None:
            raise InputError(f"{target} is a workspace: give no DATA, its cases are used.")
        info, promoted = rl_tune_workspace(
            target, cfg, out=out, eval_every=eval_every, check_units=not skip_units_check
        )
        where = out or target / "models" / info.model_id
        status = "now the current model" if promoted else "kept, not promoted (no gain)"
    else:
        if data is None or out is None:
            raise InputError(
                f"{target} is not a workspace: give a model folder, DATA and --out DIR."
            )
        info = rl_tune(
            target, data, out, cfg, eval_every=eval_every, check_units=not skip_units_check
        )
        where, status = out, f"parent {info.parent}"
    metrics = info.metrics
    before, after = metrics.get("parent_val_mean_dice"), metrics.get("val_mean_dice")
    print(
        f"model {info.model_id} written to {where} ({status}): validation mean Dice "
        f"{before if before is None else round(before, 3)} -> "
        f"{after if after is None else round(after, 3)}"
        + (f" (trained on {info.data_note})" if info.data_note else "")
    )


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)``."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: give I/N, e.g. 0/4 (shard 0 of 4).") from None
    return index, count


# --------------------------------------------------------------------------- workspace (S102, S103)
def _parse_window(text: str | None) -> tuple[float, float] | None:
    """``"LOW,HIGH"`` -> ``(LOW, HIGH)``."""
    if text is None:
        return None
    from vetseg.errors import InputError

    parts = [p.strip() for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"--window {text!r}: give two numbers as LOW,HIGH (e.g. 0,255).") from None
    return low, high


@app.command("init")
@user_errors
def init_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder to create."),
    species: str = typer.Option(..., "--species", help="rabbit, mouse, dog, mouse_head, ..."),
    organs: str | None = typer.Option(
        None, "--organs", help="Comma-separated organs (default: the species' organ list)."
    ),
    window: str | None = typer.Option(
        None, "--window", help="Intensity window LOW,HIGH (default -1000,1000 HU; 0,255 for 8-bit)."
    ),
    synthetic: bool = typer.Option(False, "--synthetic", help="The scans are synthetic."),
    seed: int = typer.Option(0, "--seed", help="Seed of random selection and refine rounds."),
    spacing: str | None = typer.Option(
        None,
        "--spacing",
        help="Pixel spacing (mm) of this workspace's models, or 'species' (the human 1.5 mm x"
        " the species' body scale); default: not fixed.",
    ),
) -> None:
    """Create a workspace for the pre-label / correct / retrain loop."""
    from vetseg.species import species_spacing
    from vetseg.workflow.workspace import Workspace, WorkspaceSettings, default_organs

    spacing_mm: float | None = None
    if spacing is not None:
        if spacing.strip().lower() == "species":
            spacing_mm = species_spacing(species)
        else:
            try:
                spacing_mm = float(spacing)
            except ValueError:
                raise InputError(
                    f"--spacing {spacing!r}: give mm per pixel or 'species'."
                ) from None

    organ_list = (
        tuple(o.strip() for o in organs.split(",") if o.strip())
        if organs
        else default_organs(species)
    )
    settings = WorkspaceSettings(
        species=species,
        organs=organ_list,
        window=_parse_window(window) or (-1000.0, 1000.0),
        spacing=spacing_mm,
        synthetic=synthetic,
        seed=seed,
    )
    with Workspace.create(workspace, settings) as ws:
        scale = f", models at {spacing_mm:g} mm per pixel" if spacing_mm else ""
        print(
            f"workspace {ws.root}: {species}, organs {', '.join(organ_list)} "
            f"(ids 1..{len(organ_list)}), window {list(settings.window)}{scale}"
        )


@app.command("add")
@user_errors
def add_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
    scans: list[Path] = typer.Argument(..., help="Scans: NIfTI, NRRD, MHA or DICOM folders."),
    labels: list[Path] | None = typer.Option(
        None, "--labels", help="A label map per scan, in order (repeat --labels for each)."
    ),
    mapping: str = typer.Option(
        "vetseg", "--mapping", help="Label ids: vetseg, mouse_head, totalseg or a JSON file."
    ),
    orientation: str | None = _ORIENTATION,
) -> None:
    """Register scans (and their labels, for labelled cases) in a workspace.

    --orientation is recorded per case: pre-labels and refine rounds use it.
    """
    from vetseg.workflow.register import add_scans
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(workspace) as ws, ws.changing():
        result = add_scans(ws, scans, labels or None, mapping, orientation=orientation)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    kind = "labelled" if labels else "unlabelled"
    print(f"added {len(result.added)} {kind} case(s): {', '.join(result.added) or 'none'}")
    if result.already:
        print(f"already registered: {', '.join(result.already)}")


@app.command("use")
@user_errors
def use_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
    model: str = typer.Argument(..., help="A model folder (e.g. a transfer result) or model id."),
) -> None:
    """Import a trained model into the workspace and make it the current one."""
    from vetseg.workflow.register import use_model
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(workspace) as ws, ws.changing():
        model_id = use_model(ws, model)
    print(f"current model: {model_id}")


@app.command("prelabel")
@user_errors
def prelabel_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
    cases: int | None = typer.Option(None, "--cases", min=1, help="How many (default: all)."),
    strategy: str = typer.Option(
        "uncertainty", "--strategy", help="uncertainty (most uncertain first) or random."
    ),
    refresh: bool = typer.Option(
        False, "--refresh", help="Also redo pre-labels an older model drafted."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Slices per forward pass."),
    no_postprocess: bool = typer.Option(
        False, "--no-postprocess", help="Drafts as the model gave them (no cleaning rules)."
    ),
) -> None:
    """S102: draft labels for unlabelled cases with the current model (review/<case>/)."""
    from vetseg.workflow.prelabel import prelabel
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(workspace) as ws:
        result = prelabel(
            ws,
            cases,
            strategy,
            refresh=refresh,
            batch_size=batch_size,
            postprocess=not no_postprocess,
            on_case=lambda c: print(f"  {c}", file=sys.stderr),
        )
    if result.run is None:
        print("nothing to pre-label: no unlabelled case left")
        return
    if result.resumed:
        print(f"finished interrupted pre-label run {result.run}")
    print(
        f"pre-labelled {len(result.items)} case(s) with {result.model_id} "
        f"({result.strategy}, {result.candidates} candidate(s)); review queue:"
    )
    for item in result.items:
        print(
            f"  {item.rank + 1:>3}. {item.case_id:<24} uncertainty {item.uncertainty:.3f}  "
            f"{workspace / 'review' / item.case_id / 'prelabel.nii.gz'}"
        )
    for item in result.items:
        if item.warning:
            print(f"warning: {item.warning}", file=sys.stderr)
    for case_id, why in result.skipped:
        print(f"skipped {case_id} (no draft written): {why}", file=sys.stderr)


@app.command("correct")
@user_errors
def correct_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
    case: str = typer.Argument(..., help="The case id."),
    file: Path = typer.Argument(..., help="The corrected label (NIfTI, NRRD, .seg.nrrd)."),
    mapping: str = typer.Option(
        "vetseg", "--mapping", help="Label ids without segment names: vetseg or a JSON file."
    ),
) -> None:
    """Import a vet's corrected label as a new version (nothing is ever overwritten)."""
    from vetseg.workflow.correct import correct
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(workspace) as ws:
        result = correct(ws, case, file, mapping)
    r = result.record
    if not result.new:
        print(f"{case}: identical to version {r.version} ({r.path}); nothing new recorded")
        return
    print(
        f"{case}: version {r.version} stored as {r.path}; the vet changed {r.changed_voxels} "
        f"voxels for {r.drawn_voxels} organ voxels: effort {r.effort:.3f} of drawing from nothing"
    )


@app.command("review")
@user_errors
def review_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
    port: int = typer.Option(8765, "--port", help="Port to listen on (0: any free port)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; e.g. 0.0.0.0 to share on a network."
    ),
) -> None:
    """Review and correct pre-labels in the browser; prints the link (with its access token)."""
    import uvicorn

    from vetseg.server.app import create_app, new_token

    token = new_token()
    web_app = create_app(workspace, token)
    config = uvicorn.Config(web_app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)

    def announce() -> None:
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        shown = "127.0.0.1" if host in ("127.0.0.1", "localhost") else host
        print(f"vetseg review: open http://{shown}:{bound}/?token={token}", flush=True)
        print("(the token is the key to this workspace; Ctrl+C stops the server)", flush=True)

    original = server.startup

    async def startup(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        announce()

    server.startup = startup  # type: ignore[method-assign]
    server.run()


@app.command("status")
@user_errors
def status_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON."),
) -> None:
    """The review queue, correction versions and effort, models and rounds."""
    from vetseg.workflow.status import print_status, status_report
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(workspace) as ws:
        report = status_report(ws)
    print_status(report)
    if json_out is not None:
        from vetseg.fileutil import atomic_write_json

        atomic_write_json(json_out, report)


@app.command("check")
@user_errors
def check_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
) -> None:
    """Check a workspace is whole: every file the database names present and unchanged.

    Also: every corrected version present, no temporary files of interrupted writes, the
    database intact. Exit code 0: sound; 1: problems, listed one per line.
    """
    from vetseg.workflow.check import check_workspace
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(workspace) as ws, ws.inspecting():
        report = check_workspace(ws)
    if report.sound:
        print(
            f"workspace {workspace} is sound: {report.files_checked} files present, "
            f"{report.checksums_compared} checksums match"
        )
        return
    print(f"workspace {workspace}: {len(report.problems)} problem(s)", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    raise typer.Exit(code=1)


@app.command("refine")
@user_errors
def refine_cmd(
    workspace: Path = typer.Argument(..., help="A workspace folder."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs in total (30)."),
    freeze_epochs: int | None = typer.Option(
        None, "--freeze-epochs", help="First epochs with the body frozen (20)."
    ),
    extend: int | None = typer.Option(
        None, "--extend", help="Extension epochs when best Dice < threshold (5)."
    ),
    threshold: float | None = _THRESHOLD,
    lr: float | None = _LR,
    batch_size: int | None = _BATCH,
    steps_per_epoch: int | None = _STEPS,
    seed: int | None = _SEED,
    no_augment: bool = _NO_AUG,
    skip_units_check: bool = _SKIP_UNITS_TRAIN,
) -> None:
    """S103: retrain from the current model on labelled + corrected cases; promote if better."""
    from vetseg.config import AugmentConfig
    from vetseg.workflow.rounds import refine_round
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(workspace) as ws:
        config = ws.settings.refine_config(
            epochs=epochs,
            freeze_epochs=freeze_epochs,
            extend=extend,
            threshold=threshold,
            lr=lr,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            seed=seed,
        )
        if no_augment:
            import dataclasses

            config = dataclasses.replace(config, augment=AugmentConfig(enabled=False))
        result = refine_round(ws, config, check_units=not skip_units_check)
    if result.resumed:
        print(f"finished interrupted round {result.round}")
    print(result.message)


def main() -> None:
    """Console-script entry point (also ``python -m vetseg`` and ``torchrun -m vetseg``)."""
    try:
        app()
    finally:
        # A torchrun process leaves its process group; torch is imported only if it joined one.
        distributed = sys.modules.get("vetseg.training.distributed")
        if distributed is not None:
            distributed.shutdown()


if __name__ == "__main__":
    main()
