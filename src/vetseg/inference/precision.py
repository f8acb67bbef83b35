"""Accuracy before speed: reduced precision (bf16) is used only where it labels like float32.

:func:`check_precision` segments check volumes with a candidate engine (OpenVINO bf16) and a
float32 reference engine (ONNX Runtime) and compares the label maps: the fraction of voxels that
get the same label, and per organ

- with reference labels (the model's validation cases, or a phantom's drawn organs): the Dice of
  each engine against them, and how far the candidate's Dice moved from the reference engine's;
- without them: the Dice between the two engines' masks (1 - Dice is the change).

The candidate is refused when any organ's Dice moves by more than :data:`MAX_DICE_CHANGE`
(0.005). Dice is pooled over all check slices (true positives, masks' sizes summed), so a small
organ that shows in a few slices counts by its voxels, not by its slice count.

Check volumes (:func:`check_volumes`), in this order:

1. the model's own validation cases: ``training.split.val`` of model.json, read from the
   dataset folder ``training.data`` when it still exists there (labels mapped to the model's
   organs by name);
2. else synthetic phantoms drawn by :func:`vetseg.data.phantoms.make_phantom` at the model's
   species (``human``; ``rabbit`` for any other species), with fixed seeds, their organs as
   reference labels for the organs the model shares with them.

At most :data:`CHECK_SLICES` slices in all, evenly spaced along each volume: the models are 2D,
so a slice is segmented the same in a subset as in the whole volume, and the check of a 512 x 512
model takes seconds rather than minutes. No post-processing: the check is of the network.

The decision is cached (:func:`cached_check`) in the model's cache folder, keyed by weights
checksum, precision, OpenVINO version and CPU, so ``--engine auto`` checks once per model and
machine, not every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vetseg.fileutil import atomic_write_json

if TYPE_CHECKING:
    from vetseg.inference.engines import Engine
    from vetseg.io.image import ImageMeta
    from vetseg.models.files import ModelInfo

#: Largest change of any organ's Dice that a reduced precision may cause.
MAX_DICE_CHANGE = 0.005
#: Slices of all check volumes together.
CHECK_SLICES = 48
#: Phantoms drawn when the model's validation cases are not on disk.
CHECK_PHANTOMS = 2
#: Seed of the check phantoms (not 0: the demo's training phantoms are drawn from seed 0).
PHANTOM_SEED = 20261204
#: File of cached decisions in a model's cache folder.
CHECKS_NAME = "precision_checks.json"
#: Version of the check's method; a change makes every cached decision stale.
CHECK_VERSION = 1


@dataclass(frozen=True)
class CheckVolume:
    """One volume of the check, in canonical orientation.

    Attributes:
        name: case id, or ``phantom-<species>-<k>``.
        image: HU ``[z, y, x]`` (a subset of the case's slices).
        meta: its geometry.
        labels: reference labels in the model's ids (``organs[i]`` -> ``i + 1``), or None.
        labelled_organs: the organs ``labels`` draws (others are judged by agreement only).
    """

    name: str
    image: np.ndarray
    meta: ImageMeta
    labels: np.ndarray | None = None
    labelled_organs: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrganCheck:
    """One organ's figures, pooled over the check volumes.

    Attributes:
        organ: its name.
        dice_reference: the reference engine's Dice against the reference labels (None: no
            labels of this organ).
        dice_candidate: the candidate's Dice against them.
        dice_agreement: Dice between the two engines' masks (None: both empty).
        dice_change: what the decision uses: ``|dice_candidate - dice_reference|`` with
            labels, else ``1 - dice_agreement`` (0 when both masks are empty).
        voxels_reference: voxels the reference engine gave this organ.
        voxels_candidate: voxels the candidate gave it.
    """

    organ: str
    dice_reference: float | None
    dice_candidate: float | None
    dice_agreement: float | None
    dice_change: float
    voxels_reference: int
    voxels_candidate: int


@dataclass
class PrecisionReport:
    """The outcome of one check.

    Attributes:
        candidate: e.g. ``"openvino bf16"``.
        reference: e.g. ``"onnx fp32"``.
        source: where the check volumes came from.
        volumes: their names.
        slices: slices segmented by each engine.
        label_agreement: fraction of voxels with the same label from both engines.
        organs: per-organ figures.
        tolerance: the largest Dice change allowed.
        passed: True when no organ's Dice moved by more than ``tolerance``.
        reason: one sentence: why it passed or was refused.
        seconds: wall time of the check.
        key: what the decision was made for (weights, precision, OpenVINO, CPU); see
            :func:`check_key`.
    """

    candidate: str
    reference: str
    source: str
    volumes: list[str]
    slices: int
    label_agreement: float
    organs: list[OrganCheck]
    tolerance: float
    passed: bool
    reason: str
    seconds: float = 0.0
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def max_dice_change(self) -> float:
        """The largest organ Dice change."""
        return max((o.dice_change for o in self.organs), default=0.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_dice_change"] = self.max_dice_change
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrecisionReport:
        fields = {k: v for k, v in data.items() if k != "max_dice_change"}
        fields["organs"] = [OrganCheck(**o) for o in data["organs"]]
        return cls(**fields)

    def summary(self) -> str:
        """One line: decision, agreement and the largest Dice change."""
        verdict = "passed" if self.passed else "REFUSED"
        return (
            f"{self.candidate} vs {self.reference}: {verdict}; labels agree on "
            f"{self.label_agreement:.4%} of voxels, largest organ Dice change "
            f"{self.max_dice_change:.4f} (limit {self.tolerance}); {self.slices} slices of "
            f"{self.source}"
        )


# --------------------------------------------------------------------------- check volumes
def _even_slices(count: int, wanted: int) -> np.ndarray:
    """Indices of ``wanted`` slices spread evenly over ``count`` (all when fewer)."""
    if wanted >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, wanted).round().astype(np.int64))


def _subset(
    name: str,
    image: np.ndarray,
    meta: ImageMeta,
    labels: np.ndarray | None,
    labelled: tuple[str, ...],
    wanted: int,
) -> CheckVolume:
    """A check volume of ``wanted`` evenly spaced slices of a canonical volume."""
    from dataclasses import replace

    index = _even_slices(image.shape[0], wanted)
    step = (image.shape[0] - 1) / max(len(index) - 1, 1)
    spacing = (meta.spacing[0], meta.spacing[1], meta.spacing[2] * max(step, 1.0))
    return CheckVolume(
        name=name,
        image=np.ascontiguousarray(image[index]),
        meta=replace(meta, spacing=spacing),
        labels=None if labels is None else np.ascontiguousarray(labels[index]),
        labelled_organs=labelled,
    )


def _validation_volumes(info: ModelInfo, slices: int) -> tuple[list[CheckVolume], str] | None:
    """The model's validation cases, when model.json names them and their files exist."""
    from vetseg.data.datasets import load_case, open_dataset
    from vetseg.errors import VetsegError

    split = info.training.get("split") or {}
    val = list(split.get("val") or []) if isinstance(split, dict) else []
    data = info.training_data
    if not val or data is None or not data.is_dir():
        return None
    try:
        dataset = open_dataset(Path(data), info.organs)
        cases = [dataset.case(case_id) for case_id in val]
        per_case = max(1, slices // len(cases))
        volumes = []
        for case in cases:
            loaded = load_case(dataset, case, info.preprocess.orientation)
            labelled = tuple(
                organ for organ in info.organs if organ in set(dataset.mapping.values())
            )
            volumes.append(
                _subset(
                    case.case_id,
                    loaded.image,
                    loaded.canonical_meta,
                    loaded.labels,
                    labelled,
                    per_case,
                )
            )
    except (VetsegError, OSError):
        return None  # moved or changed since training: fall back to phantoms
    return volumes, f"{len(volumes)} validation case(s) of {data}"


def _phantom_volumes(info: ModelInfo, slices: int) -> tuple[list[CheckVolume], str]:
    """Synthetic phantoms at the model's species, reference labels for the shared organs."""
    from vetseg.data.phantoms import make_phantom, phantom_meta
    from vetseg.io.image import to_canonical
    from vetseg.labels import CORE_ORGANS

    species = "human" if info.species in (None, "human") else "rabbit"
    # Phantom label id (CORE_ORGANS order) -> model id; organs the phantom lacks stay 0.
    lookup = np.zeros(len(CORE_ORGANS) + 1, dtype=np.uint8)
    labelled = []
    for i, organ in enumerate(info.organs):
        if organ in CORE_ORGANS:
            lookup[CORE_ORGANS.index(organ) + 1] = i + 1
            labelled.append(organ)
    volumes = []
    for k in range(CHECK_PHANTOMS):
        phantom = make_phantom(species, np.random.default_rng([PHANTOM_SEED, k]))
        meta = phantom_meta(phantom)
        image, canonical_meta = to_canonical(phantom.ct, meta, info.preprocess.orientation)
        labels, _ = to_canonical(lookup[phantom.labels], meta, info.preprocess.orientation)
        volumes.append(
            _subset(
                f"phantom-{species}-{k}",
                image,
                canonical_meta,
                labels,
                tuple(labelled),
                max(1, slices // CHECK_PHANTOMS),
            )
        )
    return volumes, f"{CHECK_PHANTOMS} synthetic {species} phantom(s)"


def check_volumes(info: ModelInfo, slices: int | None = None) -> tuple[list[CheckVolume], str]:
    """The volumes a model's precision is checked on, and where they came from (see module).

    Args:
        info: the model.
        slices: slices of all volumes together (default :data:`CHECK_SLICES`).
    """
    slices = CHECK_SLICES if slices is None else slices
    found = _validation_volumes(info, slices)
    return found if found is not None else _phantom_volumes(info, slices)


# --------------------------------------------------------------------------- the check
def _dice(intersection: int, a: int, b: int) -> float | None:
    return None if a + b == 0 else 2.0 * intersection / (a + b)


def check_precision(
    info: ModelInfo,
    candidate: Engine,
    reference: Engine,
    volumes: Sequence[CheckVolume],
    *,
    source: str = "",
    tolerance: float = MAX_DICE_CHANGE,
    candidate_name: str | None = None,
    reference_name: str | None = None,
) -> PrecisionReport:
    """Segment ``volumes`` with both engines and decide whether the candidate may be used.

    Args:
        info: the model (organs, preprocessing).
        candidate: the reduced-precision engine.
        reference: the float32 engine.
        volumes: check volumes (:func:`check_volumes`).
        source: where the volumes came from, for the report.
        tolerance: largest organ Dice change allowed.
        candidate_name: e.g. ``"openvino bf16"`` (default: the engine's name and precision).
        reference_name: e.g. ``"onnx fp32"``.

    Returns:
        The report; ``passed`` is the decision.
    """
    from vetseg.inference.segmenter import Segmenter

    started = time.perf_counter()
    n = len(info.organs)
    shape = (n + 1,)
    intersection_ref, size_ref = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    intersection_cand, size_cand = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    intersection_both, size_truth = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    labelled: set[str] = set()
    equal = total = slices = 0
    runs = [Segmenter(None, info, engine=e) for e in (reference, candidate)]
    for volume in volumes:
        ref_labels, cand_labels = (s.predict(volume.image, volume.meta).labels for s in runs)
        equal += int(np.count_nonzero(ref_labels == cand_labels))
        total += ref_labels.size
        slices += volume.image.shape[0]
        size_ref += np.bincount(ref_labels.ravel(), minlength=n + 1)
        size_cand += np.bincount(cand_labels.ravel(), minlength=n + 1)
        same = ref_labels == cand_labels
        intersection_both += np.bincount(ref_labels[same], minlength=n + 1)
        if volume.labels is not None:
            labelled.update(volume.labelled_organs)
            truth = volume.labels
            size_truth += np.bincount(truth.ravel(), minlength=n + 1)
            intersection_ref += np.bincount(ref_labels[ref_labels == truth], minlength=n + 1)
            intersection_cand += np.bincount(cand_labels[cand_labels == truth], minlength=n + 1)
    organs = []
    for i, organ in enumerate(info.organs, start=1):
        agreement = _dice(int(intersection_both[i]), int(size_ref[i]), int(size_cand[i]))
        if organ in labelled:
            d_ref = _dice(int(intersection_ref[i]), int(size_ref[i]), int(size_truth[i]))
            d_cand = _dice(int(intersection_cand[i]), int(size_cand[i]), int(size_truth[i]))
            change = abs((d_cand or 0.0) - (d_ref or 0.0))
        else:
            d_ref = d_cand = None
            change = 0.0 if agreement is None else 1.0 - agreement
        organs.append(
            OrganCheck(
                organ=organ,
                dice_reference=d_ref,
                dice_candidate=d_cand,
                dice_agreement=agreement,
                dice_change=round(change, 6),
                voxels_reference=int(size_ref[i]),
                voxels_candidate=int(size_cand[i]),
            )
        )
    worst = max(organs, key=lambda o: o.dice_change)
    passed = worst.dice_change <= tolerance
    how = "against the reference labels" if worst.organ in labelled else "between the engines"
    reason = (
        f"{worst.organ}'s Dice {how} moved by {worst.dice_change:.4f}, "
        f"{'within' if passed else 'more than'} the limit of {tolerance}"
    )
    return PrecisionReport(
        candidate=candidate_name or _engine_label(candidate),
        reference=reference_name or _engine_label(reference),
        source=source,
        volumes=[v.name for v in volumes],
        slices=slices,
        label_agreement=equal / total if total else 1.0,
        organs=organs,
        tolerance=tolerance,
        passed=passed,
        reason=reason,
        seconds=round(time.perf_counter() - started, 2),
    )


def _engine_label(engine: Engine) -> str:
    return f"{engine.name} {getattr(engine, 'precision', 'fp32')}"


# --------------------------------------------------------------------------- cached decisions
def check_key(info: ModelInfo, precision: str, tolerance: float = MAX_DICE_CHANGE) -> dict:
    """What a cached decision must have been made for to be reused."""
    from vetseg.inference.capabilities import cpu_fingerprint, openvino_version

    return {
        "check_version": CHECK_VERSION,
        "weights_sha256": info.weights_sha256,
        "model_id": info.model_id,
        "precision": precision,
        "tolerance": tolerance,
        "openvino": openvino_version(),
        "cpu": cpu_fingerprint(),
    }


def _read_checks(path: Path) -> list[dict[str, Any]]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []  # missing or damaged: checked again, never trusted
    checks = data.get("checks") if isinstance(data, dict) else None
    return [c for c in checks if isinstance(c, dict)] if isinstance(checks, list) else []


def load_check(folder: Path | None, key: dict[str, Any]) -> PrecisionReport | None:
    """The cached report for ``key`` in ``folder``, or None."""
    if folder is None:
        return None
    for entry in _read_checks(Path(folder) / CHECKS_NAME):
        if entry.get("key") == key:
            try:
                return PrecisionReport.from_json(entry)
            except (KeyError, TypeError, ValueError):
                return None
    return None


def save_check(folder: Path | None, report: PrecisionReport) -> None:
    """Add a report to the folder's cached decisions (atomically; the last 8 kept)."""
    if folder is None:
        return
    path = Path(folder) / CHECKS_NAME
    others = [c for c in _read_checks(path) if c.get("key") != report.key]
    try:
        atomic_write_json(path, {"checks": [*others[-7:], report.to_json()]})
    except OSError:
        pass  # a read-only folder: the check runs again next time


def cached_check(
    info: ModelInfo,
    precision: str,
    folder: Path | None,
    run: Callable[[], PrecisionReport],
    *,
    tolerance: float = MAX_DICE_CHANGE,
) -> tuple[PrecisionReport, bool]:
    """The decision for ``precision``: cached if made for these weights, OpenVINO and CPU,
    else ``run()`` now and cached.

    Returns:
        ``(report, from_cache)``.
    """
    key = check_key(info, precision, tolerance)
    report = load_check(folder, key)
    if report is not None:
        return report, True
    report = run()
    report.key = key
    save_check(folder, report)
    return report, False
