"""builtin:digits: scikit-learn's real handwritten digits as 10 classes of grey pictures, upscaled bicubic."""

import threading

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from vitviz.finetune.data import DataError, open_image_set
from vitviz.finetune.digits import (
    BUILTIN_DIGITS,
    DIGIT_CLASSES,
    DIGITS_IMAGE_SIZE,
    digit_image,
    digit_pixels,
    digits_folder,
)


@pytest.fixture(scope="module")
def digits():
    return open_image_set(BUILTIN_DIGITS)


def test_digits_are_all_of_sklearns_images_in_ten_classes(digits):
    reference = load_digits()
    assert digits.source == BUILTIN_DIGITS and digits.classes == DIGIT_CLASSES
    assert len(digits.items) == 1797
    expected_counts = np.bincount(reference.target, minlength=10)
    assert list(digits.class_counts().values()) == expected_counts.tolist()
    # Every item is the row its key names, labelled with that row's digit.
    assert all(item.label == reference.target[int(item.key.split("/")[1][:4])] for item in digits.items)
    assert all(item.key.split("/")[0] == DIGIT_CLASSES[item.label] for item in digits.items)


def test_a_loaded_digit_is_the_real_picture_in_grey_rgb(digits):
    item = digits.item("0/0000.png")
    picture = item.load()
    assert picture.mode == "RGB" and picture.size == (DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE)
    pixels = np.asarray(picture)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])
    assert np.array_equal(pixels, np.asarray(digit_image(0)))  # the file is lossless


def test_ink_is_dark_on_white_paper():
    reference = load_digits().images[0]  # the first "0": ink in 0..16
    small = digit_pixels(0)
    assert small.dtype == np.uint8 and small.shape == (8, 8)
    assert np.array_equal(small, np.round(255 * (1 - reference / 16)).astype(np.uint8))
    picture = np.asarray(digit_image(0))[..., 0]
    assert picture[0, 0] == 255  # blank corner: paper
    assert picture.min() < 40  # strokes: ink


def test_upscaling_is_bicubic_not_blocky():
    small = Image.fromarray(digit_pixels(7), mode="L")
    expected = np.asarray(small.resize((224, 224), Image.Resampling.BICUBIC))
    picture = np.asarray(digit_image(7))[..., 0]
    assert np.array_equal(picture, expected)
    blocky = np.asarray(small.resize((224, 224), Image.Resampling.NEAREST))
    # Nearest keeps 28×28 blocks of at most 17 grey levels; bicubic ramps between them.
    assert len(np.unique(blocky)) <= 17 < len(np.unique(picture))
    assert len(np.unique(picture[:28, 84:112])) > 1


def test_the_folder_is_written_once_even_when_two_callers_race(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path))
    folders: list = []
    callers = [threading.Thread(target=lambda: folders.append(digits_folder(size=16))) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=300)
    assert len(folders) == 2 and folders[0] == folders[1]
    files = sorted(folders[0].rglob("*.png"))
    assert len(files) == 1797 and sorted(path.name for path in folders[0].iterdir()) == list(DIGIT_CLASSES)
    assert [path.name for path in tmp_path.iterdir()] == [folders[0].name]  # no half-written copy left
    stamp = files[0].stat().st_mtime_ns
    assert digits_folder(size=16) == folders[0] and files[0].stat().st_mtime_ns == stamp
    assert Image.open(files[0]).size == (16, 16)


def test_an_unknown_builtin_set_is_still_refused():
    with pytest.raises(DataError, match="builtin:letters"):
        open_image_set("builtin:letters")
