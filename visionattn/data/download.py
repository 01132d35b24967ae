"""Dataset files that are missing or cannot be fetched: one error that says what was expected
where, and a download that turns every failure (offline, truncated, wrong checksum) into it."""

from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive


class DatasetError(Exception):
    """A dataset's files are missing, incomplete or not in the expected layout; says what was
    expected where."""


def download(url: str, root: Path, what: str, where: str, md5: str | None = None) -> None:
    """Downloads and extracts ``url`` into ``root``; any failure becomes a DatasetError that
    says which file to fetch by hand and where it goes (``where``: what it unpacks to)."""
    try:
        download_and_extract_archive(url, download_root=str(root), md5=md5)
    # Offline, a truncated archive, a wrong checksum: each ends the same way, fetching it by hand.
    except Exception as err:
        raise DatasetError(
            f"could not download {what} ({type(err).__name__}: {err}). Fetch {url} by hand and "
            f"extract it into {root}, so that {where} exists"
        ) from None
