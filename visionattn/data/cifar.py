"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) in their python batch format, read by torchvision.

``data.root`` is the folder holding ``cifar-10-batches-py/`` (or ``cifar-100-python/``), or that
folder itself. The batches are pickles: torchvision checks each file's MD5 against the official
release before unpickling it, and so do we, since a pickle can run code.
"""

from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_md5

from visionattn.data.classification import ClassificationDataModule, ImageLabelPairs
from visionattn.data.download import DatasetError, download

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images of 32x32, 10 classes; validation is the
    test batch, as in the papers.

    Args:
        root: the folder holding ``cifar-10-batches-py/``, or that folder.
        download: fetch the archive (163 MB) into ``root`` if the batches are not there.
        **kwargs: see :class:`ClassificationDataModule`; CIFAR's crop by default (32 px, padded
            by 4, no resize).
    """

    dataset = CIFAR10
    title = "CIFAR-10"

    def __init__(self, root: str | Path, download: bool = False, **kwargs: Any) -> None:
        kwargs = {
            "image_size": 32,
            "crop_padding": 4,
            "crop_pct": 1.0,
            "mean": CIFAR_MEAN,
            "std": CIFAR_STD,
            **kwargs,
        }
        super().__init__(**kwargs)
        root = Path(root).expanduser()
        self.root = root.parent if root.name == self.dataset.base_folder else root
        self.folder = self.root / self.dataset.base_folder
        self.download = download

    def files(self) -> list[tuple[Path, str]]:
        """Every file of the batches folder and its official MD5."""
        listed = self.dataset.train_list + self.dataset.test_list
        listed = [*listed, (self.dataset.meta["filename"], self.dataset.meta["md5"])]
        return [(self.folder / name, md5) for name, md5 in listed]

    def check(self) -> None:
        """A DatasetError naming the first file that is missing or not the official one."""
        for path, md5 in self.files():
            if not path.is_file():
                raise DatasetError(
                    f"{self.title} not found: {path} is missing. Set data.download=true, or fetch "
                    f"{self.dataset.url} and extract it into {self.root}, so that {self.folder} "
                    "exists"
                )
            if not check_md5(str(path), md5):
                raise DatasetError(
                    f"{path} is not {self.title}'s official file (its MD5 differs): delete "
                    f"{self.folder} and download it again (data.download=true)"
                )

    def prepare_data(self) -> None:
        if self.download and not all(path.is_file() for path, _ in self.files()):
            download(
                self.dataset.url, self.root, self.title, str(self.folder), self.dataset.tgz_md5
            )

    def setup(self, stage: str | None = None) -> None:
        self.check()
        if stage in (None, "fit"):
            train = self.dataset(str(self.root), train=True)
            self.train_set = ImageLabelPairs(train, self.train_transform)
        val = self.dataset(str(self.root), train=False)
        self.set_classes(val.classes, str(self.folder))
        self.val_set = ImageLabelPairs(val, self.val_transform)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100: as CIFAR-10 with 100 classes (the fine labels), in ``cifar-100-python/``."""

    dataset = CIFAR100
    title = "CIFAR-100"
