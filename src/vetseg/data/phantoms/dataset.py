"""Phantom datasets on disk: the MSD / nnU-Net v2 layout, written all-or-nothing."""

from __future__ import annotations

import os
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from vetseg.data.phantoms.phantom import (
    Phantom,
    check_species,
    check_variety,
    is_wide,
    make_phantom,
    wide_level,
)
from vetseg.errors import InputError
from vetseg.fileutil import atomic_write_json
from vetseg.io.image import ImageMeta, write_image
from vetseg.labels import CORE_ORGANS, HUMAN_ORGANS


def phantom_meta(phantom: Phantom) -> ImageMeta:
    """The geometry of a phantom: its spacing and origin, identity direction (LPS)."""
    return ImageMeta(spacing=phantom.spacing, origin=phantom.origin)


def check_new_dataset_folder(out: Path) -> None:
    """Refuse an output folder that exists and is not empty (never mix or overwrite datasets).

    Raises:
        InputError: ``out`` is a file, or a folder that holds anything.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"Cannot write a dataset to {out}: it already exists and is not empty; choose a "
            "new folder."
        )


def write_msd_dataset(
    out: Path,
    cases: Iterable[tuple[str, np.ndarray, np.ndarray, ImageMeta]],
    organs: Sequence[str],
    info: Mapping[str, object],
) -> list[Path]:
    """Write cases in the MSD / nnU-Net v2 layout, all-or-nothing.

    Everything is written into a hidden staging folder beside ``out`` and moved into place at
    the end, so an interrupted run leaves no half dataset behind (``out`` must be new or empty).

    Args:
        out: dataset folder: ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``,
            ``dataset.json``.
        cases: ``(case id, ct [z, y, x], labels [z, y, x], meta)`` per case.
        organs: label vocabulary (ids ``1..len(organs)``).
        info: extra ``dataset.json`` fields (``species``, ``synthetic``, ``description``...).

    Returns:
        The label files written, one per case, in order.
    """
    check_new_dataset_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    names = {i + 1: name for i, name in enumerate(organs)}
    case_ids: list[str] = []
    try:
        for case_id, ct, labels, meta in cases:
            write_image(ct, meta, staging / "imagesTr" / f"{case_id}_0000.nii.gz")
            write_image(
                labels, meta, staging / "labelsTr" / f"{case_id}.nii.gz", segment_names=names
            )
            case_ids.append(case_id)
        dataset = {
            "name": out.name,
            **info,
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **{name: i for i, name in names.items()}},
            "numTraining": len(case_ids),
            "file_ending": ".nii.gz",
            "training": [
                {"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                for c in case_ids
            ],
        }
        atomic_write_json(staging / "dataset.json", dataset)
        check_new_dataset_folder(out)
        if out.exists():
            out.rmdir()  # empty, checked just above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / "labelsTr" / f"{c}.nii.gz" for c in case_ids]


def write_phantom_dataset(
    out: Path,
    species: str,
    cases: int,
    seed: int,
    contrast: bool = True,
    variety: str = "default",
    workers: int = 1,
) -> list[Path]:
    """Write ``cases`` synthetic CT phantoms of ``species`` as an MSD / nnU-Net v2 dataset.

    Case ``k`` is drawn from ``np.random.default_rng([seed, k])``: the same seed gives the same
    cases, whatever ``workers``, and a larger ``cases`` only adds cases. ``dataset.json`` says
    ``"synthetic": true``.

    Args:
        out: the dataset folder (created; it must not exist or be empty).
        species: ``"human"`` or ``"rabbit"``.
        cases: number of cases (case ids ``<species>_000``, ``<species>_001``, ...).
        seed: random seed.
        contrast: contrast-enhanced tissue values, else non-contrast (with wide variety: True
            draws each case's phase, non-contrast included; False keeps all non-contrast).
        variety: ``"default"`` (7 organs, the demo's phantoms), ``"wide"`` (human only:
            phases, scanners, habitus, arms, table, metal, 12 organs of ``HUMAN_ORGANS``; what
            each case drew is in ``dataset.json`` under ``"cases"``), ``"wide-kidneys"``
            (wide, and kidneys as real contrast scans show them) or ``"wide-ribs"``
            (wide-kidneys, and ribs as real CT shows them, costal cartilage included) or
            ``"wide-stomach"`` (wide-ribs, and half the stomachs collapsed around food).
        workers: processes that draw cases in parallel (files are written by this one).

    Returns:
        The label files (``labelsTr/<case>.nii.gz``), one per case.

    Raises:
        InputError: unknown species or variety, fewer than one case, or ``out`` exists and is
            not empty.
    """
    out = Path(out)
    check_species(species)
    check_variety(species, variety)
    if cases < 1:
        raise InputError(f"Cannot write {out}: the number of cases must be at least 1.")
    if workers < 1:
        raise InputError(f"Cannot write {out}: the number of workers must be at least 1.")
    check_new_dataset_folder(out)

    setups: dict[str, Mapping[str, object]] = {}

    def generate() -> Iterator[tuple[str, np.ndarray, np.ndarray, ImageMeta]]:
        draws = (partial(_draw_case, species, seed, k, contrast, variety) for k in range(cases))
        for k, phantom in enumerate(_in_order(draws, workers)):
            case_id = f"{species}_{k:03d}"
            if phantom.setup:
                setups[case_id] = dict(phantom.setup)
            yield case_id, phantom.ct, phantom.labels, phantom_meta(phantom)

    if is_wide(variety):
        phase = (
            "phases drawn per case (non-contrast, arterial, portal venous, delayed)"
            if contrast
            else "non-contrast"
        )
        what = f"{phase}, scanners, body habitus, arms, table and metal varied per case"
        level = wide_level(variety)
        if level >= 1:
            what += ", kidneys as real contrast scans show them"
        if level >= 2:
            what += ", ribs as real CT shows them (thin cortex, tapering, costal cartilage)"
        if level >= 3:
            what += ", half the stomachs collapsed around food with a thick rugal wall"
    else:
        what = ("contrast-enhanced (portal venous)" if contrast else "non-contrast") + " HU values"
    info: dict[str, object] = {
        "description": (
            f"SYNTHETIC {species} torso CT phantoms drawn by vetseg (not real scans; they prove "
            f"nothing about real animals), {what}, seed {seed}."
        ),
        "species": species,
        "synthetic": True,
        "contrast": contrast,
        "seed": seed,
        "generator": "vetseg.data.phantoms",
    }
    organs = HUMAN_ORGANS if is_wide(variety) else CORE_ORGANS
    if is_wide(variety):
        info["variety"] = variety
        info["cases"] = setups  # filled while the cases are written, before dataset.json
    return write_msd_dataset(out, generate(), organs, info)


def _draw_case(species: str, seed: int, k: int, contrast: bool, variety: str) -> Phantom:
    """Case ``k`` of a phantom dataset (a top-level function: worker processes pickle it)."""
    return make_phantom(species, np.random.default_rng([seed, k]), contrast, variety)


def _in_order(draws: Iterable[Callable[[], Phantom]], workers: int) -> Iterator[Phantom]:
    """Run ``draws`` and yield their results in order, on ``workers`` processes.

    At most two draws per worker are ahead of the consumer, so a slow writer never holds more
    than a few cases in memory.
    """
    if workers == 1:
        for draw in draws:
            yield draw()
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[Phantom]] = deque()
        for draw in draws:
            pending.append(pool.submit(draw))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
