"""``python -m nhllib.study``: the study driver's command line (:mod:`nhllib.study.cli`)."""

import sys

from nhllib.study.cli import main

sys.exit(main())
