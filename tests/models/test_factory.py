"""build_model is the inverse of architecture(); bad records are ModelFileError."""

from __future__ import annotations

import json

import pytest
import torch

from vetseg.errors import ModelFileError
from vetseg.models import AnimalOrganNet, HumanOrganNet, build_model


@pytest.mark.parametrize(
    "make",
    [
        lambda: HumanOrganNet(
            n_organs=3, encoder="efficientnet-b0", decoder_channels=(64, 32, 24, 16)
        ),
        lambda: HumanOrganNet(n_organs=5, bn_momentum=0.2),
        lambda: AnimalOrganNet(n_organs=2, refine_blocks=3, expand=2, kernel=5, attention="se"),
        lambda: AnimalOrganNet.from_human(HumanOrganNet(n_organs=4), n_organs=6, refine_blocks=0),
    ],
)
def test_build_model_rebuilds_the_same_network(make) -> None:  # noqa: ANN001
    model = make()
    record = json.loads(json.dumps(model.architecture()))  # as read back from model.json
    rebuilt = build_model(record)
    assert type(rebuilt) is type(model)
    assert rebuilt.architecture() == model.architecture()
    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == expected
    rebuilt.load_state_dict(model.state_dict())  # strict: the weights file will fit
    model.eval()
    rebuilt.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_unknown_class_is_a_model_file_error() -> None:
    with pytest.raises(ModelFileError, match="model.json.*'UNet'"):
        build_model({"class": "UNet", "n_organs": 3}, source="model.json")
    with pytest.raises(ModelFileError, match="None"):
        build_model({"n_organs": 3})


@pytest.mark.parametrize(
    "record",
    [
        {"class": "HumanOrganNet", "n_organs": 3, "depth": 5},
        {"class": "HumanOrganNet", "n_organs": 3, "encoder": "resnet50"},
        {"class": "AnimalOrganNet", "n_organs": 3, "attention": "cbam"},
        {"class": "AnimalOrganNet"},
    ],
)
def test_bad_options_are_a_model_file_error(record: dict) -> None:
    with pytest.raises(ModelFileError, match=record["class"]):
        build_model(record)
