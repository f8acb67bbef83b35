"""Post-processing rules on small synthetic masks: largest parts, specks by volume, holes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vetseg.errors import InputError
from vetseg.inference.postprocess import (
    KEEP_AS_IS,
    OrganRule,
    PostprocessConfig,
    _component_sizes,
    _fill_holes,
    _label_components,
    clean_mask,
    organ_pairs,
    paired_organs_by_side,
    postprocess_labels,
    voxel_volume_ml,
)


def blobs() -> np.ndarray:
    """Three separate cubes of 27, 8 and 1 voxels."""
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[7:9, 7:9, 7:9] = True  # 8
    mask[10, 1, 10] = True  # 1
    return mask


def test_keep_the_largest_component() -> None:
    out = clean_mask(blobs(), OrganRule(keep_largest=1, fill_holes=False), voxel_ml=0.001)
    assert out.sum() == 27
    assert out[2, 2, 2] and not out[8, 8, 8]


def test_keep_the_two_largest_for_an_organ_in_parts() -> None:
    out = clean_mask(blobs(), OrganRule(keep_largest=2, fill_holes=False), voxel_ml=0.001)
    assert out.sum() == 27 + 8
    assert not out[10, 1, 10]


def test_diagonal_neighbours_are_separate_components() -> None:
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # touch at a corner only (6-connectivity)
    assert clean_mask(mask, OrganRule(keep_largest=1, fill_holes=False), 1.0).sum() == 1


def test_drop_blobs_under_a_volume_measured_from_the_spacing() -> None:
    spacing = (2.0, 2.0, 2.5)  # 10 mm^3 = 0.01 ml per voxel
    voxel_ml = voxel_volume_ml(spacing)
    assert voxel_ml == pytest.approx(0.01)
    rule = OrganRule(keep_largest=None, min_volume_ml=0.05, fill_holes=False)
    out = clean_mask(blobs(), rule, voxel_ml)  # 0.27 ml and 0.08 ml stay, 0.01 ml goes
    assert out.sum() == 27 + 8
    # The same blobs at 1 mm voxels are 0.027, 0.008 and 0.001 ml: all under 0.05 ml.
    assert clean_mask(blobs(), rule, voxel_volume_ml((1.0, 1.0, 1.0))).sum() == 0


def hollow_cube(shape: int = 9) -> np.ndarray:
    mask = np.zeros((shape,) * 3, dtype=bool)
    mask[1:8, 1:8, 1:8] = True
    mask[3:6, 3:6, 3:6] = False  # a closed 27-voxel cavity
    return mask


def test_fill_an_enclosed_hole() -> None:
    out = clean_mask(hollow_cube(), OrganRule(keep_largest=1, fill_holes=True), 1.0)
    assert out.sum() == 7**3
    assert out[4, 4, 4]


def test_a_cavity_open_to_the_outside_is_not_a_hole() -> None:
    mask = hollow_cube()
    mask[4, 4, 5:8] = False  # a channel from the cavity to the outside (a kidney's hilum)
    out = clean_mask(mask, OrganRule(keep_largest=1, fill_holes=True), 1.0)
    assert np.array_equal(out, mask)


def test_fill_holes_matches_scipy_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = ndimage.binary_opening(rng.random((10, 14, 12)) > 0.35)
        assert np.array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_components_fall_back_to_int32_past_65535() -> None:
    few = np.zeros((4, 8, 8), dtype=bool)
    few[1, 1, 1] = few[2, 5, 5] = True
    labels, count = _label_components(few)
    assert labels.dtype == np.uint16 and count == 2
    # Isolated voxels on every other row and column: 256 x 256 = 65,536 components, one more
    # than uint16 can number (0 is the background).
    many = np.zeros((1, 512, 512), dtype=bool)
    many[0, ::2, ::2] = True
    labels, count = _label_components(many)
    assert labels.dtype == np.int32 and count == 65536
    assert labels.max() == 65536


def test_component_sizes_in_chunks_match_bincount(monkeypatch: pytest.MonkeyPatch) -> None:
    import vetseg.inference.postprocess as postprocess

    monkeypatch.setattr(postprocess, "_COUNT_CHUNK", 7)  # many chunks, a ragged last one
    components = np.random.default_rng(1).integers(0, 5, size=(3, 5, 4)).astype(np.uint16)
    assert np.array_equal(
        _component_sizes(components, 4), np.bincount(components.ravel(), minlength=5)
    )


def test_clean_mask_leaves_its_input_alone() -> None:
    mask = blobs()
    before = mask.copy()
    for rule in (OrganRule(keep_largest=1), OrganRule(fill_holes=False), KEEP_AS_IS):
        out = clean_mask(mask, rule, 1.0)
        assert out is not mask
        assert np.array_equal(mask, before)


def test_postprocess_labels_applies_each_organs_rule() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[blobs()] = 1  # liver: keeps only its largest part
    lungs = np.zeros_like(labels, dtype=bool)
    lungs[1:3, 8:11, 1:4] = True
    lungs[8:11, 1:4, 5:7] = True
    lungs[5, 6, 10] = True  # a speck
    labels[lungs] = 2  # lungs: keep two parts
    labels[6, 10, 6] = 3  # an organ without a rule: left as it is
    before = labels.copy()
    out = postprocess_labels(
        labels, ("liver", "lungs", "tumour"), (1.0, 1.0, 1.0), PostprocessConfig()
    )
    assert out is labels
    assert (out == 1).sum() == 27
    assert (out == 2).sum() == lungs.sum() - 1
    assert out[6, 10, 6] == 3
    # Removed voxels become background, never another organ.
    assert set(np.unique(out[before != out]).tolist()) == {0}


def test_filling_claims_background_only() -> None:
    labels = hollow_cube().astype(np.uint8)  # liver with a cavity...
    labels[4, 4, 4] = 2  # ...holding one spleen voxel
    out = postprocess_labels(labels, ("liver", "spleen"), (1.0,) * 3, PostprocessConfig())
    assert out[4, 4, 4] == 2
    assert (out == 1).sum() == 7**3 - 1


def test_disabled_config_changes_nothing() -> None:
    labels = blobs().astype(np.uint8)
    out = postprocess_labels(
        labels.copy(), ("liver",), (1.0,) * 3, PostprocessConfig(enabled=False)
    )
    assert np.array_equal(out, labels)


def test_rules_round_trip_through_json_and_reject_nonsense() -> None:
    config = PostprocessConfig.from_json(
        {"rules": {"liver": {"keep_largest": 2, "min_volume_ml": 1.5, "fill_holes": False}}}
    )
    assert config.rule_for("liver") == OrganRule(2, 1.5, False)
    assert config.rule_for("lungs").keep_largest == 2  # built-in rules stay
    assert config.rule_for("unknown_thing") == KEEP_AS_IS
    assert PostprocessConfig.from_json(config.to_json()) == config
    with pytest.raises(InputError):
        PostprocessConfig.from_json({"rules": {"liver": {"keep_largest": 0}}})
    with pytest.raises(InputError):
        PostprocessConfig.from_json({"rules": {"liver": {"largest": 1}}})
    with pytest.raises(InputError):
        OrganRule(min_volume_ml=-1.0)


def test_also_keep_parts_of_at_least_a_share_of_the_largest() -> None:
    mask = blobs()  # 27, 8 and 1 voxels
    mask[1:4, 7:10, 1:3] = True  # a fourth part of 18 voxels: two thirds of the largest
    rule = OrganRule(keep_largest=1, fill_holes=False, also_keep_ratio=0.5)
    out = clean_mask(mask, rule, voxel_ml=0.001)
    assert out.sum() == 27 + 18  # the 8- and 1-voxel parts are under half of 27
    assert out[2, 8, 1] and not out[8, 8, 8]
    only_largest = clean_mask(mask, OrganRule(keep_largest=1, fill_holes=False), voxel_ml=0.001)
    assert only_largest.sum() == 27


def test_default_rules_keep_a_spleen_in_two_big_pieces_but_one_liver_part() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[1:4, 1:4, 1:4] = 2  # spleen, 27 voxels...
    labels[7:10, 7:10, 8:10] = 2  # ...and a second piece of 18
    labels[7:9, 1:3, 1:3] = 2  # a spleen speck of 8: dropped
    labels[1:4, 7:10, 5:8] = 1  # liver, 27 voxels
    labels[8:10, 1:3, 6:8] = 1  # a liver part of 8: dropped
    out = postprocess_labels(labels, ("liver", "spleen"), (1.0,) * 3, PostprocessConfig())
    assert (out == 2).sum() == 27 + 18
    assert (out == 1).sum() == 27


def test_also_keep_ratio_round_trips_and_is_checked() -> None:
    config = PostprocessConfig.from_json({"rules": {"spleen": {"also_keep_ratio": 0.25}}})
    assert config.rule_for("spleen").also_keep_ratio == 0.25
    assert PostprocessConfig.from_json(config.to_json()) == config
    # A rule file written before the field existed keeps only the largest part.
    old = PostprocessConfig.from_json({"rules": {"spleen": {"keep_largest": 1}}})
    assert old.rule_for("spleen").also_keep_ratio == 0.0
    with pytest.raises(InputError, match="also_keep_ratio"):
        OrganRule(also_keep_ratio=1.5)


HUMAN = ("liver", "spleen", "kidney_left")


def left_part_scene() -> np.ndarray:
    """[z, y, x] at 1 mm in LPS (x to the patient's left, y to the back): the main liver on
    the right, a separate 'liver' part far left and behind (an enlarged spleen called liver),
    one far left but in front (stomach-like), and a small one far left behind (10 ml)."""
    labels = np.zeros((40, 100, 200), dtype=np.uint8)
    labels[:, 30:70, 10:80] = 1  # main liver, 112 ml; its centre y 49.5
    labels[:, 55:90, 150:190] = 1  # 56 ml, left and behind: becomes spleen
    labels[:, 5:25, 150:190] = 1  # 32 ml, left but in front: stays liver
    labels[:10, 80:90, 100:110] = 1  # 1 ml: too small to move
    labels[:, 92:97, 100:150] = 1  # 10 ml, left and behind, under 20 ml: stays
    return labels


def test_a_separate_liver_part_on_the_left_and_behind_becomes_spleen() -> None:
    from vetseg.inference.postprocess import left_liver_parts_to_spleen

    labels = left_part_scene()
    moved = left_liver_parts_to_spleen(labels, HUMAN, 0.001, "LPS")
    assert moved == pytest.approx(56.0)
    assert (labels[:, 55:90, 150:190] == 2).all()
    assert (labels[:, 5:25, 150:190] == 1).all()  # in front of the main liver's centre
    assert (labels[:, 92:97, 100:150] == 1).all()  # under 20 ml
    assert (labels[:, 30:70, 10:80] == 1).all()
    # x running to the patient's RIGHT (RAS-like codes): the same parts are on the right.
    labels = left_part_scene()
    assert left_liver_parts_to_spleen(labels, HUMAN, 0.001, "RPS") == 0.0
    assert not (labels == 2).any()
    # No spleen among the organs, or an x axis that is not left-right: nothing moves.
    assert left_liver_parts_to_spleen(left_part_scene(), ("liver", "heart"), 0.001, "LPS") == 0
    assert left_liver_parts_to_spleen(left_part_scene(), HUMAN, 0.001, "PLS") == 0.0


def test_postprocess_moves_the_left_part_before_the_organ_rules() -> None:
    labels = left_part_scene()
    spacing = (1.0, 1.0, 1.0)
    out = postprocess_labels(labels.copy(), HUMAN, spacing, PostprocessConfig(), "LPS")
    assert (out[:, 55:90, 150:190] == 2).all()  # kept: it is now the spleen's largest part
    assert not (out[:, 5:25, 150:190] == 1).any()  # still liver, so dropped as before
    # Without the orientation, or with the rule off, the part is liver and dropped.
    for config, orientation in (
        (PostprocessConfig(), None),
        (PostprocessConfig(left_liver_parts_to_spleen=False), "LPS"),
    ):
        out = postprocess_labels(labels.copy(), HUMAN, spacing, config, orientation)
        assert not (out == 2).any()
    off = PostprocessConfig.from_json({"left_liver_parts_to_spleen": False})
    assert off.left_liver_parts_to_spleen is False
    assert PostprocessConfig.from_json(off.to_json()) == off
    assert PostprocessConfig.from_json({}).left_liver_parts_to_spleen is True


KIDNEYS = ("liver", "kidney_left", "kidney_right", "bone")


def split_kidney_scene() -> np.ndarray:
    """In LPS (x runs to the patient's left): a spine (4) at x 19-20, a right kidney (3) at
    x 2-9, a left kidney (2) at x 26-33 whose medial quarter is called right, a false "left
    kidney" piece on the right side at x 12-13 (not touching the right kidney), and a liver (1)
    touching the left kidney."""
    labels = np.zeros((7, 20, 40), dtype=np.uint8)
    labels[:, 15:18, 19:21] = 4  # spine: midline 19.5
    labels[1:6, 6:14, 2:10] = 3  # the right kidney
    labels[1:6, 6:14, 26:34] = 2  # the left kidney ...
    labels[1:6, 6:14, 26:28] = 3  # ... its medial quarter called right (80 voxels)
    labels[2:4, 8:10, 12:14] = 2  # 8 voxels of "left kidney" on the right
    labels[1:6, 14:18, 26:34] = 1  # liver touching the left kidney
    return labels


def test_organ_pairs_are_found_by_their_names() -> None:
    assert organ_pairs(KIDNEYS) == [(2, 3)]
    assert organ_pairs(("lungs", "kidney_left", "heart")) == []
    assert organ_pairs(("a_right", "b", "a_left")) == [(3, 1)]


def test_kidney_voxels_take_the_side_of_the_midline_they_lie_on() -> None:
    labels = split_kidney_scene()
    out = labels.copy()
    assert paired_organs_by_side(out, KIDNEYS, "LPS") == 88
    assert (out[1:6, 6:14, 26:34] == 2).all()  # the whole left kidney is left now
    assert (out[2:4, 8:10, 12:14] == 3).all()  # the piece on the right is right
    assert (out[1:6, 6:14, 2:10] == 3).all()
    for organ in (1, 4):
        assert np.array_equal(out == organ, labels == organ)  # no other organ changes
    assert paired_organs_by_side(out, KIDNEYS, "LPS") == 0  # nothing left to move
    # In RAS x runs to the patient's RIGHT: the same array reads mirrored.
    mirrored = labels.copy()
    paired_organs_by_side(mirrored, KIDNEYS, "RAS")
    assert (mirrored[1:6, 6:14, 2:10] == 2).all() and (mirrored[1:6, 6:14, 26:34] == 3).all()
    # Nothing to go by: no bone label, no bone in those slices, or no left-right x axis.
    for organs, orientation in (
        (("liver", "kidney_left", "kidney_right"), "LPS"),
        (KIDNEYS, "SPL"),
    ):
        assert paired_organs_by_side(labels.copy(), organs, orientation) == 0
    no_spine = labels.copy()
    no_spine[no_spine == 4] = 0
    assert paired_organs_by_side(no_spine, KIDNEYS, "LPS") == 0


def test_postprocess_keeps_the_split_kidney_whole_only_with_the_side_rule() -> None:
    labels = split_kidney_scene()
    on = PostprocessConfig(paired_organs_by_side=True)
    out = postprocess_labels(labels.copy(), KIDNEYS, (1.0,) * 3, on, "LPS")
    assert (out[1:6, 6:14, 26:34] == 2).all()
    # Off (the default), or without the orientation, the medial piece is a stray second
    # right kidney part: dropped to background.
    for config, orientation in ((PostprocessConfig(), "LPS"), (on, None)):
        out = postprocess_labels(labels.copy(), KIDNEYS, (1.0,) * 3, config, orientation)
        assert (out[1:6, 6:14, 26:28] == 0).all() and (out[1:6, 6:14, 28:34] == 2).all()
    parsed = PostprocessConfig.from_json({"paired_organs_by_side": True})
    assert parsed == on and PostprocessConfig.from_json(parsed.to_json()) == parsed
    assert PostprocessConfig.from_json({}).paired_organs_by_side is False


@pytest.mark.parametrize(("species", "expected"), [("human", "LPS"), ("rabbit", None)])
def test_segmenter_gives_the_orientation_to_human_models_only(
    monkeypatch: pytest.MonkeyPatch, species: str, expected: str | None
) -> None:
    """The left-liver rule needs the orientation; the segmenter hands it over for human models
    and withholds it from animal ones (their liver spans both sides)."""
    import dataclasses

    import vetseg.inference.segmenter as segmenter_module
    from tests.inference.conftest import tiny_info, tiny_network
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import ImageMeta

    seen: list[str | None] = []

    def spy(labels, organs, spacing, config, orientation=None):  # type: ignore[no-untyped-def]
        seen.append(orientation)
        return labels

    monkeypatch.setattr(segmenter_module, "postprocess_labels", spy)
    model = tiny_network()
    info = dataclasses.replace(tiny_info(model), species=species)
    segmenter = Segmenter(model, info, postprocess=PostprocessConfig())
    volume = np.zeros((2, 32, 32), dtype=np.float32)
    segmenter.predict(volume, ImageMeta(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)))
    assert seen == [expected]
