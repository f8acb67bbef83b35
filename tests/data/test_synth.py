"""Atlas synthesis: a label atlas becomes CT-like cases with vetseg organ labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from vetseg.data.synth import synthesize_dataset
from vetseg.errors import InputError, LabelMappingError
from vetseg.io.image import ImageMeta, orientation_matrix, read_image, read_label, write_image
from vetseg.labels import CORE_ORGANS, DIGIMOUSE, split_left_right

ID = {name: i + 1 for i, name in enumerate(CORE_ORGANS)}
SPACING = (0.2, 0.2, 0.2)


def ball(shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c, r = centre, radii
    return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1


def tiny_digimouse() -> np.ndarray:
    """A Digimouse-like atlas [z, y, x] in canonical orientation (x to the animal's left)."""
    shape = (44, 28, 36)
    atlas = np.zeros(shape, dtype=np.uint8)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = (((y - 13.5) / 12.5) ** 2 + ((x - 17.5) / 16.5) ** 2 < 1) & (z >= 2) & (z < 42)
    inner = (((y - 13.5) / 11.5) ** 2 + ((x - 17.5) / 15.5) ** 2 < 1) & (z >= 3) & (z < 41)
    atlas[body & ~inner] = 1  # skin
    atlas[ball(shape, (30, 11, 13), (5, 5, 7))] = 18  # liver, on the right (low x)
    atlas[ball(shape, (17, 18, 8), (4, 3, 3))] = 19  # kidneys: one label for both
    atlas[ball(shape, (15, 18, 27), (4, 3, 3))] = 19
    atlas[ball(shape, (24, 9, 28), (4, 3, 3))] = 16  # spleen
    atlas[ball(shape, (23, 10, 19), (3, 3, 4))] = 15  # stomach
    atlas[ball(shape, (37, 12, 10), (3, 5, 5))] = 21  # lungs
    atlas[ball(shape, (37, 12, 25), (3, 5, 5))] = 21
    atlas[ball(shape, (37, 11, 18), (3, 3, 3))] = 9  # heart
    atlas[(np.abs(y - 22) < 2) & (np.abs(x - 17.5) < 2) & inner] = 2  # spine
    return atlas


def write_atlas(folder: Path, atlas: np.ndarray, orientation: str = "LPS") -> Path:
    """Write a canonical atlas to disk in ``orientation`` (same voxels in physical space)."""
    meta = ImageMeta(SPACING, (5.0, -3.0, 40.0))
    array = atlas
    if orientation == "RAS":
        # x and y index axes point the other way: flip the array, move the origin to the far
        # corner, and every voxel keeps its physical position.
        array = atlas[:, ::-1, ::-1]
        far = np.array(meta.origin) + np.array(
            [SPACING[0] * (atlas.shape[2] - 1), SPACING[1] * (atlas.shape[1] - 1), 0.0]
        )
        meta = ImageMeta(SPACING, tuple(far), tuple(orientation_matrix("RAS").ravel()))
    return write_image(np.ascontiguousarray(array), meta, folder / "atlas.nii.gz")


def centre(labels: np.ndarray, organ: str) -> np.ndarray:
    return np.argwhere(labels == ID[organ]).mean(axis=0)


def test_tiny_digimouse_atlas_gives_labelled_ct_cases(tmp_path: Path) -> None:
    atlas_path = write_atlas(tmp_path, tiny_digimouse())
    (tmp_path / "labels.json").write_text(json.dumps({str(k): v for k, v in DIGIMOUSE.items()}))
    out = tmp_path / "mice"
    written = synthesize_dataset(atlas_path, out, cases=2, seed=5)  # "auto": by labels.json
    assert [p.name for p in written] == ["mouse_000.nii.gz", "mouse_001.nii.gz"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["synthetic"] is True and info["source_atlas"] == str(atlas_path)
    assert info["atlas_kind"] == "digimouse" and info["species"] == "mouse"
    assert info["labels"] == {"background": 0, **ID}

    ct, meta = read_image(out / "imagesTr" / "mouse_000_0000.nii.gz")
    labels, _ = read_label(written[0], reference=meta, reference_shape=ct.shape)
    assert ct.dtype == np.int16 and meta.orientation == "LPS"
    assert set(np.unique(labels)) == set(range(8))  # every organ, the kidneys split in two

    def median(organ: str) -> float:
        # The organ's core: these organs are a few voxels thick, so blur mixes in their rims.
        core = ndimage.binary_erosion(labels == ID[organ])
        return float(np.median(ct[core if core.any() else labels == ID[organ]]))

    assert 35 <= median("liver") <= 130
    assert 25 <= median("spleen") <= 140
    assert 15 <= median("kidney_left") <= 230
    assert median("lungs") < -250
    assert median("bone") > 200
    assert abs(float(np.median(ct[:, :2, :2])) + 1000) < 60  # air outside the body
    # Kidneys by side: axis 2 runs to the animal's left.
    assert centre(labels, "kidney_left")[2] > centre(labels, "kidney_right")[2]

    other, _ = read_image(out / "imagesTr" / "mouse_001_0000.nii.gz")
    other_labels, _ = read_label(written[1])
    assert not np.array_equal(labels, other_labels)  # deformed differently per case
    assert other.shape == ct.shape


def test_atlas_stored_in_another_orientation_keeps_sides(tmp_path: Path) -> None:
    atlas = tiny_digimouse()
    atlas_path = write_atlas(tmp_path, atlas, orientation="RAS")
    written = synthesize_dataset(atlas_path, tmp_path / "out", 1, seed=0, mapping="digimouse")
    labels, meta = read_label(written[0])
    assert meta.orientation == "LPS"  # written canonical
    assert centre(labels, "kidney_left")[2] > centre(labels, "kidney_right")[2]
    assert centre(labels, "liver")[2] < labels.shape[2] / 2  # the atlas put it on the right
    assert centre(labels, "lungs")[0] > centre(labels, "liver")[0]  # lungs cranial


def test_same_seed_same_cases(tmp_path: Path) -> None:
    atlas_path = write_atlas(tmp_path, tiny_digimouse())
    a = synthesize_dataset(atlas_path, tmp_path / "a", 1, seed=2, mapping="digimouse")
    b = synthesize_dataset(atlas_path, tmp_path / "b", 1, seed=2, mapping="digimouse")
    assert np.array_equal(read_label(a[0])[0], read_label(b[0])[0])
    image_a = read_image(tmp_path / "a" / "imagesTr" / "mouse_000_0000.nii.gz")[0]
    image_b = read_image(tmp_path / "b" / "imagesTr" / "mouse_000_0000.nii.gz")[0]
    assert np.array_equal(image_a, image_b)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    atlas = tiny_digimouse()
    atlas_path = write_atlas(tmp_path, atlas)
    with pytest.raises(InputError, match="Unknown atlas mapping 'mouse'"):
        synthesize_dataset(atlas_path, tmp_path / "o1", 1, 0, mapping="mouse")
    atlas[0, 0, 0] = 77
    odd = write_image(atlas, ImageMeta(SPACING, (0.0, 0.0, 0.0)), tmp_path / "odd.nii.gz")
    with pytest.raises(LabelMappingError, match="77"):
        synthesize_dataset(odd, tmp_path / "o2", 1, 0, mapping="digimouse")
    skin_only = np.where(tiny_digimouse() == 1, 1, 0).astype(np.uint8)
    bare = write_image(skin_only, ImageMeta(SPACING, (0.0, 0.0, 0.0)), tmp_path / "bare.nii.gz")
    with pytest.raises(LabelMappingError, match="none of the organs"):
        synthesize_dataset(bare, tmp_path / "o3", 1, 0, mapping="digimouse")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        synthesize_dataset(atlas_path, full, 1, 0, mapping="digimouse")
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))


def test_split_left_right_by_pieces_and_midline() -> None:
    mask = np.zeros((4, 6, 20), dtype=bool)
    mask[:, 1:3, 2:5] = True  # a piece on the right (low x)
    mask[:, 3:5, 13:17] = True  # a piece on the left
    body = np.zeros_like(mask)
    body[:, :, 1:19] = True  # midline x = 9.5
    left, right = split_left_right(mask, body)
    assert left[:, 3:5, 13:17].all() and not left[:, 1:3, 2:5].any()
    assert np.array_equal(left | right, mask) and not (left & right).any()
    # One piece across the midline (two kidneys that touch) is cut there.
    bridge = np.zeros_like(mask)
    bridge[:, 2:4, 5:15] = True
    left, right = split_left_right(bridge, body)
    assert np.argwhere(left)[:, 2].min() == 10 and np.argwhere(right)[:, 2].max() == 9


@pytest.mark.realdata
def test_real_digimouse_atlas(shared_data: Path, tmp_path: Path) -> None:
    atlas_path = shared_data / "mouse" / "digimouse" / "labels.nii.gz"
    if not atlas_path.is_file():
        pytest.skip(f"{atlas_path} is absent")
    written = synthesize_dataset(atlas_path, tmp_path / "digimouse", cases=1, seed=0)
    ct, meta = read_image(tmp_path / "digimouse" / "imagesTr" / "mouse_000_0000.nii.gz")
    labels, _ = read_label(written[0], reference=meta, reference_shape=ct.shape)
    present = set(np.unique(labels).tolist())
    assert {
        ID[o] for o in ("liver", "kidney_left", "kidney_right", "lungs", "heart", "bone")
    } <= present
    assert max(ct.shape[1:]) <= 128 and ct.shape[0] <= 192  # cropped to the torso, small
    assert centre(labels, "kidney_left")[2] > centre(labels, "kidney_right")[2]
    assert centre(labels, "lungs")[0] > centre(labels, "kidney_left")[0]
    assert float(np.median(ct[labels == ID["liver"]])) > 30
    info = json.loads((tmp_path / "digimouse" / "dataset.json").read_text())
    assert info["atlas_kind"] == "digimouse" and info["synthetic"] is True


@pytest.mark.realdata
def test_real_totalsegmentator_labels(shared_data: Path, tmp_path: Path) -> None:
    atlas_path = shared_data / "human" / "totalseg_example" / "seg.nii.gz"
    if not atlas_path.is_file():
        pytest.skip(f"{atlas_path} is absent")
    written = synthesize_dataset(atlas_path, tmp_path / "human", cases=1, seed=0)
    labels, _ = read_label(written[0])
    assert {ID[o] for o in ("liver", "spleen", "kidney_left", "kidney_right", "bone")} <= set(
        np.unique(labels).tolist()
    )
    assert centre(labels, "kidney_left")[2] > centre(labels, "kidney_right")[2]
    info = json.loads((tmp_path / "human" / "dataset.json").read_text())
    assert info["atlas_kind"] == "totalseg" and info["species"] == "human"


def test_organs_beyond_the_core_set_are_labelled_when_asked(tmp_path: Path) -> None:
    from vetseg.labels import HUMAN_ORGANS

    atlas_path = write_atlas(tmp_path, tiny_digimouse())
    core = synthesize_dataset(atlas_path, tmp_path / "core", 1, seed=0, mapping="digimouse")
    wide = synthesize_dataset(
        atlas_path, tmp_path / "wide", 1, seed=0, mapping="digimouse", organs=HUMAN_ORGANS
    )
    core_names = json.loads((tmp_path / "core" / "dataset.json").read_text())["labels"]
    wide_names = json.loads((tmp_path / "wide" / "dataset.json").read_text())["labels"]
    assert "stomach" not in core_names
    # The atlas draws a stomach (and no gallbladder or aorta): only what it draws is listed.
    assert wide_names["stomach"] == 8 and "gallbladder" not in wide_names
    core_labels, _ = read_label(core[0])
    wide_labels, _ = read_label(wide[0])
    assert (wide_labels == 8).sum() > 0 and (core_labels == 8).sum() == 0
    # The core organs keep their ids and voxels.
    np.testing.assert_array_equal(np.where(wide_labels <= 7, wide_labels, 0), core_labels)
