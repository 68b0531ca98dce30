"""Where a notebook works: the project root, also when JupyterLab starts its kernel inside ``notebooks/``.

``run_all.sh`` and papermill (``--cwd .``) run the notebooks from the project root, so their relative paths
(``results``, ``data``) name the project's folders. JupyterLab starts a notebook's kernel in the notebook's own
folder, and ``cd notebooks && papermill 01_train.ipynb out.ipynb`` does the same: without this, a run would be
filed under ``notebooks/results/`` and its splits under ``notebooks/data/``, where the study never looks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["PROJECT_ROOT", "work_from_project_root"]

logger = logging.getLogger(__name__)

#: The checkout this package was imported from (the folder holding ``nhllib/``, ``notebooks/`` and ``studies/``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def work_from_project_root(cwd: Path | None = None, root: Path = PROJECT_ROOT) -> Path:
    """Change to ``root`` when the working directory is the project's ``notebooks/`` folder (or below it);
    anywhere else the working directory is kept, so an explicit ``--cwd`` still decides. Returns the working
    directory now in use."""
    here = Path(cwd or Path.cwd()).resolve()
    notebooks = (root / "notebooks").resolve()
    if here == notebooks or notebooks in here.parents:
        os.chdir(root)
        logger.info("working directory: %s (the notebook was started in %s)", root, here)
        return root
    return here
