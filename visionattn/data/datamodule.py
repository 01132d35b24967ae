"""What every dataset's LightningDataModule shares: loaders, a shuffle that a resumed run repeats
from the batch it stopped at, and validation that sees each image once on any number of ranks."""

import os
import warnings
from collections.abc import Iterator, Sequence
from functools import partial

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from visionattn.data.download import DatasetError


def positive(key: str, value: object, minimum: int = 1) -> int:
    """``value`` as a config's whole number >= ``minimum``; a ValueError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    return value


def cpus() -> int:
    """The CPUs this process may run on (its affinity: a SLURM or container share, not the
    machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def no_full_batch(batch_size: int | None) -> DatasetError:
    """The error of a training split smaller than one batch (its partial batch is dropped)."""
    return DatasetError(
        f"no full training batch: the training split holds fewer images than "
        f"data.batch_size={batch_size} (the last, partial batch is dropped): lower "
        "data.batch_size, or add images"
    )


class _EpochSampler(DistributedSampler):
    """A DistributedSampler that remembers which epoch's order comes after the one it drew, and
    can start its next pass some batches in (a run resumed mid-epoch)."""

    next_epoch = 0
    skip = 0  # indices to leave out at the start of the next pass

    def __iter__(self) -> Iterator[int]:
        self.next_epoch = self.epoch + 1
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter(indices)


class _ValSampler(DistributedSampler):
    """Rank r of R takes images r, r + R, ...: every image once, none repeated.

    Lightning's own DistributedSampler pads the ranks to equal length by repeating images, which
    counts them twice in the metrics. Unequal batch counts are safe because no validation step
    holds a collective: metrics and logged means are reduced once, at the epoch's end.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class ImageDataModule(L.LightningDataModule):
    """Subclasses set ``num_classes`` and build ``train_set`` and ``val_set`` in ``setup``.

    Batches are dicts: ``image`` float (B, 3, H, W), normalised; ``label`` (B,); ``mask`` where the
    dataset has one.

    Args:
        batch_size: per device.
        num_workers: loader processes per device, at most one a CPU the process may use (more
            only compete with the training process, and PyTorch warns that they may freeze);
            0 loads in the training process.
        seed: the training order's, and the loader workers' random streams (augmentation).
        mean, std: normalisation.
        pin_memory: page-locked batches for faster copies to the GPU; None: where CUDA is.
        persistent_workers: keep the workers between epochs (and their random streams going).
        prefetch_factor: batches each worker loads ahead; None: torch's default (2).
    """

    # What the batches are for; a task refuses data of another kind before training starts.
    kind = "classification"
    # Validation's batch size where it is not training's.
    val_batch_size: int | None = None
    num_classes: int
    train_set: Dataset
    val_set: Dataset

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 2,
        seed: int = 0,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = positive("data.batch_size", batch_size)
        self.num_workers = min(positive("data.num_workers", num_workers, minimum=0), cpus())
        self.seed = seed
        self.mean, self.std = tuple(mean), tuple(std)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self._train_sampler: _EpochSampler | None = None
        self._start_epoch = 0
        self._skip_batches = 0
        self.normalize = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )

    def check(self) -> None:
        """Everything about the data that can fail, done before any logger, trainer or file of
        the run starts: the files are there and readable, the classes found. A DatasetError
        names what is wrong. The trainer builds the splits again, on every rank."""
        if getattr(self, "download", False):
            return  # the trainer downloads once a node, in prepare_data
        self.prepare_data()
        self.setup("fit")
        if len(self.train_set) < self.batch_size:  # type: ignore[arg-type]
            raise no_full_batch(self.batch_size)

    def train_dataloader(self) -> DataLoader:
        world_size, rank = (
            (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        )
        # The order is a function of (seed, epoch); Lightning calls set_epoch every epoch.
        sampler = _EpochSampler(self.train_set, world_size, rank, seed=self.seed, drop_last=True)
        # Lightning 2.6 draws the first batch of a resumed run before it calls set_epoch
        # (Lightning-AI/pytorch-lightning#21938), so the resumed epoch comes from our own state.
        sampler.set_epoch(self._start_epoch)
        sampler.skip = self._skip_batches * self.batch_size
        self._train_sampler = sampler
        # The sampler resumes mid-epoch at the batch after the last one trained, which is what
        # Lightning's warning about loaders without a state_dict doubts.
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")
        return self._loader(self.train_set, sampler=sampler, drop_last=True)

    def state_dict(self) -> dict:
        """Saved in checkpoints and restored before any batch is drawn: where the training order
        stands, as the epoch to draw next and how many of its batches were trained already."""
        epochs, trainer = self.train_epochs(), self.trainer
        if epochs is None:
            return {"next_train_epoch": self._start_epoch, "train_batches_done": 0}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed if trainer else 0
        if 0 < done < trainer.num_training_batches:  # saved mid-epoch, e.g. on SIGTERM
            return {"next_train_epoch": epochs[0], "train_batches_done": done}
        return {"next_train_epoch": epochs[1], "train_batches_done": 0}

    def train_epochs(self) -> tuple[int, int] | None:
        """(the epoch whose order the training loader draws, the one after), once it draws."""
        sampler = self._train_sampler
        return None if sampler is None else (sampler.epoch, sampler.next_epoch)

    def load_state_dict(self, state_dict: dict) -> None:
        self._start_epoch = state_dict["next_train_epoch"]
        self._skip_batches = state_dict.get("train_batches_done", 0)

    def val_dataloader(self) -> DataLoader:
        world_size, rank = (
            (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        )
        batch_size = self.val_batch_size
        if world_size == 1:
            return self._loader(self.val_set, batch_size)
        sampler = _ValSampler(self.val_set, world_size, rank)
        return self._loader(self.val_set, batch_size, sampler=sampler)

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int | None = None,
        loader_class: type[DataLoader] = DataLoader,
        **kwargs,
    ) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        workers = self.num_workers > 0
        return loader_class(
            dataset,
            batch_size=batch_size or self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers,
            prefetch_factor=self.prefetch_factor if workers else None,
            # Each worker's torch, Python and NumPy generators from its base seed, id and rank
            # (timm's RandAugment draws from Python's), whether or not seed_everything ran.
            worker_init_fn=partial(pl_worker_init_function, rank=rank),
            # The base seed: a function of data.seed alone, not of how much of the global
            # generator the model's initialisation drew.
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )
