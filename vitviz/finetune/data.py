"""Labelled image sets for fine-tuning: ImageFolder layouts, the built-in shapes, counts and splits."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vitviz.finetune.digits import BUILTIN_DIGITS, digits_folder
from vitviz.finetune.safezip import ZipSource, inspect_image_zip, is_image_name
from vitviz.finetune.shapes import SHAPE_CLASSES, SHAPES_PER_CLASS, draw_shape, shape_rng
from vitviz.images import ImageDecodeError, decode_image, load_image_file
from vitviz.roots import confined
from vitviz.text import printable_clipped

__all__ = [
    "BUILTIN_SHAPES",
    "MAX_SCANNED_FILES",
    "SAMPLE_CLASSES",
    "DataError",
    "DataSummary",
    "ImageItem",
    "ImageSet",
    "Split",
    "builtin_shapes",
    "folder_layout",
    "limit_images",
    "limited_indices",
    "open_image_set",
    "planned_split",
    "scan_image_folder",
    "split_train_val",
    "summarize",
    "summarize_zip",
    "walk_folder",
]

BUILTIN_SHAPES = "builtin:shapes"
_IGNORED_PARTS = ("__MACOSX",)  # folders that archivers add beside the real content
# Files a folder scan looks at before giving up: a data set, not a disk (20,000 zip entries at most).
MAX_SCANNED_FILES = 200_000
# Classes a summary draws samples of: a page shows a handful, and 10,000 classes must stay cheap.
SAMPLE_CLASSES = 16


class DataError(ValueError):
    """Images that cannot be trained on; ``str(error)`` says why, for a user."""


@dataclass(frozen=True)
class ImageItem:
    """One labelled image: a file on disk or a generated picture, named by a stable key."""

    key: str  # "class/file.png", relative to the class root; stable across reruns
    label: int  # index into the set's classes
    path: Path | None = None  # the file, for folders
    shape_seed: int | None = None  # the seed, for builtin:shapes (drawn again on demand)

    def load(self) -> Image.Image:
        """The picture as RGB.

        Raises:
            DataError: the file is not a readable image (the message names it).
        """
        if self.path is None:
            shape, index = self.key.split("/")
            return draw_shape(shape, shape_rng(self.shape_seed or 0, shape, int(Path(index).stem)))
        try:
            return load_image_file(self.path, shown_as=self.key)
        except ImageDecodeError as error:
            message = str(error)
            # A file that cannot be read is already named (by its key, never its server path);
            # a decoding problem says only what is wrong with the picture.
            raise DataError(message if self.key in message else f"{self.key}: {message}") from error


@dataclass(frozen=True)
class ImageSet:
    """Labelled images of an ImageFolder layout (one folder per class) or of builtin:shapes."""

    source: str  # "builtin:shapes" or the folder the user gave
    root: Path | None  # the folder holding the class folders; None for generated images
    classes: tuple[str, ...]  # class names, sorted; labels index into them
    items: tuple[ImageItem, ...]
    skipped: tuple[str, ...] = field(default=())  # files left out: not images, or outside a class folder

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counts = Counter(self.labels)
        return {name: counts[index] for index, name in enumerate(self.classes)}

    def item(self, key: str) -> ImageItem:
        for item in self.items:
            if item.key == key:
                return item
        raise KeyError(f"no image {key!r} in {self.source}")


@dataclass(frozen=True)
class Split:
    """Indices into a set's items, held out per class so every class is in both parts."""

    train: tuple[int, ...]
    val: tuple[int, ...]


@dataclass(frozen=True)
class DataSummary:
    """What a page shows about a data source before training: classes, counts, a few samples."""

    source: str
    classes: tuple[str, ...]
    counts: dict[str, int]  # images per class
    samples: tuple[tuple[str, Image.Image], ...]  # (class, picture), a few per class
    skipped: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def builtin_shapes(per_class: int = SHAPES_PER_CLASS, seed: int = 0) -> ImageSet:
    """The generated shapes as an image set; pictures are drawn when loaded."""
    items = tuple(
        ImageItem(f"{shape}/{index:03d}.png", label, shape_seed=seed)
        for index in range(per_class)
        for label, shape in enumerate(SHAPE_CLASSES)
    )
    return ImageSet(BUILTIN_SHAPES, None, SHAPE_CLASSES, items)


def _hidden(parts: Sequence[str]) -> bool:
    return any(part.startswith(".") or part in _IGNORED_PARTS for part in parts)


def folder_layout(relative_paths: Iterable[str]) -> tuple[str, dict[str, list[str]], list[str]]:
    """Reads class folders from file paths, the way torchvision's ImageFolder does.

    One wrapping folder around the class folders (as zipping a folder makes) is looked through.
    Images may sit in sub-folders of their class folder.

    Args:
        relative_paths: "/"-separated file paths below the root.

    Returns:
        (prefix of the class root, e.g. "shapes/" or "", class name -> image paths, skipped paths).
    """
    paths = sorted(relative_paths)
    skipped = [path for path in paths if _hidden(path.split("/"))]
    visible = [path.split("/") for path in paths if not _hidden(path.split("/"))]
    # The wrapper is read from the images alone: a README beside the class folders must not hide it.
    images = [parts for parts in visible if is_image_name(parts[-1])]
    prefix: list[str] = []
    while images and all(len(parts) >= 3 for parts in images) and len({parts[0] for parts in images}) == 1:
        prefix.append(images[0][0])
        images = [parts[1:] for parts in images]
    classes: dict[str, list[str]] = {}
    for parts in visible:
        path = "/".join(parts)
        inside = parts[: len(prefix)] == prefix
        below = parts[len(prefix) :]
        if not inside or len(below) < 2 or not is_image_name(parts[-1]):
            skipped.append(path)  # not an image, or an image lying outside any class folder
            continue
        classes.setdefault(below[0], []).append(path)
    root = "".join(f"{part}/" for part in prefix)
    return root, dict(sorted(classes.items())), sorted(skipped)


def _check_classes(classes: dict[str, list[str]], source: str) -> None:
    if len(classes) < 2:
        found = f"only {next(iter(classes))!r}" if classes else "none"
        raise DataError(
            f"{source}: need at least two class folders with images (found {found}). Lay the images "
            "out as one folder per class: cats/001.jpg, dogs/001.jpg, ..."
        )


def scan_image_folder(
    folder: str | Path, *, shown_as: str | None = None, inside: Path | None = None
) -> ImageSet:
    """The image set of a folder of class folders; files that are not images are skipped and listed.

    Args:
        folder: the folder of class folders.
        shown_as: how the set and its messages name the folder (default: the path as given); a
            served app names it relative to its data root.
        inside: when given, files whose real path lies outside this folder (links out of it) are
            skipped.

    Raises:
        DataError: the folder is missing, holds more than MAX_SCANNED_FILES files, or has fewer
            than two class folders with images.
    """
    shown = printable_clipped(str(folder), 160) if shown_as is None else shown_as
    folder, relative, left_out = walk_folder(folder, shown, inside)
    prefix, classes, skipped = folder_layout(relative)
    _check_classes(classes, shown)
    root = folder / prefix if prefix else folder
    names = tuple(classes)
    items = tuple(
        ImageItem(path.removeprefix(prefix), label, path=folder / path)
        for label, name in enumerate(names)
        for path in classes[name]
    )
    return ImageSet(shown, root, names, items, tuple(sorted([*skipped, *left_out])))


def walk_folder(
    folder: str | Path, shown: str, inside: Path | None = None
) -> tuple[Path, list[str], list[str]]:
    """(the folder, "/"-separated paths of the files under it, the files left out of them).

    Left out: files that lead outside `inside`, and files whose path is not UTF-8 text (a class
    name must be one a page can show and config.json can hold); these are shown with "\ufffd"
    for the bytes that are not. `shown` is how messages name the folder.

    Raises:
        DataError: not a folder here (also a name too long or with a NUL byte in it), or more than
            MAX_SCANNED_FILES files and folders: a disk, not a data set.
    """
    try:
        folder = Path(folder).expanduser()
        found = folder.is_dir()
    except (OSError, ValueError):  # a name too long for the file system, or a NUL byte in it
        found = False
    if not found:
        raise DataError(f"{shown} is not a folder on this machine.")
    boundary = inside.resolve() if inside is not None else None
    relative: list[str] = []
    left_out: list[str] = []
    visited = 0
    for directory, _, files in os.walk(folder):
        visited += 1 + len(files)
        if visited > MAX_SCANNED_FILES:
            raise DataError(
                f"{shown} holds more than {MAX_SCANNED_FILES:,} files; pick a folder of class folders."
            )
        base = Path(directory).relative_to(folder)
        for name in files:
            path = (base / name).as_posix()
            readable = os.fsencode(path).decode("utf-8", errors="replace")
            if readable != path:
                left_out.append(f"{readable} (its name is not UTF-8 text)")
                continue
            # os.walk does not descend into linked folders; linked files are checked here.
            leads_out = boundary is not None and _links_outside(folder / path, boundary)
            (left_out if leads_out else relative).append(path)
    return folder, relative, left_out


def _links_outside(path: Path, boundary: Path) -> bool:
    return path.is_symlink() and confined(path.absolute(), boundary) is None


def open_image_set(spec: str) -> ImageSet:
    """The image set named by a data argument: "builtin:shapes" or a folder of class folders.

    Zips are extracted first (see vitviz.finetune.safezip) and opened as their folder.
    """
    if spec == BUILTIN_SHAPES:
        return builtin_shapes()
    if spec == BUILTIN_DIGITS:
        return scan_image_folder(digits_folder(), shown_as=BUILTIN_DIGITS)
    if spec.startswith("builtin:"):
        raise DataError(f"Unknown built-in data set {spec!r}; the built-in one is {BUILTIN_SHAPES}.")
    if spec.lower().endswith(".zip"):
        raise DataError(f"{spec} is a zip: extract it with extract_image_zip first.")
    return scan_image_folder(spec)


def _indices_by_class(labels: Sequence[int]) -> dict[int, list[int]]:
    """{label: its indices in `labels`, ascending}, in one pass (10,000 classes are not 10,000 passes)."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    return by_class


def limited_indices(labels: Sequence[int], max_images: int | None, seed: int = 0) -> list[int]:
    """Indices of at most `max_images` of `labels`, the same share of every class, chosen by `seed`.

    Raises:
        DataError: `max_images` is smaller than the number of classes.
    """
    total = len(labels)
    if max_images is None or max_images >= total:
        return list(range(total))
    by_class = _indices_by_class(labels)
    if max_images < len(by_class):
        raise DataError(f"max images {max_images} is fewer than the {len(by_class)} classes.")
    # Largest classes get the leftover images first, so the quotas add up to max_images exactly.
    quotas = {label: max(1, len(indices) * max_images // total) for label, indices in by_class.items()}
    quota_total = sum(quotas.values())
    for label in sorted(by_class, key=lambda label: (-len(by_class[label]), label)):
        if quota_total >= max_images:
            break
        if quotas[label] < len(by_class[label]):
            quotas[label] += 1
            quota_total += 1
    rng = random.Random(seed)
    kept: list[int] = []
    for label, indices in sorted(by_class.items()):
        kept.extend(rng.sample(indices, min(quotas[label], len(indices))))
    return sorted(kept)


def limit_images(image_set: ImageSet, max_images: int | None, seed: int = 0) -> ImageSet:
    """Keeps at most `max_images` images, the same share of every class, chosen by `seed`."""
    kept = limited_indices(image_set.labels, max_images, seed)
    if len(kept) == len(image_set.items):
        return image_set
    items = tuple(image_set.items[index] for index in kept)
    return ImageSet(image_set.source, image_set.root, image_set.classes, items, image_set.skipped)


def split_train_val(labels: Sequence[int], val_fraction: float, seed: int = 0) -> Split:
    """Holds out `val_fraction` of every class (at least one image of classes with two or more).

    Raises:
        DataError: no image is left for validation or for training.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"The validation fraction must lie between 0 and 1, got {val_fraction}.")
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    by_class = _indices_by_class(labels)
    for label in sorted(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        held = 0 if len(indices) < 2 else min(len(indices) - 1, max(1, round(len(indices) * val_fraction)))
        val.extend(indices[:held])
        train.extend(indices[held:])
    if not val or not train:
        raise DataError(f"{len(labels)} images are too few to hold some out for validation.")
    return Split(tuple(sorted(train)), tuple(sorted(val)))


def planned_split(
    counts: Mapping[str, int], max_images: int | None, val_fraction: float, seed: int = 0
) -> Split:
    """The split a run will make of a set with these class counts (as indices into the kept images)."""
    labels = [label for label, name in enumerate(counts) for _ in range(counts[name])]
    kept = limited_indices(labels, max_images, seed)
    return split_train_val([labels[index] for index in kept], val_fraction, seed)


def summarize(
    image_set: ImageSet, samples_per_class: int = 3, sample_classes: int = SAMPLE_CLASSES
) -> DataSummary:
    """Counts, and the first few pictures of each of the first `sample_classes` classes."""
    firsts: dict[int, list[ImageItem]] = {}
    for item in image_set.items:  # one pass, however many classes
        chosen = firsts.setdefault(item.label, [])
        if item.label < sample_classes and len(chosen) < samples_per_class:
            chosen.append(item)
    samples = [
        (name, item.load())
        for label, name in enumerate(image_set.classes[:sample_classes])
        for item in firsts.get(label, [])
    ]
    return DataSummary(
        image_set.source, image_set.classes, image_set.class_counts(), tuple(samples), image_set.skipped
    )


def summarize_zip(
    source: ZipSource, name: str, samples_per_class: int = 3, sample_classes: int = SAMPLE_CLASSES
) -> DataSummary:
    """Checks an uploaded archive and summarises it without extracting anything.

    One pass over the archive: it is opened once, every image is decompressed once, and the
    samples' bytes are kept from that same pass.

    Raises:
        UnsafeArchiveError: the archive was refused as a whole.
        DataError: it has fewer than two class folders with images, or a sample is not readable.
    """
    classes: dict[str, list[str]] = {}
    skipped: list[str] = []

    def pick_samples(images: tuple[str, ...], skipped_names: tuple[str, ...]) -> list[str]:
        nonlocal classes, skipped
        _, classes, skipped = folder_layout([*images, *skipped_names])
        _check_classes(classes, name)  # before any image is decompressed
        return [
            path for paths in list(classes.values())[:sample_classes] for path in paths[:samples_per_class]
        ]

    contents = inspect_image_zip(source, keep=pick_samples)
    samples = []
    for class_name, paths in list(classes.items())[:sample_classes]:
        for path in paths[:samples_per_class]:
            try:
                samples.append((class_name, decode_image(contents.kept[path])))
            except ImageDecodeError as error:
                raise DataError(f"{path}: {error}") from error
    counts = {class_name: len(paths) for class_name, paths in classes.items()}
    return DataSummary(name, tuple(classes), counts, tuple(samples), tuple(skipped))
