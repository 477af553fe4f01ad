"""How long the Fine-tune page's zip check and summary take as the number of classes grows.

Each archive holds `--per-class` tiny PNGs (4×4 px) in each of 100, 1,000 and 10,000 class
folders; `summarize_zip` checks the whole archive and decodes the page's samples, as the page
does on upload. The work should grow linearly: time per entry roughly constant.

Run: .venv/bin/python bench/zip_summary.py [--per-class 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import interleaved_medians, machine
from PIL import Image

from vitviz.finetune.data import summarize_zip

CLASS_COUNTS = (100, 1_000, 10_000)


def class_folder_zip(classes: int, per_class: int) -> bytes:
    """An ImageFolder zip: `classes` folders of `per_class` 4×4 PNGs, each class its own colour."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for label in range(classes):
            png = io.BytesIO()
            Image.new("RGB", (4, 4), (label % 256, label // 256 % 256, 128)).save(png, format="PNG")
            for index in range(per_class):
                archive.writestr(f"class{label:05d}/{index}.png", png.getvalue())
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2, help="PNGs per class (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each size (default 3)")
    args = parser.parse_args()
    archives = {classes: class_folder_zip(classes, args.per_class) for classes in CLASS_COUNTS}
    works = {
        classes: (lambda data=data: summarize_zip(data, "bench.zip", samples_per_class=4))
        for classes, data in archives.items()
    }
    print(machine())
    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}")
    medians = interleaved_medians(works, args.runs)
    print(f"{'classes':>8} {'entries':>8} {'zip':>9} {'median s':>9} {'µs/entry':>9}")
    for classes, seconds in medians.items():
        entries = classes * args.per_class
        size = f"{len(archives[classes]) / 1024**2:.1f} MB"
        print(f"{classes:>8,} {entries:>8,} {size:>9} {seconds:>9.3f} {seconds / entries * 1e6:>9.0f}")
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
