"""vetseg: CT organ segmentation for animals, transferred from a human model.

Importing the package is cheap: torch and the other heavy libraries load only in the modules
that need them, so the command line answers ``--help`` at once.
"""

__version__ = "0.1.0"
