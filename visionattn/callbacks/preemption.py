"""Survive preemption: on SIGTERM, or SLURM's requeue signal, stop at the end of the current batch,
write ``last.ckpt`` and, for the requeue signal, requeue the SLURM job; ``resume=auto`` picks the
run up from that checkpoint.

Lightning's own SLURM handler saves ``hpc_ckpt_N.ckpt`` from inside the signal handler, at any
point of a step (between two parameters' optimiser updates, say), and ``resume=auto`` would have to
look for it. Here the handler only raises Lightning's SIGTERM flag, whose loop stops every rank
after the same finished batch; the checkpoint is then a state that training really passed through.
"""

import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class Preemption(Callback):
    """Args:
    dirpath: where ``last.ckpt`` goes (the run's ``checkpoints/``).
    requeue_signal: the signal SLURM sends ahead of the end (``#SBATCH --signal=USR1@90``).
    """

    def __init__(self, dirpath: str | Path, requeue_signal: str = "SIGUSR1") -> None:
        self.last = Path(dirpath) / "last.ckpt"
        self.requeue_signal = signal.Signals[requeue_signal]
        self.requeue = False
        self._trainer: L.Trainer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning has set its handlers, whose teardown restores the ones before them.
        self._trainer = trainer
        signal.signal(self.requeue_signal, self._on_requeue_signal)

    def _on_requeue_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping after this batch to requeue", signal.Signals(signum).name)
        self.requeue = True
        if self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = True

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.last)  # every rank takes part; rank 0 writes
        log.info(
            "stopped at epoch %d, step %d: wrote %s",
            trainer.current_epoch,
            trainer.global_step,
            self.last,
        )
        if self.requeue and trainer.is_global_zero:
            requeue_slurm_job()


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this job (this array task); where there is no scontrol (inside a
    container) the checkpoint is left for whoever restarts the job."""
    job = os.environ.get("SLURM_JOB_ID")
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if job is None:
        log.warning("not a SLURM job: nothing to requeue; resume=auto continues from last.ckpt")
        return
    if shutil.which("scontrol") is None:
        log.warning(
            "no scontrol here: SLURM job %s not requeued (sbatch --requeue restarts it "
            "on preemption; resume=auto continues from last.ckpt)",
            job,
        )
        return
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode == 0:
        log.info("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
