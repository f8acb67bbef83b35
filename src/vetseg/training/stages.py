"""The method's stages as functions: train the human model (S100), transfer it (S101), train
the same animal architecture from scratch (the baseline), and evaluate any model on a dataset
(:func:`vetseg.training.evaluation.evaluate`, re-exported here).

Each stage writes a model folder ``OUT/`` (model.safetensors + model.json) and its training
record under ``OUT/train/`` (splits.json, config.json, metrics.jsonl, checkpoint).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vetseg.config import PreprocessConfig, StageConfig, to_dict
from vetseg.data.identity import KnownCases
from vetseg.errors import InputError
from vetseg.fileutil import atomic_write_json
from vetseg.labels import CORE_ORGANS
from vetseg.models.files import ModelInfo, load_model, new_model_id, relative_path, save_model
from vetseg.training.evaluation import evaluate
from vetseg.training.trainer import Trainer, make_validation_cases, validation_dice


@dataclass
class PreparedData:
    """A dataset opened, split by case and loaded into memory.

    Attributes:
        dataset: the opened dataset.
        splits: ``{"train": [...], "val": [...], "test": [...]}`` case ids.
        train: the loaded train cases (likewise ``val`` and ``test``).
        hashes: case id -> content digest of every split case (the case's identity elsewhere).
        cache: the slice cache the cases come from; then ``train``, ``val`` and ``test`` hold
            :class:`~vetseg.data.cache.CachedCase` records, not decoded cases.
    """

    dataset: Any
    splits: dict[str, list[str]]
    train: list[Any]
    val: list[Any]
    test: list[Any]
    hashes: dict[str, str] = field(default_factory=dict)
    cache: Any = None

    def recorded_split(self) -> dict[str, Any]:
        """The split as model.json records it: the three lists plus ``"hashes"``."""
        return {**self.splits, "hashes": dict(self.hashes)}


def prepare_data(
    data: Path | Any,
    organs: Sequence[str],
    seed: int,
    splits_path: Path,
    ratios: tuple[int, int, int] = (8, 1, 1),
    keep_in_train: Sequence[str] | KnownCases = (),
    orientation: str = "LPS",
    orientation_override: str | None = None,
    cache: Any = None,
    units_window: tuple[float, float] | None = None,
) -> PreparedData:
    """Open ``data``, split it by case (or reuse ``splits_path`` when it exists), load the cases.

    ``data`` is a dataset folder or an already opened ``CaseDataset`` (e.g. a workspace's cases).
    ``keep_in_train``: cases to keep out of val and test when enough others remain (see
    :func:`vetseg.data.datasets.split_by_case`): names, or :class:`KnownCases`, which match a
    case by its content digest whatever it is called here. ``orientation``: the model's
    canonical orientation (``PreprocessConfig.orientation``): training slices the scans as
    inference will. ``orientation_override``: where every scan's array axes point
    (``--orientation``), overriding the headers of a dataset folder.

    The split file records every case's content digest (``"hashes"``). With a ``cache``
    (:class:`~vetseg.data.cache.SliceCache`) the cases and their digests come from it and
    nothing is decoded.

    ``units_window``: the window of the model to be trained; every case must then look like its
    units (:func:`vetseg.io.units.training_units_problem`: a HU model's cases show air). None:
    not checked (``--skip-units-check``).

    Raises:
        InputError: when the dataset has no labelled case or too few for the split, or a case
            is not in the model's units.
    """
    from vetseg.data.datasets import load_case, open_dataset, read_splits, split_by_case
    from vetseg.data.datasets import write_splits as _write_splits

    if cache is not None:
        dataset = cache.dataset()
    elif hasattr(data, "cases"):
        dataset = data
    else:
        dataset = open_dataset(Path(data), organs=organs, orientation=orientation_override)
    labelled = [
        c
        for c in dataset.cases
        if c.label is not None or c.label_dir is not None or cache is not None
    ]
    if not labelled:
        raise InputError(f"{dataset.root}: no labelled case to train on.")
    by_id = {c.case_id: c for c in labelled}
    loaded: dict[str, Any] = {}

    def load(case_id: str) -> Any:
        if case_id not in loaded:
            loaded[case_id] = (
                cache.cases[case_id]
                if cache is not None
                else load_case(dataset, by_id[case_id], orientation)
            )
        return loaded[case_id]

    known = (
        keep_in_train
        if isinstance(keep_in_train, KnownCases)
        else KnownCases(names=frozenset(str(c) for c in keep_in_train))
    )
    if splits_path.is_file():
        splits = read_splits(splits_path)
    else:
        # Matching by content needs each case's digest, so the cases are loaded first (they
        # all are loaded below anyway).
        kept = [
            cid for cid in by_id if known.contains(cid, load(cid).digest if known.hashes else None)
        ]
        splits = split_by_case(list(by_id), seed=seed, ratios=ratios, keep_in_train=kept)
    missing = [cid for cid in _ids(splits) if cid not in by_id]
    if missing:
        raise InputError(
            f"{splits_path}: case(s) {', '.join(missing[:5])} are not in {dataset.root}."
        )
    parts = {name: [load(cid) for cid in splits[name]] for name in ("train", "val", "test")}
    if units_window is not None:
        _check_units(dataset.root, loaded, units_window)
    hashes = {cid: loaded[cid].digest for cid in _ids(splits)}
    if is_main_process():
        _write_splits(splits_path, splits, hashes)
    return PreparedData(dataset, splits, parts["train"], parts["val"], parts["test"], hashes, cache)


def _check_units(root: Path, loaded: dict[str, Any], window: tuple[float, float]) -> None:
    """Refuse training cases that are not in the units of a model with ``window``."""
    from vetseg.data.datasets import LoadedCase
    from vetseg.io.units import lowest_value, training_units_problem

    lowest = {
        cid: lowest_value(case.image) if isinstance(case, LoadedCase) else case.lowest
        for cid, case in loaded.items()
    }
    problem = training_units_problem(lowest, window)
    if problem is not None:
        raise InputError(f"{root}: {problem}")


def open_cache(
    data: Path,
    cache: Path | None,
    preprocess: PreprocessConfig,
    organs: Sequence[str],
    orientation_override: str | None,
) -> Any:
    """The slice cache a run reads (``cache``, or ``data`` when it is one), checked against the
    run's settings and, when ``data`` is a dataset, against its files; None without one.

    Raises:
        InputError: a cache made with other settings or from other files (one sentence).
    """
    from vetseg.data.cache import CacheSettings, SliceCache, is_cache

    data_is_cache = not hasattr(data, "cases") and is_cache(Path(data))
    if cache is None and not data_is_cache:
        return None
    opened = SliceCache.open(Path(cache) if cache is not None else Path(data))
    # Pointed at a cache alone, the cache's --orientation is the run's unless one is given.
    data_orientation = orientation_override
    if data_orientation is None and (data_is_cache or cache is not None):
        data_orientation = opened.settings.data_orientation
    opened.check(CacheSettings.of(preprocess, organs, data_orientation))
    if not data_is_cache:
        from vetseg.data.datasets import open_dataset

        opened.check_source(open_dataset(Path(data), organs=organs, orientation=data_orientation))
    return opened


def is_main_process() -> bool:
    """False in every torchrun process but rank 0 (which alone writes files)."""
    from vetseg.training.distributed import current

    return current().is_main


def _save(model: torch.nn.Module, out: Path, info: ModelInfo) -> None:
    """The model folder, written by rank 0 while the other processes wait."""
    from vetseg.training.distributed import barrier

    if is_main_process():
        save_model(model, out, info)
    barrier()


def _ids(splits: dict[str, list[str]]) -> list[str]:
    return [cid for part in splits.values() for cid in part]


def settle_preprocess(
    preprocess: PreprocessConfig, train: Sequence[Any], cache: Any = None
) -> PreprocessConfig:
    """The input definition a new model records: a model with a pixel spacing and no intensity
    statistics yet gets them from its training cases' organs (then they never change); from a
    slice cache, from the organ voxel samples it keeps (the same numbers)."""
    from vetseg.data.preprocess import foreground_sample, intensity_from_samples

    if preprocess.spacing is None or preprocess.intensity is not None:
        return preprocess
    if cache is not None:
        samples = [cache.foreground(c.case_id) for c in train]
    else:
        samples = [foreground_sample(c.image, c.labels) for c in train if c.labels is not None]
    stats = intensity_from_samples(samples, preprocess.window)
    return dataclasses.replace(preprocess, intensity=stats)


def native_spacing(cases: Sequence[Any]) -> float:
    """The median in-plane pixel size (mm) of loaded cases, rounded to 3 digits."""
    from vetseg.data.preprocess import inplane_spacing

    values = [min(inplane_spacing(c.canonical_meta.spacing)) for c in cases]
    return float(f"{float(np.median(values)):.3g}")


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["vetseg", *sys.argv[1:]])


def _fit(
    model: torch.nn.Module,
    prepared: PreparedData,
    organs: Sequence[str],
    config: StageConfig,
    out: Path,
    resume: bool,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    from vetseg.data.slices import SliceDataset

    train_dir = out / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        atomic_write_json(train_dir / "config.json", to_dict(config))
    augment = config.augment if config.augment.enabled else None
    if prepared.cache is not None:
        from vetseg.training.validation import cached_validation_cases

        train_ids = [c.case_id for c in prepared.train]
        train_set = SliceDataset.from_cache(
            prepared.cache,
            train_ids,
            organs,
            config.preprocess,
            augment=augment,
            empty_slice_rate=config.empty_slice_rate,
            seed=config.seed,
        )
        val_ids = [c.case_id for c in prepared.val]
        val_cases = cached_validation_cases(
            prepared.cache, val_ids, config.preprocess, config.val_slices
        )
    else:
        train_set = SliceDataset(
            prepared.train,
            organs,
            config.preprocess,
            augment=augment,
            empty_slice_rate=config.empty_slice_rate,
            seed=config.seed,
        )
        val_cases = make_validation_cases(prepared.val, config.preprocess, config.val_slices)
    trainer = Trainer(model, train_set, val_cases, organs, config, train_dir, progress=progress)
    result = trainer.fit(resume=resume)
    metrics = {
        "val_mean_dice": result.best_dice if np.isfinite(result.best_dice) else None,
        "val_dice": dict(zip(organs, result.best_per_organ, strict=False)),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "extended": result.extended,
    }
    training = training_record(prepared, config, train_set, out)
    return result, {"metrics": metrics, "training": training}


def training_record(
    prepared: PreparedData, config: Any, train_set: Any, out: Path | None = None
) -> dict[str, Any]:
    """What model.json records of a training run: data, split, settings, command, slices.

    ``data`` is the dataset folder relative to the model folder ``out`` (e.g.
    ``../data/rabbits``), so that the record holds no machine's absolute path and survives
    moving both together; :meth:`vetseg.models.files.ModelInfo.training_data` resolves it.
    """
    return {
        "data": relative_path(prepared.dataset.root, out),
        "split": prepared.recorded_split(),
        "config": to_dict(config),
        "command": _command_line(),
        "slices": len(train_set),
    }


def train_human(
    data: Path,
    out: Path,
    config: StageConfig,
    organs: Sequence[str] | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    orientation_override: str | None = None,
    cache: Path | None = None,
    init: Path | None = None,
    check_units: bool = True,
) -> ModelInfo:
    """S100: train ``HumanOrganNet`` on labelled human CT and save the selected epoch.

    ``organs``: the organs to train (default: the core organs, or ``init``'s).
    ``orientation_override``: ``--orientation`` for every scan of ``data``. ``cache``: a slice
    cache (``vetseg prepare``) to read the slices from instead of decoding ``data``; ``data``
    may itself be the cache. A cache made with other settings, or from files of ``data`` that
    changed since, is refused. ``init``: a human model to start from (its weights, organs and
    input definition, whole, but for an inference tile set in ``config``; a fresh optimiser):
    the new model records it as its parent. ``check_units``: refuse cases that are not in the
    model's units (a HU model's cases show air; :mod:`vetseg.io.units`).
    """
    from vetseg.models.human import HumanOrganNet

    out = Path(out)
    torch.manual_seed(config.seed)
    parent: ModelInfo | None = None
    if init is not None:
        start, parent = load_model(Path(init))
        if parent.stage != "human" or not isinstance(start, HumanOrganNet):
            raise InputError(
                f"{init}: --init needs a human model (this one is a {parent.stage} model)."
            )
        if organs is not None and tuple(organs) != parent.organs:
            raise InputError(
                f"{init}: the model's organs are {', '.join(parent.organs)}; --init keeps them "
                f"(asked for {', '.join(organs)}). Leave --organs out."
            )
        organs = parent.organs
        # A model's input definition never changes along its lineage: the parent's, whole,
        # except the inference tile when one is asked for (it does not change the weights).
        preprocess = parent.preprocess
        if config.preprocess.tile is not None:
            preprocess = dataclasses.replace(preprocess, tile=config.preprocess.tile)
        config = dataclasses.replace(config, preprocess=preprocess)
    organs = tuple(organs) if organs is not None else CORE_ORGANS
    slice_cache = open_cache(data, cache, config.preprocess, organs, orientation_override)
    prepared = prepare_data(
        data,
        organs,
        config.seed,
        out / "train" / "splits.json",
        orientation=config.preprocess.orientation,
        orientation_override=orientation_override,
        cache=slice_cache,
        units_window=config.preprocess.window if check_units else None,
    )
    if parent is None:
        config = dataclasses.replace(
            config, preprocess=settle_preprocess(config.preprocess, prepared.train, slice_cache)
        )
        model = HumanOrganNet(n_organs=len(organs), in_channels=config.preprocess.in_channels)
    else:
        model = start.train()
    _, record = _fit(model, prepared, organs, config, out, resume, progress)
    info = ModelInfo(
        model_id=new_model_id("human"),
        architecture=model.architecture(),
        organs=tuple(organs),
        preprocess=config.preprocess,
        stage="human",
        species=prepared.dataset.species or "human",
        parent=None if parent is None else parent.model_id,
        synthetic_data=bool(prepared.dataset.synthetic)
        or (parent is not None and parent.synthetic_data),
        real_data=prepared.dataset.has_real_cases,
        **record,
    )
    _save(model, out, info)
    return info


#: What :func:`transfer` trains: vetseg's method and the baselines it is measured against.
TRANSFER_METHODS: tuple[str, ...] = ("vetseg", "scratch", "naive", "peer")
#: Where a transferred model's intensity normalisation comes from (``transfer(intensity=...)``).
INTENSITY_SOURCES: tuple[str, ...] = ("human", "animal")


def transfer(
    human_model: Path,
    data: Path,
    out: Path,
    config: StageConfig,
    *,
    organs: Sequence[str] | None = None,
    spacing: float | str | None = None,
    size: int | None = None,
    species: str | None = None,
    refine_blocks: int = 2,
    expand: int = 4,
    attention: str = "scse",
    from_scratch: bool = False,
    method: str | None = None,
    intensity: str = "human",
    resume: bool = False,
    progress: bool = True,
    ratios: tuple[int, int, int] = (8, 1, 1),
    orientation_override: str | None = None,
    check_units: bool = True,
) -> ModelInfo:
    """S101: build ``AnimalOrganNet`` from a trained human model and train it on animal CT.

    ``method`` (default ``"vetseg"``) chooses what is trained, all with the same organs, pixel
    spacing, tile and training settings, so that they compare fairly:

    - ``"vetseg"``: the method: ``AnimalOrganNet.from_human`` (stem and body copied, upsampling,
      fusion, scSE-MobileNetV3 module, new head), the body frozen for ``freeze_epochs``;
    - ``"scratch"`` (also ``from_scratch=True``): the same architecture from random weights, no
      frozen epochs;
    - ``"naive"``: naive fine-tuning, ``HumanOrganNet.from_human`` (the human stem and body with
      a new head, no fusion, no scSE module), every layer trained from the first step;
    - ``"peer"``: the nnU-Net-style 2D U-Net (:class:`~vetseg.models.peer.PeerUNet`, planned
      for the tile) from random weights with nnU-Net's Dice + CE loss, no frozen epochs.

    ``refine_blocks``, ``expand`` and ``attention`` shape the scSE-MobileNetV3 module
    (``"vetseg"`` and ``"scratch"``).

    Args:
        human_model: the human model folder.
        data: labelled animal CT (a dataset folder).
        out: the animal model folder to write.
        config: training settings (``config.preprocess.window`` and ``orientation`` are used
            for a model from random weights; a transferred one keeps the human model's window
            and, by default, its intensity statistics, which its stem learned).
        organs: the organs to train (default: every organ the dataset's labels name, else the
            human model's organs). An organ the human model lacks gets trained from the animal
            labels like any other (the head is new); labelled organs left out are recorded in
            ``training.organs_not_trained``.
        spacing: the animal model's pixel spacing in mm; ``"species"``: the human model's
            spacing times the species' linear body scale (:mod:`vetseg.species`);
            ``"native"``: the median in-plane spacing of the training scans; ``"auto"`` (the
            default when the human model has a spacing): the species spacing unless it is more
            than :data:`MAX_UPSAMPLING` times finer than the scans', then the scans' (chosen on
            validation Dice, ``benchmarks/spacing_choice.py``). A legacy human model (no
            spacing) gives a legacy animal model unless a spacing is given.
        size: the tile the network sees (default: the human model's input size).
        species: the animal (default: the dataset's ``species``).
        from_scratch: the same as ``method="scratch"``.
        method: one of :data:`TRANSFER_METHODS`.
        intensity: a transferred model's intensity normalisation: ``"human"`` (the human
            model's statistics) or ``"animal"`` (recomputed from the animal training cases'
            organs, as a model from random weights always does).
        orientation_override: ``--orientation`` for every scan of ``data``.
        check_units: refuse cases that are not in the model's units (a model whose window
            reaches air, as the human model's does, needs cases that show air;
            :mod:`vetseg.io.units`).

    Raises:
        InputError: an unknown method or intensity source, ``from_scratch`` with another
            method, or cases not in the model's units.
    """
    from vetseg.data.datasets import labelled_organs
    from vetseg.labels import HUMAN_TO_ANIMAL

    if from_scratch and method not in (None, "scratch"):
        raise InputError(f"from_scratch contradicts method {method!r}.")
    method = "scratch" if from_scratch else (method or "vetseg")
    if method not in TRANSFER_METHODS:
        raise InputError(f"method {method!r}: expected one of {', '.join(TRANSFER_METHODS)}.")
    if intensity not in INTENSITY_SOURCES:
        raise InputError(f"intensity {intensity!r}: expected 'human' or 'animal'.")
    transferred = method in ("vetseg", "naive")
    out = Path(out)
    human, human_info = load_model(Path(human_model))
    named = labelled_organs(Path(data))
    organs = tuple(organs) if organs else (named or human_info.organs)
    not_trained = [o for o in (named or ()) if o not in organs]
    human_counterparts = {HUMAN_TO_ANIMAL.get(o, o) for o in human_info.organs}
    new_to_human = [o for o in organs if o not in human_counterparts]
    if method != "vetseg":
        config = dataclasses.replace(config, freeze_epochs=0)
    if method == "peer":
        config = dataclasses.replace(config, loss="dice_ce")
        if config.preprocess.context_slices:
            raise InputError("the peer baseline takes one slice; context slices are not for it.")
    human_channels = human_info.preprocess.in_channels
    wanted_channels = config.preprocess.in_channels
    if transferred and human_channels not in (1, wanted_channels):
        raise InputError(
            f"{human_model} takes {human_channels} input channels; a transfer from it can keep"
            f" them or start from a one-channel human model, not make {wanted_channels}."
        )
    window = (human_info.preprocess if transferred else config.preprocess).window
    prepared = prepare_data(
        data,
        organs,
        config.seed,
        out / "train" / "splits.json",
        ratios,
        orientation=config.preprocess.orientation,
        orientation_override=orientation_override,
        units_window=window if check_units else None,
    )
    species = species or prepared.dataset.species
    resolved, rule = resolve_spacing(spacing, human_info.preprocess.spacing, species, prepared)
    base = human_info.preprocess if transferred else config.preprocess
    preprocess = dataclasses.replace(
        base,
        orientation=config.preprocess.orientation,
        size=size or human_info.preprocess.size,
        spacing=resolved,
        intensity=base.intensity if transferred and intensity == "human" else None,
        # The animal model's own choice: a one-channel human stem is widened to it.
        context_slices=config.preprocess.context_slices,
        # Its own too: the human model's inference tile and tilings were measured on human
        # scans.
        tile=config.preprocess.tile,
        tilings=config.preprocess.tilings,
    )
    if resolved is not None and preprocess.intensity is None:
        # From the animal data: a model from random weights, intensity="animal", or a legacy
        # human model without statistics.
        preprocess = settle_preprocess(preprocess, prepared.train)
    config = dataclasses.replace(config, preprocess=preprocess)
    torch.manual_seed(config.seed)
    model = _method_model(method, human, len(organs), preprocess, refine_blocks, expand, attention)
    _, record = _fit(model, prepared, organs, config, out, resume, progress)
    record["training"].update(
        method=method,
        spacing_rule=rule,
        intensity_source="human" if transferred and intensity == "human" else "animal",
        organs_new_to_human=new_to_human,
        organs_not_trained=not_trained,
    )
    stage = {"vetseg": "transfer"}.get(method, method)
    info = ModelInfo(
        model_id=new_model_id(stage),
        architecture=model.architecture(),
        organs=organs,
        preprocess=config.preprocess,
        stage=stage,
        species=species,
        parent=human_info.model_id if transferred else None,
        synthetic_data=bool(prepared.dataset.synthetic) or human_info.synthetic_data,
        real_data=prepared.dataset.has_real_cases,
        **record,
    )
    _save(model, out, info)
    return info


def _method_model(
    method: str,
    human: Any,
    n_organs: int,
    preprocess: PreprocessConfig,
    refine_blocks: int,
    expand: int,
    attention: str,
) -> torch.nn.Module:
    """The untrained network of a :func:`transfer` method (seed the RNG first)."""
    from vetseg.models.animal import AnimalOrganNet
    from vetseg.models.human import HumanOrganNet
    from vetseg.models.peer import PeerUNet

    if method == "peer":
        return PeerUNet.planned(n_organs, preprocess.size, preprocess.spacing)
    channels = preprocess.in_channels
    if method == "naive":
        return HumanOrganNet.from_human(human, n_organs, in_channels=channels)
    if method == "scratch":
        # The same architecture with random weights, drawn after seeding (reproducible).
        options = {k: v for k, v in human.architecture().items() if k != "class"}
        human = HumanOrganNet(**(options | {"in_channels": channels}))
    return AnimalOrganNet.from_human(
        human,
        n_organs=n_organs,
        refine_blocks=refine_blocks,
        expand=expand,
        attention=attention,
        in_channels=channels,
    )


#: ``--spacing auto`` keeps the species rule unless it would resample the training scans this
#: many times finer than their own spacing (then it takes theirs). Chosen on validation Dice of
#: benchmarks/spacing_choice.py: the rabbit phantoms (rule 1.14x finer than the scans) did better
#: at the species spacing, the Digimouse mice (2.5x finer) at the scans' spacing; 1.5 lies
#: between the two and is not tuned further.
MAX_UPSAMPLING = 1.5


def resolve_spacing(
    spacing: float | str | None,
    human_spacing: float | None,
    species: str | None,
    prepared: PreparedData,
) -> tuple[float | None, str]:
    """The animal model's pixel spacing and a sentence saying how it was chosen.

    See :func:`transfer` for the meaning of ``spacing``.

    Raises:
        InputError: an unknown spacing keyword, or ``"species"`` with a legacy human model.
    """
    from vetseg.species import linear_scale

    if spacing is None:
        if human_spacing is None:
            return (
                None,
                "legacy: slices squashed to the input size (the human model has no spacing)",
            )
        spacing = "auto"
    if isinstance(spacing, str):
        key = spacing.strip().lower()
        if key == "native":
            value = native_spacing(prepared.train)
            return value, f"native: median in-plane spacing of the training scans, {value:g} mm"
        if key == "auto":
            if human_spacing is None:
                raise InputError(
                    "the human model has no pixel spacing (a legacy model): give the animal"
                    " model's spacing in mm, or 'native'."
                )
            native = native_spacing(prepared.train)
            if not species:
                return native, (
                    f"native {native:g} mm: the data do not name their species (give --species"
                    " for the species rule)"
                )
            scale = linear_scale(species)
            rule = float(f"{human_spacing * scale:.3g}")
            if rule * MAX_UPSAMPLING >= native:
                return rule, (
                    f"species {species}: human {human_spacing:g} mm x body scale {scale:.3f}"
                    f" = {rule:g} mm (the scans: {native:g} mm)"
                )
            return native, (
                f"native {native:g} mm: the species rule ({species}: human"
                f" {human_spacing:g} mm x body scale {scale:.3f} = {rule:g} mm) would upsample"
                f" the scans more than {MAX_UPSAMPLING:g} times"
            )
        if key != "species":
            try:
                spacing = float(key)
            except ValueError:
                raise InputError(
                    f"spacing {spacing!r}: give mm per pixel, 'auto', 'species' or 'native'."
                ) from None
        else:
            if human_spacing is None:
                raise InputError(
                    "the human model has no pixel spacing (a legacy model): give the animal"
                    " model's spacing in mm, or 'native'."
                )
            if not species:
                value = native_spacing(prepared.train)
                return value, (
                    f"native {value:g} mm: the data do not name their species (give --species"
                    " for the species rule)"
                )
            scale = linear_scale(species)
            value = float(f"{human_spacing * scale:.3g}")
            return value, (
                f"species {species}: human {human_spacing:g} mm x body scale {scale:.3f}"
                f" = {value:g} mm"
            )
    value = float(spacing)
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"spacing {spacing!r} must be a positive number of mm.")
    return value, f"given: {value:g} mm"


def refine(
    parent_model: Path,
    data: Path | Any,
    out: Path,
    config: StageConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    ratios: tuple[int, int, int] = (8, 1, 1),
    stage: str = "refine",
    keep_in_train: Sequence[str] | KnownCases = (),
    check_units: bool = True,
) -> ModelInfo:
    """S103: retrain an animal model on old + corrected cases (refine-round defaults).

    The parent's weights are the starting point; its body is frozen for the first
    ``config.freeze_epochs`` epochs. The new model records the parent's id.

    Args:
        parent_model: the current animal model folder.
        data: dataset folder or ``CaseDataset`` with the labelled and corrected cases.
        out: model folder to write (training record under ``out/train``).
        config: settings; default ``StageConfig.refine()`` at the parent's input size.
        resume: continue from ``out/train``'s checkpoint.
        progress: show a progress bar.
        ratios: split of the cases (a new 8:1:1 split of the m + n cases by default).
        stage: the stage name recorded in model.json.
        keep_in_train: cases the parent's lineage trained or selected on (names, or
            :class:`~vetseg.data.identity.KnownCases` matched by content): kept in train so
            that validation and test cases are new to the parent when enough remain.
        check_units: refuse cases that are not in the model's units (a HU model's cases show
            air; :mod:`vetseg.io.units`).
    """
    out = Path(out)
    model, parent = load_model(Path(parent_model))
    if not hasattr(model, "refine"):
        raise InputError(f"{parent_model}: refine needs an animal model (got {parent.stage}).")
    config = config or StageConfig.refine()
    # A model's input definition never changes along its lineage: the parent's, whole.
    config = dataclasses.replace(config, preprocess=parent.preprocess)
    model.train()
    prepared = prepare_data(
        data,
        parent.organs,
        config.seed,
        out / "train" / "splits.json",
        ratios,
        keep_in_train,
        orientation=parent.preprocess.orientation,
        units_window=parent.preprocess.window if check_units else None,
    )
    _, record = _fit(model, prepared, parent.organs, config, out, resume, progress)
    info = ModelInfo(
        model_id=new_model_id(stage),
        architecture=model.architecture(),
        organs=parent.organs,
        preprocess=config.preprocess,
        stage=stage,
        species=parent.species,
        parent=parent.model_id,
        synthetic_data=bool(prepared.dataset.synthetic) or parent.synthetic_data,
        real_data=prepared.dataset.has_real_cases,
        **record,
    )
    _save(model, out, info)
    return info


__all__ = [
    "INTENSITY_SOURCES",
    "TRANSFER_METHODS",
    "evaluate",
    "prepare_data",
    "refine",
    "train_human",
    "transfer",
    "validation_dice",
]
