"""The study's figures (being split into one module per figure family)."""

from nhllib.plots.accuracy import *  # noqa: F401,F403
from nhllib.plots.accuracy import __all__  # noqa: F401
