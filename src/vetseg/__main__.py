"""``python -m vetseg`` and ``torchrun --nproc_per_node N -m vetseg train-human ...``."""

from vetseg.cli import main

if __name__ == "__main__":
    main()
