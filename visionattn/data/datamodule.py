"""What every dataset's LightningDataModule shares: loaders, and a shuffle a resumed run repeats."""

from collections.abc import Sequence
from functools import partial

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2


class _EpochSampler(DistributedSampler):
    """A DistributedSampler that remembers which epoch's order comes after the one it drew."""

    next_epoch = 0

    def __iter__(self):
        self.next_epoch = self.epoch + 1
        return super().__iter__()


class ImageDataModule(L.LightningDataModule):
    """Subclasses set ``num_classes`` and build ``train_set`` and ``val_set`` in ``setup``.

    Batches are dicts: ``image`` float (B, 3, H, W), normalised; ``label`` (B,); ``mask`` where the
    dataset has one.

    Args:
        batch_size: per device.
        num_workers: loader processes per device; 0 loads in the training process.
        seed: the training order's, and the loader workers' random streams (augmentation).
        mean, std: normalisation.
        pin_memory: page-locked batches for faster copies to the GPU; None: where CUDA is.
        persistent_workers: keep the workers between epochs (and their random streams going).
        prefetch_factor: batches each worker loads ahead; None: torch's default (2).
    """

    # What the batches are for; a task refuses data of another kind before training starts.
    kind = "classification"
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
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.mean, self.std = tuple(mean), tuple(std)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self._train_sampler: _EpochSampler | None = None
        self._start_epoch = 0
        self.normalize = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )

    def train_dataloader(self) -> DataLoader:
        world_size, rank = (
            (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        )
        # The order is a function of (seed, epoch); Lightning calls set_epoch every epoch.
        sampler = _EpochSampler(self.train_set, world_size, rank, seed=self.seed, drop_last=True)
        # Lightning 2.6 draws the first batch of a resumed run before it calls set_epoch
        # (Lightning-AI/pytorch-lightning#21938), so the resumed epoch comes from our own state.
        sampler.set_epoch(self._start_epoch)
        self._train_sampler = sampler
        return self._loader(self.train_set, sampler=sampler, drop_last=True)

    def state_dict(self) -> dict:
        """Saved in checkpoints and restored before any batch is drawn: the next epoch's order."""
        sampler = self._train_sampler
        return {"next_train_epoch": sampler.next_epoch if sampler else self._start_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self._start_epoch = state_dict["next_train_epoch"]

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

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
