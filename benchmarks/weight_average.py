"""A model whose weights are the element-wise average of two models fine-tuned from one another
(WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): ``(1 - alpha) * A +
alpha * B``, parameters and batch-norm statistics alike.

Averaging is meaningful only when B was trained starting from A (or both from one parent): the
two then lie in one basin of the loss, and the interpolation tends to keep A's accuracy where A
was good and B's robustness where B was trained to be robust. This is checked, not assumed:
B's lineage must reach A's id (``parent`` in model.json), the architectures, organs and
preprocessing must match, and every tensor name and shape must agree.

The result is a new model: a new id, ``parent`` = A's id, ``training.weight_average`` naming
both models, alpha and the command; A's recipe files are kept and MADE_BY.txt says what was
done. Its ``metrics`` are A's training metrics no longer: they are dropped (measure the average;
``benchmarks/inference_tile.py MODEL --tiles T`` measures what the shipped model is judged by).

Usage::

    python benchmarks/weight_average.py A B --alpha 0.5 --dest DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch


def lineage(path: Path) -> list[str]:
    """The model's id and its parent's, as its model.json records them."""
    from vetseg.models.files import read_model_info

    info = read_model_info(path)
    return [info.model_id] + ([info.parent] if info.parent else [])


def average_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float):
    """``(1 - alpha) * a + alpha * b`` per floating tensor, in float32; integer tensors (batch
    counters) are taken from ``a``.

    Raises:
        ValueError: when the names or shapes differ.
    """
    if a.keys() != b.keys():
        only = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"the two models hold different tensors (e.g. {only})")
    out = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape:
            raise ValueError(f"{name}: shape {tuple(ta.shape)} against {tuple(tb.shape)}")
        if ta.is_floating_point():
            out[name] = (1.0 - alpha) * ta.float() + alpha * tb.float()
        else:
            out[name] = ta.clone()
    return out


def write_average(a: Path, b: Path, alpha: float, dest: Path, command: str | None = None) -> Path:
    """Write the average of models ``a`` and ``b`` to ``dest`` (see the module docstring).

    Raises:
        ValueError: alpha outside (0, 1), unrelated models, or models that do not match.
    """
    from inference_tile import read_recipe, write_derived

    from vetseg.models.files import load_model, new_model_id

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    net_a, info_a = load_model(a)
    net_b, info_b = load_model(b)
    if info_a.model_id not in lineage(b):
        raise ValueError(
            f"{b} ({info_b.model_id}) was not fine-tuned from {a} ({info_a.model_id}): its parent"
            f" is {info_b.parent}; averaging unrelated weights is meaningless"
        )
    for field in ("organs", "architecture", "stage", "species"):
        if getattr(info_a, field) != getattr(info_b, field):
            raise ValueError(f"the two models differ in {field}")
    pa, pb = dataclasses.asdict(info_a.preprocess), dataclasses.asdict(info_b.preprocess)
    if pa != pb:
        diff = sorted(k for k in pa if pa[k] != pb.get(k))
        raise ValueError(f"the two models preprocess differently: {diff}")
    net_a.load_state_dict(average_state(net_a.state_dict(), net_b.state_dict(), alpha))
    new = dataclasses.replace(
        info_a,
        model_id=new_model_id(info_a.stage),
        parent=info_a.model_id,
        training={
            **info_a.training,
            "weight_average": {
                "of": [info_a.model_id, info_b.model_id],
                "alpha": alpha,
                "formula": "(1 - alpha) * first + alpha * second, float32, every float tensor",
                "command": command,
            },
        },
        metrics={},
        created="",
    )
    note = (
        f"\nWeight average: (1 - {alpha}) x {info_a.model_id} + {alpha} x {info_b.model_id}"
        f" (fine-tuned from it), saved as {new.model_id}; nothing retrained."
        + (f" Made by: {command}." if command else "")
        + "\n"
    )
    return write_derived(net_a, new, dest, read_recipe(a), note)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="the model fine-tuned from (A)")
    parser.add_argument("second", type=Path, help="the fine-tuned model (B)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of B (default 0.5)")
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.dest.exists() and any(args.dest.iterdir()):
        parser.error(f"{args.dest} exists and is not empty: choose a new folder")
    command = "python benchmarks/weight_average.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    try:
        write_average(args.first, args.second, args.alpha, args.dest, command)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    print("wrote", args.dest)


if __name__ == "__main__":
    main()
