"""The real-data path: a workspace pre-labels real mouse head micro-CT from one labelled template.

Data (../shared/data/mouse, GPL-3.0, Maga et al. 2017): one head template with labels (skull,
mandibles, endocranial space) and 41 real unlabelled heads, one per inbred strain. Intensities
are 8-bit (0-255), not Hounsfield units, so the workspace's intensity window is [0, 255].

There is no mouse-head equivalent of the human model, and one labelled scan cannot be split
8:1:1. The simplest honest route, used here:

1. ``vetseg init --species mouse_head --window 0,255`` and ``vetseg add`` the template with
   its labels (``--mapping mouse_head``: id 3, "bone of undocumented meaning", joins the skull);
2. write ``--copies`` AUGMENTED COPIES of the template (a random 3D rotation, since the heads
   lie in all orientations; a smooth random deformation; intensity scale and noise, since the
   template is an average with lower contrast than single scans), clearly marked as such;
3. train the animal architecture from scratch on template + copies at ``--size`` (a few
   minutes of CPU; validation is an augmented copy of the same template, so its Dice is
   optimistic) and ``vetseg use`` it;
4. ``vetseg add`` real heads and ``vetseg prelabel`` some of them (most uncertain first);
5. previews of the pre-labels go to ``docs/images/prelabel_<case>.png``.

Writes ``benchmarks/results/mouse_head_prelabel.json`` (scores, organ volumes, timings).

Usage::

    python benchmarks/mouse_head_prelabel.py                # ~5-10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from vetseg.config import PreprocessConfig, StageConfig
from vetseg.fileutil import atomic_path, atomic_write_json
from vetseg.labels import SPECIES_ORGANS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ORGANS = SPECIES_ORGANS["mouse_head"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mouse")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "mouse_head")
    parser.add_argument("--out", type=Path, default=RESULTS / "mouse_head_prelabel.json")
    parser.add_argument("--images", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--copies", type=int, default=10, help="Augmented template copies.")
    parser.add_argument("--heads", type=int, default=12, help="Real heads registered.")
    parser.add_argument("--prelabel", type=int, default=6, help="Heads pre-labelled.")
    parser.add_argument("--previews", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--spacing",
        type=float,
        default=0.3,
        help="Model pixel spacing in mm (heads are about 21 mm across at 0.141 mm); 0: the"
        " legacy squash of every slice to --size.",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--context-slices",
        type=int,
        default=0,
        help="Neighbouring slices on each side as extra input channels (as `vetseg transfer"
        " --context-slices`); 0: the patent's one-channel stem.",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- augmented copies
def augmented_copy(
    ct: np.ndarray, labels: np.ndarray, rng: np.random.Generator, side: int = 160
) -> tuple[np.ndarray, np.ndarray]:
    """The template turned, bent and re-textured, on a ``side``^3 grid of the same spacing.

    Args:
        ct: template intensities ``[z, y, x]`` (isotropic voxels).
        labels: workspace label ids on the same grid.
        rng: random generator.
        side: output cube size in voxels (the real heads are about 125-165 voxels a side).

    Returns:
        ``(ct uint8, labels uint8)`` on the output grid.
    """
    rotation = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
    scale = float(rng.uniform(0.9, 1.1))
    centre_in = np.array(ndimage.center_of_mass(labels > 0))
    centre_out = (np.array([side] * 3) - 1) / 2 + rng.normal(0, 4, 3)
    grid = np.indices((side,) * 3, dtype=np.float32).reshape(3, -1)
    # Smooth random displacement (voxels): noise on a coarse grid, upsampled.
    coarse = rng.normal(0, 2.5, (3, 8, 8, 8)).astype(np.float32)
    displacement = np.stack(
        [ndimage.zoom(c, side / 8, order=3)[:side, :side, :side] for c in coarse]
    ).reshape(3, -1)
    source = (rotation @ (grid - centre_out[:, None]) / scale) + centre_in[:, None]
    source += displacement
    out_ct = ndimage.map_coordinates(ct.astype(np.float32), source, order=1, cval=0.0)
    out_labels = ndimage.map_coordinates(labels, source, order=0, cval=0)
    out_ct = out_ct.reshape((side,) * 3)
    out_labels = out_labels.reshape((side,) * 3)
    # The template is an average (max ~90, smooth); single scans reach 255 and are noisy, and
    # show the soft tissue of the head (about 10-30) that the template lacks: a smooth envelope.
    out_ct = out_ct * rng.uniform(1.8, 3.0)
    envelope = ndimage.gaussian_filter((out_labels > 0).astype(np.float32), rng.uniform(4, 8))
    out_ct = np.maximum(out_ct, (envelope > 0.02) * rng.uniform(8.0, 25.0))
    out_ct = ndimage.gaussian_filter(out_ct, rng.uniform(0.0, 0.8))
    out_ct += rng.normal(0, rng.uniform(2.0, 8.0), out_ct.shape)
    return np.clip(out_ct, 0, 255).astype(np.uint8), out_labels.astype(np.uint8)


def write_training_copies(
    template_ct: Path, template_labels: Path, out: Path, copies: int, seed: int
) -> Path:
    """Template (workspace ids) + augmented copies as a pairs-layout dataset marked synthetic."""
    from vetseg.io.image import ImageMeta, read_image, to_canonical, write_image

    if (out / "dataset.json").is_file():
        return out
    ct, meta = read_image(template_ct)
    labels, _ = read_image(template_labels)
    ct_c, meta_c = to_canonical(ct, meta)
    labels_c, _ = to_canonical(labels, meta)
    write_image(ct, meta, out / "template.nii.gz")
    write_image(labels, meta, out / "template_seg.nii.gz")
    rng = np.random.default_rng(seed)
    spacing = meta_c.spacing
    for k in range(copies):
        image_k, labels_k = augmented_copy(ct_c, labels_c, rng)
        copy_meta = ImageMeta(spacing=spacing, origin=(0.0, 0.0, 0.0))
        write_image(image_k, copy_meta, out / f"augmented_{k:02d}.nii.gz")
        write_image(labels_k, copy_meta, out / f"augmented_{k:02d}_seg.nii.gz")
    description = (
        f"the one labelled mouse head template plus {copies} AUGMENTED COPIES of it (random "
        "3D rotation, smooth deformation, intensity scale, blur and noise): not independent "
        "animals"
    )
    names = {"0": "background", **{str(i + 1): o for i, o in enumerate(ORGANS)}}
    atomic_write_json(
        out / "dataset.json",
        {"description": description, "labels": names, "synthetic": True, "species": "mouse"},
    )
    return out


# --------------------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> dict[str, Any]:
    from vetseg.io.image import read_image, read_label
    from vetseg.models.files import ModelInfo, new_model_id, read_model_info, save_model
    from vetseg.models.human import HumanOrganNet
    from vetseg.training.stages import transfer
    from vetseg.viz.preview import render_preview
    from vetseg.workflow.prelabel import prelabel, review_queue
    from vetseg.workflow.register import add_scans, use_model
    from vetseg.workflow.workspace import Workspace, WorkspaceSettings

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    template = args.data / "template"
    heads = sorted((args.data / "heads").glob("*.nii.gz"))[: args.heads]
    root = args.work / "workspace"
    spacing = args.spacing or None
    settings = WorkspaceSettings(
        species="mouse_head", organs=ORGANS, window=(0.0, 255.0), seed=args.seed, spacing=spacing
    )
    with Workspace.create(root, settings) as ws, ws.changing():
        add_scans(
            ws,
            [template / "template_ct.nii.gz"],
            [template / "template_seg.nii.gz"],
            mapping="mouse_head",
            case_ids=["template"],
        )
        stored_labels = ws.path(ws.case("template").label)

    # The model: from scratch on the template and its augmented copies.
    model_dir = args.work / "model"
    if not (model_dir / "model.json").is_file():
        t0 = time.perf_counter()
        data = write_training_copies(
            template / "template_ct.nii.gz",
            stored_labels,
            args.work / "train_data",
            args.copies,
            args.seed,
        )
        timings["augmented_copies_s"] = round(time.perf_counter() - t0, 1)
        architecture_only = args.work / "architecture_only"
        net = HumanOrganNet(len(ORGANS))
        preprocess = settings.preprocess(args.size)
        save_model(
            net,
            architecture_only,
            ModelInfo(new_model_id("untrained"), net.architecture(), ORGANS, preprocess, "human"),
        )
        config = StageConfig.transfer(
            epochs=args.epochs,
            freeze_epochs=0,
            lr=1e-3,
            batch_size=8,
            steps_per_epoch=args.steps,
            extend=0,
            seed=args.seed,
            preprocess=PreprocessConfig(
                window=settings.window,
                size=args.size,
                spacing=spacing,
                context_slices=args.context_slices,
            ),
        )
        t0 = time.perf_counter()
        transfer(
            architecture_only,
            data,
            model_dir,
            config,
            organs=ORGANS,
            from_scratch=True,
            spacing=spacing,
        )
        timings["training_s"] = round(time.perf_counter() - t0, 1)
    info = read_model_info(model_dir)
    epochs = (model_dir / "train" / "metrics.jsonl").read_text().splitlines()
    timings["model_training_s"] = round(sum(json.loads(e)["seconds"] for e in epochs), 1)

    t0 = time.perf_counter()
    with Workspace.open(root) as ws:
        if ws.current_model() is None:
            use_model(ws, model_dir, note="from scratch on the template + augmented copies")
        add_scans(ws, heads)
        # Once: a re-run of this script only redraws the previews.
        run = prelabel(ws, cases=args.prelabel).run if not ws.prelabels() else None
        queue = review_queue(ws)
        scores = dict(
            ws.db.execute(
                "SELECT case_id, uncertainty FROM scores WHERE model_id = ?", (info.model_id,)
            ).fetchall()
        )
        timings["prelabel_s"] = round(time.perf_counter() - t0, 1)
        names = {i + 1: o for i, o in enumerate(ORGANS)}
        previews, volumes = [], {}
        # The most and the least uncertain of the drafted heads, and one in between.
        picks = [queue[0], queue[len(queue) // 2], queue[-1]][: args.previews] if queue else []
        for item in queue:
            labels, meta = read_label(ws.review_dir(item["case"]) / "prelabel.nii.gz")
            voxel_ml = float(np.prod(meta.spacing)) / 1000.0
            volumes[item["case"]] = {
                organ: round(int((labels == i + 1).sum()) * voxel_ml, 4)
                for i, organ in enumerate(ORGANS)
            }
        template_labels, template_meta = read_label(ws.path(ws.case("template").label))
        voxel_ml = float(np.prod(template_meta.spacing)) / 1000.0
        template_volumes = {
            organ: round(int((template_labels == i + 1).sum()) * voxel_ml, 4)
            for i, organ in enumerate(ORGANS)
        }
        for item in picks:
            png = args.images / f"prelabel_{item['case']}.png"
            scan, meta = read_image(ws.path(ws.case(item["case"]).image))
            labels, _ = read_label(ws.review_dir(item["case"]) / "prelabel.nii.gz")
            title = (
                f"{item['case']}: REAL mouse head, vetseg pre-label (uncertainty "
                f"{item['uncertainty']:.2f}); model from ONE labelled template + augmented copies"
            )
            picture = render_preview(scan, meta, labels, names, title=title)
            with atomic_path(png) as tmp:
                picture.save(tmp, format="PNG")
            previews.append(str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png))
    timings["total_s"] = round(time.perf_counter() - started, 1)
    report = {
        "what": "pre-labels of REAL mouse head micro-CT (8-bit, window [0, 255]) by a model "
        "trained from scratch on ONE labelled template plus augmented copies of it",
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "model": info.model_id,
        "model_val_dice": info.metrics.get("val_mean_dice"),
        "model_val_dice_note": "validation case = an augmented copy of the training template: "
        "optimistic, not a measure on real heads",
        "organs": list(ORGANS),
        "prelabelled": [q["case"] for q in queue],
        "uncertainty_all_heads": scores,
        "prelabel_volumes_ml": volumes,
        "template_volumes_ml": template_volumes,
        "previews": previews,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "timings": timings,
        "run": run,
    }
    atomic_write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("model_val_dice", "prelabelled", "previews")}))
    return report


if __name__ == "__main__":
    main()
