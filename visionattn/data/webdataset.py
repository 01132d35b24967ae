"""Image classification from WebDataset tar shards: for clusters where the dataset lives on shared
or object storage (mounted as a folder) and every node streams a few large files of its own rather
than opening a million small ones.

A shard is a tar of samples, each an image (``<key>.jpg``, ``<key>.png``, ...) and its class
index as text (``<key>.cls``). ``_info.json`` beside the shards lists every split's shards and
their lengths in timm's layout, plus the class names (``classes``), so timm's reader reads the same
shards. ``visionattn-shards SRC ROOT`` (:mod:`visionattn.data.write_shards`) writes them from an
ImageFolder tree.

Training: every epoch the shards are shuffled from (seed, epoch) alike on every rank and dealt in
turn to the loader workers of all ranks; each worker reads whole shards through a shuffle buffer.
Every worker yields the same number of samples, ``ceil(samples / (ranks x workers))`` rounded up
to whole batches (timm's rule), so every rank runs the same number of batches, as DDP needs: a
little more than one pass over the data. A worker whose shards run out reads them again in another
order; one whose shards hold more stops short, and what it did not reach waits for another epoch's
deal. Shards of one size, as many as a multiple of ranks x workers, keep that to a batch a worker.

Validation reads each shard once, in order, without shuffling. On one process that is every sample
exactly once. Under several ranks each rank reads its share of the shards (shard i on rank
i mod ranks): still every sample once overall, so the metrics, gathered at the epoch's end, are
exact, but the ranks run different numbers of batches. That is safe while a validation step holds
no collective of its own. Ours do not: the metrics and ``sync_dist`` reduce once, at the epoch's
end, and DDP's one collective in a forward without gradients is the buffer broadcast of the first
forward after training, which every rank with a batch makes. A rank without a shard would not, and
the others would wait on it: fewer validation shards than ranks is an error. (Lightning's sampler
for map-style data instead pads every rank to one length with repeated samples; whole shards
cannot be padded so.)
"""

import json
import logging
import math
import random
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from braceexpand import braceexpand
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.datasets.folder import IMG_EXTENSIONS
from webdataset.tariterators import group_by_keys, tar_file_iterator

from visionattn.data.classification import (
    ClassificationDataModule,
    class_indices,
    decode_image,
    labelled,
)
from visionattn.data.download import DatasetError

log = logging.getLogger(__name__)

INDEX = "_info.json"
# The extensions a sample's image may have, torchvision's (the writer stores no other).
IMAGE_EXTENSIONS = tuple(extension.lstrip(".") for extension in IMG_EXTENSIONS)
WRITER = "visionattn-shards SRC ROOT (python -m visionattn.data.write_shards SRC ROOT)"

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """A tar shard and the number of samples the index says it holds."""

    path: Path
    length: int


def read_shard(path: Path) -> Iterator[dict]:
    """The samples of a tar shard in file order: ``{extension: bytes}`` with WebDataset's
    ``__key__`` (the file names up to the first dot) and ``__url__``, the shard's name."""
    with path.open("rb") as stream:
        files = ({**file, "__url__": path.name} for file in tar_file_iterator(stream))
        yield from group_by_keys(files)


def shuffled(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """``items`` through a buffer of ``size``, each one out drawn at random from it: a shuffle
    that holds only ``size`` items at a time, and sends none out more than ``size - 1`` early."""
    buffer: list[T] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class ShardSamples(IterableDataset):
    """The samples of tar shards as samples of :func:`labelled`, on one rank of ``world_size``.

    Args:
        shards: the split's shards.
        labels: the class index the model uses for each class index the shards store.
        transform, strict: as :class:`~visionattn.data.classification.ImageFiles`.
        rank, world_size: this process's place among the training processes.
        num_workers: the loader workers reading this dataset on each rank (0 counts as 1, the
            training process).
    """

    def __init__(
        self,
        shards: Sequence[Shard],
        labels: Sequence[int],
        transform: Callable,
        strict: bool,
        rank: int,
        world_size: int,
        num_workers: int,
    ) -> None:
        self.shards, self.labels = list(shards), list(labels)
        self.transform, self.strict = transform, strict
        self.rank, self.world_size, self.num_workers = rank, world_size, max(1, num_workers)

    def worker(self) -> int:
        """This loader worker's index on its rank."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.num_workers:
            # The deal of shards, and the epoch's length, were made for num_workers.
            raise RuntimeError(f"built for {self.num_workers} loader workers, read by {workers}")
        return worker

    def read(self, shard: Shard) -> Iterator[dict]:
        """The samples of ``shard``; where it cannot be read (truncated, gone), those before the
        failure and a warning, or a DatasetError with ``strict``."""
        count = 0
        try:
            for sample in read_shard(shard.path):
                count += 1
                yield sample
        except (OSError, tarfile.TarError) as err:
            message = (
                f"unreadable shard {shard.path} after {count} of its {shard.length} samples "
                f"({type(err).__name__}: {err})"
            )
            if self.strict:
                raise DatasetError(
                    f"{message}; copy it again or write the shards again with {WRITER}, or set "
                    "data.strict=false to skip the rest of it with a warning"
                ) from None
            log.warning("%s: skipped the rest of it", message)

    def decode(self, sample: dict) -> dict:
        """A sample of :func:`labelled`, named ``<shard>/<key>.<extension>``."""
        where = f"{sample['__url__']}/{sample['__key__']}"
        extension = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if extension is None or "cls" not in sample:
            found = ", ".join(f".{k}" for k in sample if not k.startswith("__"))
            raise DatasetError(
                f"sample {where} holds {found or 'nothing'}: expected an image "
                f"(.{', .'.join(IMAGE_EXTENSIONS)}) and its class index (.cls), as {WRITER} "
                "writes them"
            )
        name = f"{where}.{extension}"
        text = sample["cls"].decode(errors="replace").strip()
        if not text.isdigit() or int(text) >= len(self.labels):
            raise DatasetError(
                f"sample {name} has class {text!r}, but the index lists {len(self.labels)} classes"
            )
        index = int(text)
        image = decode_image(sample[extension], name, self.strict)
        return labelled(image, self.labels[index], name, self.transform)


class TrainShards(ShardSamples):
    """The training samples: reshuffled shards every epoch, and the same number of samples from
    every worker of every rank (see the module's docstring).

    Args:
        batch_size: per rank; every worker's samples are a multiple of it.
        seed: with the epoch, the order of the shards and of each worker's samples.
        shuffle_buffer: samples each worker draws its next one from at random.
        next_epoch: the epoch of the first pass.
        **kwargs: see :class:`ShardSamples`.
    """

    def __init__(
        self, *, batch_size: int, seed: int, shuffle_buffer: int, next_epoch: int = 0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.batch_size, self.seed, self.shuffle_buffer = batch_size, seed, shuffle_buffer
        self.next_epoch = next_epoch
        # Batches of the next pass already trained (a run resumed mid-epoch), to leave out.
        self.skip_batches = 0
        # The epoch of the pass under way and the batches it leaves out: written by the training
        # process, read by the loader workers, persistent ones included, which hold copies of
        # everything else.
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.batches_done = torch.zeros((), dtype=torch.int64).share_memory_()
        workers = self.world_size * self.num_workers
        if len(self.shards) < workers:
            raise DatasetError(
                f"{len(self.shards)} training shards cannot feed {self.world_size} ranks x "
                f"{self.num_workers} loader workers (each worker reads whole shards): write "
                "smaller shards (visionattn-shards --shard-size) or set data.num_workers lower"
            )
        samples = sum(shard.length for shard in self.shards)
        if not samples:
            raise DatasetError(f"the training shards ({self.shards[0].path}, ...) hold no samples")
        self.per_worker = math.ceil(math.ceil(samples / workers) / batch_size) * batch_size

    def __len__(self) -> int:
        """The samples one rank yields an epoch; divided by the batch size, the epoch's length
        Lightning sees (``trainer.num_training_batches``)."""
        return self.per_worker * self.num_workers

    def begin_epoch(self) -> None:
        """In the training process, before a pass: makes it the next epoch's."""
        self.epoch.fill_(self.next_epoch)
        self.batches_done.fill_(self.skip_batches)
        self.next_epoch += 1
        self.skip_batches = 0

    def __iter__(self) -> Iterator[dict]:
        epoch, done = int(self.epoch), int(self.batches_done)
        # The loader takes batch i from worker i mod W. An epoch that resumes at batch d takes
        # its first from worker 0, so worker w plays the part of worker (w + d) mod W of the
        # uninterrupted pass: the same batches, in the same order, from the one after the last
        # trained. It leaves out the samples of the part's batches that were trained.
        part = (self.worker() + done) % self.num_workers
        trained = len(range(part, done, self.num_workers)) * self.batch_size
        shards = random.Random(f"shards {self.seed} {epoch}").sample(self.shards, len(self.shards))
        # Dealt in turn to every worker of every rank: rank 0's workers, then rank 1's, ...
        workers = self.world_size * self.num_workers
        mine = shards[self.rank * self.num_workers + part :: workers]
        rng = random.Random(f"samples {self.seed} {epoch} {self.rank} {part}")
        for sample in islice(self.passes(mine, rng), trained, self.per_worker):
            yield self.decode(sample)

    def passes(self, shards: list[Shard], rng: random.Random) -> Iterator[dict]:
        """The samples of ``shards`` through the shuffle buffer, and again, the shards in a new
        order, each time they run out: the buffer is emptied between passes, so every sample
        comes once before any comes twice."""
        while True:
            samples = chain.from_iterable(self.read(shard) for shard in shards)
            count = 0
            for sample in shuffled(samples, self.shuffle_buffer, rng):
                count += 1
                yield sample
            if not count:  # else the epoch would wait forever
                raise DatasetError(
                    f"no sample could be read from the training shards {shards[0].path}, ...: "
                    f"write them again with {WRITER}"
                )
            shards = rng.sample(shards, len(shards))


class ValShards(ShardSamples):
    """The validation samples: this rank's shards (every ``world_size``-th), each once, in order,
    dealt to its loader workers in turn. No ``__len__``: the workers' last batches are partial,
    so only reading tells how many batches there are, and Lightning reads to the end."""

    def __iter__(self) -> Iterator[dict]:
        mine = self.shards[self.rank :: self.world_size][self.worker() :: self.num_workers]
        for shard in mine:
            for sample in self.read(shard):
                yield self.decode(sample)


class _EpochLoader(DataLoader):
    """Starts each pass over the training shards as the next epoch: Lightning calls
    ``set_epoch`` only on a loader's sampler, and the loader of an IterableDataset has none."""

    def __iter__(self) -> Iterator[dict]:
        self.dataset.begin_epoch()
        return super().__iter__()


class WebDatasetDataModule(ClassificationDataModule):
    """WebDataset tar shards written by ``visionattn-shards``: ``root/train-000000.tar``, ...,
    ``root/val-000000.tar``, ... and ``root/_info.json``.

    The class names come from the index; once a checkpoint's class list is restored, each
    shard's class index is mapped through its name to the checkpoint's index.

    Args:
        root: the folder holding the shards and ``_info.json`` (a local or mounted path).
        train_shards, val_shards: brace patterns of shard files relative to ``root``
            (``train-{000000..000099}.tar``), each listed in the index; None: every shard the
            index lists for the split.
        shuffle_buffer: samples each loader worker holds (their undecoded bytes) to draw the next
            training sample from; the writer already mixed the classes across shards.
        download: shards are written, not downloaded; True fails with a message that says so.
        **kwargs: see :class:`ClassificationDataModule`.
    """

    train_set: TrainShards
    val_set: ValShards

    def __init__(
        self,
        root: str | Path,
        train_shards: str | None = None,
        val_shards: str | None = None,
        shuffle_buffer: int = 1000,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.train_shards, self.val_shards = train_shards, val_shards
        self.shuffle_buffer, self.download = shuffle_buffer, download

    def prepare_data(self) -> None:
        if self.download:
            raise DatasetError(
                f"WebDataset shards are not downloaded: write them into {self.root} from an "
                f"ImageFolder tree with {WRITER}, and set data.download=false"
            )

    def ranks(self) -> tuple[int, int]:
        """(rank, world size): the trainer's, torch.distributed's, or a single process's."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def index(self) -> dict:
        """The contents of ``root/_info.json``; a DatasetError where it or ``root`` is missing."""
        path = self.root / INDEX
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.root} does not exist: expected WebDataset shards and {INDEX} there. "
                f"Write them from an ImageFolder tree with {WRITER}"
            )
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing: expected the index of the shards in {self.root} there, as "
                f"{WRITER} writes it (write the shards with it, or copy the index with them)"
            )
        try:
            info = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DatasetError(f"{path} is not JSON ({err}): write it with {WRITER}") from None
        if not isinstance(info, dict) or "classes" not in info or "splits" not in info:
            raise DatasetError(
                f"{path} lacks 'classes' or 'splits': expected the index {WRITER} writes (timm's "
                "_info.json with the class names added)"
            )
        return info

    def shards(self, info: dict, split: str, pattern: str | None) -> list[Shard]:
        """The shards of ``split`` (``pattern``'s, or all the index lists) with their lengths."""
        where = self.root / INDEX
        splits = info["splits"]
        lengths = {
            name: length
            for entry in splits.values()
            for name, length in zip(entry["filenames"], entry["shard_lengths"], strict=True)
        }
        if pattern is not None:
            names = list(braceexpand(pattern))
            unknown = [name for name in names if name not in lengths]
            if unknown:
                raise DatasetError(
                    f"data.{split}_shards={pattern} names {unknown[0]}, which {where} does not "
                    f"list (it lists {', '.join(list(lengths)[:3])}, ...)"
                )
        elif split in splits:
            names = splits[split]["filenames"]
        else:
            raise DatasetError(
                f"{where} lists no {split} split (only {', '.join(splits) or 'none'}): write it "
                f"with visionattn-shards --splits, or name its shards with data.{split}_shards"
            )
        missing = [name for name in names if not (self.root / name).is_file()]
        if missing:
            raise DatasetError(
                f"{self.root / missing[0]} is missing ({len(missing)} of the {len(names)} {split} "
                f"shards are): copy every shard {where} lists, or write them again with {WRITER}"
            )
        return [Shard(self.root / name, lengths[name]) for name in names]

    def labels(self, classes: Sequence[str]) -> list[int]:
        """The model's index of each class the shards store, by name."""
        assert self.classes is not None
        return class_indices(classes, self.classes, f"the shards in {self.root}")

    def setup(self, stage: str | None = None) -> None:
        info = self.index()
        if self.classes is None:
            self.set_classes(info["classes"], str(self.root / INDEX))
        rank, world_size = self.ranks()
        common = dict(
            labels=self.labels(info["classes"]),
            strict=self.strict,
            rank=rank,
            world_size=world_size,
            num_workers=self.num_workers,
        )
        if stage in (None, "fit"):
            self.train_set = TrainShards(
                shards=self.shards(info, "train", self.train_shards),
                transform=self.train_transform,
                batch_size=self.batch_size,
                seed=self.seed,
                shuffle_buffer=self.shuffle_buffer,
                next_epoch=self._start_epoch,
                **common,
            )
        val = self.shards(info, "val", self.val_shards)
        if len(val) < world_size:
            raise DatasetError(
                f"{len(val)} validation shards cannot give each of {world_size} ranks one (a "
                "rank without one would leave the others waiting): write smaller shards "
                "(visionattn-shards --shard-size)"
            )
        self.val_set = ValShards(shards=val, transform=self.val_transform, **common)

    def train_dataloader(self) -> DataLoader:
        # A loader that begins the next epoch on every pass: nothing else tells the shards when an
        # epoch begins.
        return self._loader(self.train_set, loader_class=_EpochLoader)

    def train_epochs(self) -> tuple[int, int] | None:
        if not hasattr(self, "train_set"):
            return None
        return self.train_set.next_epoch - 1, self.train_set.next_epoch

    def state_dict(self) -> dict:
        # The batches of an epoch are dealt to the workers: their number fixes which is whose.
        return {**super().state_dict(), "num_workers": self.num_workers}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        saved = state_dict.get("num_workers", self.num_workers)
        if self._skip_batches and max(1, saved) != max(1, self.num_workers):
            raise DatasetError(
                f"the checkpoint stopped {self._skip_batches} batches into an epoch read by "
                f"{saved} loader workers a rank, and this run has data.num_workers="
                f"{self.num_workers}: resume it with data.num_workers={saved} (the epoch's "
                "batches were dealt to that many)"
            )
        if hasattr(self, "train_set"):
            self.train_set.next_epoch = self._start_epoch
            self.train_set.skip_batches = self._skip_batches
