"""The study driver behind ``run_all.sh``: expand a profile's grid, run each training notebook, then the
analysis notebooks.

A profile is a YAML file (``studies/<profile>.yaml``)::

    study: default              # results/<study>/
    defaults: {epochs: 30, ...}   # RunConfig fields shared by every run
    method_defaults:            # fields every run of one method gets (a block or sweep value overrides them)
      dsh: {loss_hparams: {pairs: batch}}
    analysis:                   # parameters of the analysis notebooks, per notebook
      04_retrieval.ipynb: {method: csq}
    exercises: true             # then check the course kit (05_exercises.ipynb), see check_exercises
    grid:
      - variant: separate         # plain keys: fixed for this block
        sweep:                    # cartesian product of these lists
          method: [csq, dsh]
          code_lengths: [[8], [16]]
          seed: [0, 1, 2]

Every config is built and validated before the first run starts, so a typo fails at once; the profile itself is
checked against a schema first (:func:`check_profile`), with messages naming the block and key. Complete runs are
skipped, incomplete ones redone; a failed run does not stop the others, and the driver exits non-zero at the end
if any failed.

Runs execute here (``--executor local``, ``--jobs`` at a time) or as a Slurm job array submitted through submitit
(``--executor slurm``; resources from the profile's optional ``slurm:`` block, see
:class:`~nhllib.study.executors.SlurmOptions`, overridden by ``--partition``, ``--gpus-per-run`` and the like). A run
with one GPU (or none) executes the training notebook; with several, ``torchrun`` runs it data-parallel
(:mod:`nhllib.training.distributed`) through ``python -m nhllib.training.experiment``. The analysis notebooks follow the runs.

Running long studies safely: the results root is resolved once, against the caller's working directory, and
passed on absolute. The driver locks the study folder (:mod:`nhllib.store.locks`), so a second driver on it
stops at once naming the first. SIGTERM or SIGINT end every notebook process it started (papermill and its kernel) and
exit with 128 + the signal number; the interrupted runs stay incomplete and the same command resumes. The
analysis notebooks write their figures and tables to a staging folder, published as a set when all succeed;
then ``ANALYSIS_COMPLETE`` is written in the study folder. With ``exercises: true`` the course kit is checked last
(:func:`check_exercises`): a solution that fails, or a blank answer that passes, makes the study fail.

Modules: :mod:`~nhllib.study.profile` (the schema and grid), :mod:`~nhllib.study.execution` (runs, analysis,
course kit), :mod:`~nhllib.study.processes` (children that end with the driver), :mod:`~nhllib.store.locks`,
:mod:`~nhllib.study.executors` (local or Slurm), :mod:`~nhllib.study.cli` (the command line).
"""

from nhllib.study.execution import (ANALYSIS_MARKER, AnalysisTask, NotebookFailed, TorchrunFailed, TrainTask,
                                    check_exercises, run_study, train_one)
from nhllib.study.processes import Interrupted
from nhllib.study.profile import (ANALYSIS_NOTEBOOKS, PROFILES_DIR, TRAIN_NOTEBOOK, Profile, check_profile,
                                  expand_grid, load_profile)

__all__ = ["Profile", "load_profile", "check_profile", "expand_grid", "run_study", "main", "PROFILES_DIR",
           "TrainTask", "train_one", "ANALYSIS_MARKER", "ANALYSIS_NOTEBOOKS", "TRAIN_NOTEBOOK", "Interrupted",
           "NotebookFailed", "TorchrunFailed", "AnalysisTask", "check_exercises"]


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m nhllib.study``); see :mod:`nhllib.study.cli`."""
    from nhllib.study.cli import main as cli_main

    return cli_main(argv)
