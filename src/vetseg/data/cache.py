"""The slice cache: every labelled case of a dataset once on the model grid, memory-mappable.

Decoding a compressed NIfTI scan and resampling it costs seconds per case; a training run over
the public TotalSegmentator dataset (1,204 scans) would pay that on every start, in every
process, and hold every case in memory. ``vetseg prepare DATA --out CACHE`` pays it once:

``CACHE/cache.json``
    format, settings (pixel spacing, CT window, canonical orientation, organs, the dataset's
    ``--orientation``), the source dataset (root, layout, species, synthetic, real cases) and
    one record per case (content digest, slices, model-grid shape, canonical spacing, source
    file fingerprint); ``"complete": false`` until every case is written.
``CACHE/cases/<case>/``
    ``image.npy`` float32 ``[z, H, W]``: window-clipped HU on the model grid
    (:func:`~vetseg.data.preprocess.clipped_on_model_grid`); ``labels.npy`` uint8 ``[z, H, W]``
    (vetseg ids); ``presence.npy`` bool ``[z, n_organs]``; ``foreground.npy``: the organ voxel
    sample the intensity statistics pool (:func:`~vetseg.data.preprocess.foreground_sample`);
    ``case.json``: the case's record, written last (a case without it is not done).

The model's intensity statistics are applied when a slice is read, so one cache serves any
split and seed, and a cached slice is bitwise the slice :class:`~vetseg.data.slices.SliceDataset`
makes from the decoded scan. Every file is written atomically; a killed ``prepare`` resumes
where it stopped, redoing only cases whose files are missing or whose source files changed
(size or modification time). A cache is refused, with the differing settings named, by a run
whose settings differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.config import PreprocessConfig
from vetseg.data.datasets import Case, CaseDataset
from vetseg.errors import InputError
from vetseg.fileutil import atomic_path, atomic_write_json

CACHE_JSON = "cache.json"
#: Bumped when the files' meaning changes; an older cache is then refused.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class CacheSettings:
    """What a cache's arrays depend on: a run with other values cannot use it.

    Attributes:
        spacing: the model's in-plane pixel spacing in mm.
        window: CT window ``(low, high)`` in HU.
        orientation: canonical orientation the scans are turned to (``PreprocessConfig``).
        organs: the organ vocabulary (label id ``i + 1`` is ``organs[i]``).
        data_orientation: ``--orientation`` given for the dataset's scans, or None (headers).
    """

    spacing: float
    window: tuple[float, float]
    orientation: str
    organs: tuple[str, ...]
    data_orientation: str | None = None

    @classmethod
    def of(
        cls, preprocess: PreprocessConfig, organs: Sequence[str], data_orientation: str | None
    ) -> CacheSettings:
        """The settings a run with ``preprocess`` and ``organs`` needs."""
        if preprocess.spacing is None:
            raise InputError(
                "a slice cache needs a model with a pixel spacing (a legacy model has none)."
            )
        return cls(
            float(preprocess.spacing),
            (float(preprocess.window[0]), float(preprocess.window[1])),
            preprocess.orientation,
            tuple(organs),
            data_orientation,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "spacing": self.spacing,
            "window": list(self.window),
            "orientation": self.orientation,
            "organs": list(self.organs),
            "data_orientation": self.data_orientation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheSettings:
        return cls(
            float(data["spacing"]),
            (float(data["window"][0]), float(data["window"][1])),
            str(data["orientation"]),
            tuple(data["organs"]),
            data.get("data_orientation"),
        )

    def differences(self, wanted: CacheSettings) -> list[str]:
        """``"spacing 2 mm (this run: 1.5 mm)"`` for every setting that differs from ``wanted``."""
        out = []
        if self.spacing != wanted.spacing:
            out.append(f"spacing {self.spacing:g} mm (this run: {wanted.spacing:g} mm)")
        if self.window != wanted.window:
            out.append(f"window {_window(self.window)} (this run: {_window(wanted.window)})")
        if self.orientation != wanted.orientation:
            out.append(f"orientation {self.orientation} (this run: {wanted.orientation})")
        if self.organs != wanted.organs:
            out.append(f"organs {','.join(self.organs)} (this run: {','.join(wanted.organs)})")
        if self.data_orientation != wanted.data_orientation:
            out.append(
                f"--orientation {self.data_orientation or 'from headers'}"
                f" (this run: {wanted.data_orientation or 'from headers'})"
            )
        return out


def _window(window: tuple[float, float]) -> str:
    return f"{window[0]:g}..{window[1]:g} HU"


@dataclass(frozen=True)
class CachedCase:
    """One case of a cache, not decoded: what splitting and model records need of it.

    Attributes:
        case_id: the case's name.
        digest: content digest of its canonical image (:mod:`vetseg.data.identity`).
        slices: axial slices.
        shape: ``(H, W)`` of its slices on the model grid.
        spacing: canonical voxel size ``(x, y, z)`` in mm.
        lowest: the smallest value of its image before the window (the units check of
            :mod:`vetseg.io.units`); None in a cache written before it was recorded.
    """

    case_id: str
    digest: str
    slices: int
    shape: tuple[int, int]
    spacing: tuple[float, float, float]
    lowest: float | None = None


class LazyArray:
    """A cached ``.npy`` file, memory-mapped on first use in each process.

    Pickling keeps only the path, so DataLoader workers (any start method) and copies of a
    dataset open their own map instead of copying the data.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.array[key]

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}


def is_cache(path: Path) -> bool:
    """True when ``path`` is a slice cache folder (it holds ``cache.json``)."""
    return (Path(path) / CACHE_JSON).is_file()


class SliceCache:
    """A finished slice cache, opened for reading (:meth:`open`)."""

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root = Path(root)
        self.settings = CacheSettings.from_json(data["settings"])
        self.source: dict[str, Any] = data["dataset"]
        self.cases: dict[str, CachedCase] = {
            record["case_id"]: _cached_case(record) for record in data["cases"]
        }
        self._fingerprints = {r["case_id"]: r["fingerprint"] for r in data["cases"]}

    @classmethod
    def open(cls, root: Path) -> SliceCache:
        """Open a cache folder.

        Raises:
            InputError: not a cache, a cache of another format, or an unfinished one.
        """
        root = Path(root)
        path = root / CACHE_JSON
        if not path.is_file():
            raise InputError(
                f"{root}: not a slice cache (no {CACHE_JSON}); make one with vetseg prepare."
            )
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT:
            raise InputError(
                f"{root}: slice cache format {data.get('format')}, this vetseg reads"
                f" {CACHE_FORMAT}: prepare it again."
            )
        if not data.get("complete"):
            done = sum((root / "cases" / cid / "case.json").is_file() for cid in data["planned"])
            raise InputError(
                f"{root} is an unfinished slice cache ({done} of {len(data['planned'])} cases):"
                " run vetseg prepare again to finish it."
            )
        return cls(root, data)

    def check(self, wanted: CacheSettings) -> None:
        """Refuse a run whose settings differ from the cache's, naming every difference.

        Raises:
            InputError: one sentence.
        """
        differences = self.settings.differences(wanted)
        if differences:
            raise InputError(
                f"slice cache {self.root} was prepared with other settings: "
                + "; ".join(differences)
                + ": make one with this run's settings (vetseg prepare DATA --out NEW_CACHE)."
            )

    def check_source(self, dataset: CaseDataset) -> None:
        """Refuse a cache that no longer matches the dataset's labelled cases and files.

        Raises:
            InputError: one sentence naming the first cases that differ.
        """
        current = {case.case_id: _fingerprint(case) for case in _labelled(dataset)}
        changed = sorted(
            cid
            for cid in set(current) | set(self.cases)
            if current.get(cid) != self._fingerprints.get(cid)
        )
        if changed:
            raise InputError(
                f"slice cache {self.root} does not match {dataset.root}: case(s)"
                f" {', '.join(changed[:5])} were added, removed or changed since it was"
                " prepared: run vetseg prepare again on the same --out (it redoes only those)."
            )

    def dataset(self) -> CaseDataset:
        """The source dataset as the cache recorded it (no file of it is read)."""
        root = Path(self.source["root"])
        cases = tuple(Case(cid, root / cid, None) for cid in self.cases)
        return CaseDataset(
            root=root,
            layout=str(self.source["layout"]),
            cases=cases,
            organs=self.settings.organs,
            mapping={},
            synthetic=bool(self.source["synthetic"]),
            species=self.source.get("species"),
            orientation=self.settings.data_orientation,
            real_cases=tuple(self.source.get("real_cases", ())),
        )

    def _file(self, case_id: str, name: str) -> Path:
        if case_id not in self.cases:
            raise InputError(f"slice cache {self.root} has no case {case_id!r}.")
        return self.root / "cases" / case_id / name

    def images(self, case_id: str) -> LazyArray:
        """Window-clipped HU ``[z, H, W]`` on the model grid (memory-mapped)."""
        return LazyArray(self._file(case_id, "image.npy"))

    def labels(self, case_id: str) -> LazyArray:
        """vetseg label ids ``[z, H, W]`` on the model grid (memory-mapped)."""
        return LazyArray(self._file(case_id, "labels.npy"))

    def presence(self, case_id: str) -> np.ndarray:
        """bool ``[z, n_organs]``: which organs each slice shows on the model grid."""
        return np.load(self._file(case_id, "presence.npy"))

    def foreground(self, case_id: str) -> np.ndarray:
        """The case's organ voxel sample for the intensity statistics."""
        return np.load(self._file(case_id, "foreground.npy"))


def _cached_case(record: dict[str, Any]) -> CachedCase:
    return CachedCase(
        record["case_id"],
        record["digest"],
        int(record["slices"]),
        (int(record["shape"][0]), int(record["shape"][1])),
        tuple(float(s) for s in record["spacing"]),  # type: ignore[arg-type]
        None if record.get("lowest") is None else float(record["lowest"]),
    )


# --------------------------------------------------------------------------- writing
def _labelled(dataset: CaseDataset) -> list[Case]:
    return [c for c in dataset.cases if c.label is not None or c.label_dir is not None]


def _fingerprint(case: Case) -> str:
    """Size and modification time of every file of a case: a cheap "has it changed" test."""
    files = [case.image]
    if case.label is not None:
        files.append(case.label)
    if case.label_dir is not None:
        files.extend(sorted(case.label_dir.glob("*.nii.gz")))
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))
            handle.flush()
            os.fsync(handle.fileno())


def prepare_case(
    dataset: CaseDataset, case: Case, settings: CacheSettings, folder: Path
) -> dict[str, Any]:
    """Write one case's cache files into ``folder`` (``case.json`` last); return its record."""
    import torch

    from vetseg.data.datasets import load_case
    from vetseg.data.preprocess import (
        clipped_on_model_grid,
        foreground_sample,
        inplane_offset,
        inplane_spacing,
        labels_to_model_grid,
    )
    from vetseg.io.units import lowest_value

    torch.set_num_threads(1)  # parallel over cases, not inside one
    fingerprint = _fingerprint(case)
    loaded = load_case(dataset, case, settings.orientation)
    assert loaded.labels is not None
    preprocess = PreprocessConfig(
        window=settings.window, orientation=settings.orientation, spacing=settings.spacing
    )
    meta = loaded.canonical_meta
    image, grid = clipped_on_model_grid(
        loaded.image, inplane_spacing(meta.spacing), preprocess, inplane_offset(meta)
    )
    labels = labels_to_model_grid(loaded.labels, grid)
    organ_ids = np.arange(1, len(settings.organs) + 1, dtype=np.uint8)
    presence = (labels[:, None] == organ_ids[None, :, None, None]).any(axis=(2, 3))
    _save_npy(folder / "image.npy", image)
    _save_npy(folder / "labels.npy", labels.astype(np.uint8))
    _save_npy(folder / "presence.npy", presence)
    _save_npy(folder / "foreground.npy", foreground_sample(loaded.image, loaded.labels))
    record = {
        "case_id": case.case_id,
        "digest": loaded.digest,
        "slices": int(image.shape[0]),
        "shape": [int(image.shape[1]), int(image.shape[2])],
        "spacing": [float(s) for s in meta.spacing],
        "lowest": lowest_value(loaded.image),
        "fingerprint": fingerprint,
        "settings": settings.to_json(),
    }
    atomic_write_json(folder / "case.json", record)
    return record


def _done_record(folder: Path, case: Case, settings: CacheSettings) -> dict[str, Any] | None:
    """The record of a case already cached from the same files and settings, else None."""
    path = folder / "case.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    same = record.get("fingerprint") == _fingerprint(case) and (
        record.get("settings") == settings.to_json()
    )
    return record if same else None


def prepare_cache(
    data: Path,
    out: Path,
    settings: CacheSettings,
    *,
    workers: int = 1,
    on_start: Callable[[int, int], None] | None = None,
    on_case: Callable[[str], None] | None = None,
) -> SliceCache:
    """Write (or finish) the slice cache of a dataset's labelled cases.

    Args:
        data: a dataset folder (MSD, TotalSegmentator or pairs layout).
        out: the cache folder.
        settings: spacing, window, orientations and organs of the model grid.
        workers: processes decoding cases in parallel (1: in this process).
        on_start: called once with ``(cases to do, cases in all)``.
        on_case: called with each case id as it is finished.

    Returns:
        The finished cache.

    Raises:
        InputError: no labelled case, or ``out`` is a cache made with other settings.
    """
    from vetseg.data.datasets import open_dataset

    dataset = open_dataset(
        Path(data), organs=settings.organs, orientation=settings.data_orientation
    )
    cases = _labelled(dataset)
    if not cases:
        raise InputError(f"{dataset.root}: no labelled case to prepare.")
    out = Path(out)
    index_path = out / CACHE_JSON
    if index_path.is_file():
        previous = json.loads(index_path.read_text())
        old = CacheSettings.from_json(previous["settings"])
        differences = old.differences(settings)
        if differences or previous.get("format") != CACHE_FORMAT:
            raise InputError(
                f"{out} is a slice cache made with other settings ("
                + ("; ".join(differences) or f"format {previous.get('format')}")
                + "): give another --out, or remove it first."
            )
    index: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "complete": False,
        "settings": settings.to_json(),
        "dataset": {
            "root": str(dataset.root.resolve()),
            "layout": dataset.layout,
            "species": dataset.species,
            "synthetic": dataset.synthetic,
            "real_cases": list(dataset.real_cases),
        },
        "planned": [case.case_id for case in cases],
    }
    atomic_write_json(index_path, index)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for case in cases:
        done = _done_record(out / "cases" / case.case_id, case, settings)
        if done is None:
            todo.append(case)
        else:
            records[case.case_id] = done
    if on_start is not None:
        on_start(len(todo), len(cases))
    if workers <= 1 or len(todo) <= 1:
        for case in todo:
            records[case.case_id] = prepare_case(
                dataset, case, settings, out / "cases" / case.case_id
            )
            if on_case is not None:
                on_case(case.case_id)
    else:
        # spawn: a forked child of a process that already ran torch's thread pool can hang.
        context = get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(
                    prepare_case, dataset, case, settings, out / "cases" / case.case_id
                ): case.case_id
                for case in todo
            }
            for future in as_completed(futures):
                case_id = futures[future]
                records[case_id] = future.result()
                if on_case is not None:
                    on_case(case_id)
    index["complete"] = True
    index["cases"] = [records[case.case_id] for case in cases]
    atomic_write_json(index_path, index)
    return SliceCache(out, index)


__all__ = [
    "CacheSettings",
    "CachedCase",
    "LazyArray",
    "SliceCache",
    "is_cache",
    "prepare_cache",
]
