"""Writes an ImageFolder tree as the WebDataset shards :mod:`visionattn.data.webdataset` reads::

    visionattn-shards SRC OUT [--shard-size 1000] [--splits train val] [--seed 0]
    python -m visionattn.data.write_shards SRC OUT ...

``SRC/train/<class>/<image>`` and ``SRC/val/<class>/<image>`` become ``OUT/train-000000.tar``, ...
and ``OUT/val-000000.tar``, ...: each sample the image file's bytes as they are (``<key>.jpg``;
nothing re-encoded, so nothing is lost, and a corrupt file stays one, to be skipped when read)
and its class index as text (``<key>.cls``). ``.jpeg`` files are stored as ``.jpg``, the name
timm's reader looks for. The key is the image's path in its split without the extension
(``n01440764/n01440764_10026``), dots made underscores: WebDataset's key ends at the first dot.
``OUT/_info.json`` lists each split's shards and their lengths in timm's layout, and the class
names: the training split's folders, sorted; every other split's folders must be among them.

The training images are written in an order shuffled from ``--seed``, so that each shard mixes the
classes, as the training loader's shuffle buffer, far smaller than a class, cannot; the other
splits keep their folders' order.
"""

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

from webdataset import TarWriter

from visionattn.data.download import DatasetError
from visionattn.data.imagefolder import class_folders, folder_samples
from visionattn.data.webdataset import INDEX

# The extension ImageNet's .JPEG files are stored under: the one timm's reader looks for.
JPEG = "jpg"


def sample_key(path: Path, split: Path) -> str:
    """The image's path in ``split`` without its extension, dots in its name made underscores."""
    relative = path.relative_to(split)
    return (relative.parent / relative.stem.replace(".", "_")).as_posix()


def split_samples(src: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    """The (image, class index) pairs of ``src/split``, in its folders' sorted order."""
    folder = src / split
    if not folder.is_dir():
        raise DatasetError(
            f"{folder} does not exist: expected {split}/<class>/<image> in {src} (name the splits "
            "there are with --splits)"
        )
    return [(Path(path), label) for path, label in folder_samples(folder, classes)]


def write_split(
    samples: Sequence[tuple[Path, int]], folder: Path, out: Path, split: str, shard_size: int
) -> dict:
    """Writes ``samples`` into ``out/<split>-000000.tar``, ... of ``shard_size`` each; returns
    the split's entry of the index."""
    filenames, lengths, keys = [], [], set()
    for start in range(0, len(samples), shard_size):
        name = f"{split}-{len(filenames):06d}.tar"
        chunk = samples[start : start + shard_size]
        # A fixed mtime: the same tree and seed give the same shards, byte for byte.
        with (out / name).open("wb") as stream, TarWriter(stream, encoder=False, mtime=0) as tar:
            for path, label in chunk:
                key = base = sample_key(path, folder)
                copy = 0
                while key in keys:  # a.b.jpg and a_b.jpg would share a key
                    copy += 1
                    key = f"{base}_{copy}"
                keys.add(key)
                extension = JPEG if path.suffix.lower() == ".jpeg" else path.suffix.lower()[1:]
                tar.write({"__key__": key, extension: path.read_bytes(), "cls": b"%d" % label})
        filenames.append(name)
        lengths.append(len(chunk))
        size = (out / name).stat().st_size / 1e6
        print(f"{out / name}: {len(chunk)} images, {size:.1f} MB")
    return {
        "name": split,
        "num_samples": len(samples),
        "filenames": filenames,
        "shard_lengths": lengths,
    }


def write_shards(
    src: str | Path,
    out: str | Path,
    shard_size: int = 1000,
    splits: Sequence[str] = ("train", "val"),
    seed: int = 0,
) -> dict:
    """Writes the ``splits`` of the ImageFolder tree ``src`` as shards of ``shard_size`` images
    into ``out``, and the index last, so that an interrupted run leaves no index; returns the
    index. ``out`` may exist but must hold no shards or index: old shards would mix with new."""
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.is_dir():
        raise DatasetError(
            f"{src} does not exist: expected an ImageFolder tree there, "
            "train/<class>/<image> and val/<class>/<image>"
        )
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, not {shard_size}")
    old = sorted(out.glob("*.tar")) + sorted(out.glob(INDEX))
    if old:
        raise DatasetError(
            f"{out} already holds shards or an index ({old[0].name}, ...): write into an empty "
            "folder, or delete them first"
        )
    classes = class_folders(src / "train")
    # Every split's folders are checked before anything is written.
    planned = {split: split_samples(src, split, classes) for split in splits}
    out.mkdir(parents=True, exist_ok=True)
    info: dict = {"name": src.name, "classes": classes, "splits": {}}
    for split, samples in planned.items():
        if split == "train":
            random.Random(seed).shuffle(samples)
        entry = write_split(samples, src / split, out, split, shard_size)
        info["splits"][split] = entry
        print(
            f"{split}: {entry['num_samples']} images of {len(classes)} classes in "
            f"{len(entry['filenames'])} shards"
        )
    (out / INDEX).write_text(json.dumps(info, indent=1) + "\n")
    print(
        f"index: {out / INDEX}\ntrain with: python train.py data=webdataset data.root={out} "
        f"data.num_classes={len(classes)}"
    )
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="visionattn-shards",
        description="Write an ImageFolder tree (SRC/train/<class>/<image>, SRC/val/...) as "
        "WebDataset tar shards and their index (OUT/_info.json), for data=webdataset.",
    )
    parser.add_argument("src", type=Path, help="the ImageFolder tree")
    parser.add_argument("out", type=Path, help="the folder to write into (created if missing)")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=1000,
        help="images a shard (default 1000: about 110 MB of ImageNet's JPEGs); every loader "
        "worker of every rank needs a training shard of its own",
    )
    parser.add_argument(
        "--splits", nargs="+", default=["train", "val"], help="the folders of SRC to write"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the training images' order")
    args = parser.parse_args(argv)
    if args.shard_size < 1:
        parser.error("--shard-size must be at least 1")
    try:
        write_shards(args.src, args.out, args.shard_size, args.splits, args.seed)
    except DatasetError as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")


if __name__ == "__main__":
    main()
