"""Image folders (class subfolders, metadata.csv), conditions, the decode cache, and every kind of
bad folder named in one error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import shape_image, write_class_folders, write_shapes_folder
from keras_cvae.conditions import CATEGORICAL, CONTINUOUS, Condition, infer_kind, rows_from_mapping
from keras_cvae.data import DataError, dataset_name, folders, load_dataset


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CVAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_class_subfolders_give_one_condition_sorted_by_folder_name(tmp_path, cache):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 10, 12), dtype=np.uint8)
    labels = np.arange(40) % 3
    write_class_folders(tmp_path / "pets", images, labels, ["zebra", "cat", "dog"])
    data = load_dataset(None, tmp_path / "pets", test_fraction=0.25)
    assert data.conditions == (Condition("labels", CATEGORICAL, values=("cat", "dog", "zebra")),)
    assert data.x_train.shape == (30, 10, 12, 1) and data.x_test.shape == (10, 10, 12, 1)
    assert len(data.test_files) == 10 and all(name.endswith(".png") for name in data.test_files)
    # Every image comes back with its own label, whichever split it landed in.
    by_name = {"zebra": 0, "cat": 1, "dog": 2}
    for image, row, name in zip(data.x_test, data.y_test[:, 0], data.test_files):
        index = int(name.split("/")[1][:5])
        np.testing.assert_array_equal(image[..., 0], images[index])
        assert data.conditions[0].values[int(row)] == ["zebra", "cat", "dog"][labels[index]]
        assert by_name[name.split("/")[0]] == labels[index]
    # The split is seeded: the same folder splits the same way.
    assert load_dataset(None, tmp_path / "pets", test_fraction=0.25).test_files == data.test_files
    assert dataset_name(None, tmp_path / "pets") == "pets"


def test_metadata_conditions_kinds_split_and_alpha(tmp_path, cache):
    root = write_shapes_folder(tmp_path / "shapes", count=60)
    lines = (root / "metadata.csv").read_text().splitlines()
    lines = [lines[0] + ",split"] + [line + (",test" if i % 5 == 0 else ",train") for i, line in enumerate(lines[1:])]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset(None, root)
    assert [(c.name, c.kind) for c in data.conditions] == [
        ("shape", CATEGORICAL), ("colour", CATEGORICAL), ("size", CONTINUOUS)]
    assert data.conditions[1].values == ("blue", "green", "red")
    assert len(data.x_test) == 12 and data.x_train.shape[1:] == (16, 16, 3)
    # The continuous scaling comes from the training rows only.
    assert data.conditions[2].mean == pytest.approx(float(np.mean(data.y_train[:, 2])), rel=1e-5)
    assert data.conditions[2].std == pytest.approx(float(np.std(data.y_train[:, 2])), rel=1e-5)
    # Transparent pixels are composited onto white; opaque ones keep their colour.
    first = data.x_train[0]
    assert tuple(first[0, 0]) == (255, 255, 255)
    assert tuple(first[8, 8]) in {(220, 30, 30), (30, 200, 30), (30, 30, 220)}
    # --conditions picks columns and overrides the kind rule.
    picked = load_dataset(None, root, conditions="colour,size:categorical")
    assert [(c.name, c.kind) for c in picked.conditions] == [("colour", CATEGORICAL), ("size", CATEGORICAL)]


def test_the_kind_rule():
    assert infer_kind([str(v) for v in range(21)]) == CONTINUOUS
    assert infer_kind([str(v) for v in range(20)]) == CATEGORICAL  # few distinct numbers: categories
    assert infer_kind([f"{v}x" for v in range(50)]) == CATEGORICAL


def test_condition_values_accept_names_indices_and_numbers():
    conditions = (Condition("colour", CATEGORICAL, values=("blue", "green")), Condition("size", CONTINUOUS, mean=4))
    rows = rows_from_mapping(conditions, {"colour": ["green", 0, "1"], "size": ["2.5", 3, 4.0]}, 3)
    np.testing.assert_array_equal(rows, [[1, 2.5], [0, 3], [1, 4]])
    np.testing.assert_array_equal(rows_from_mapping(conditions, {}, 1), [[0, 4]])  # held values
    with pytest.raises(DataError, match="unknown category 'red'; choose one of: blue, green"):
        rows_from_mapping(conditions, {"colour": "red"}, 1)
    with pytest.raises(DataError, match="size: expected a number"):
        rows_from_mapping(conditions, {"size": "big"}, 1)


def test_mixed_grey_and_colour_is_rgb_and_image_size_resizes(tmp_path, cache):
    root = tmp_path / "mixed"
    write_class_folders(root, np.full((6, 20, 30), 128, np.uint8), np.zeros(6), ["a"])
    write_class_folders(root, np.zeros((6, 20, 30, 3), np.uint8) + [255, 0, 0], np.ones(6), ["a", "b"])
    data = load_dataset(None, root, image_size=(8, 12), test_fraction=0.5)
    assert data.x_train.shape[1:] == (8, 12, 3)
    grey = np.concatenate([data.x_train, data.x_test])[np.concatenate([data.y_train, data.y_test])[:, 0] == 0]
    assert np.all(grey == 128)  # grey pixels repeated into three equal channels


def test_decoded_once_then_from_the_cache(tmp_path, cache, monkeypatch):
    root = write_shapes_folder(tmp_path / "shapes", count=30)
    first = load_dataset(None, root)
    monkeypatch.setattr(folders, "_decode", lambda *a: pytest.fail("decoded again"))
    again = load_dataset(None, root)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    # Changed bytes change the key: the folder is decoded again.
    Image.fromarray(shape_image("square", "blue", 5.0), "RGBA").save(root / "0001.png")  # was a red bar
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        load_dataset(None, root)


def test_npz_of_any_shape(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (20, 32, 24, 3), dtype=np.uint8), "y_train": np.arange(20) % 4,
              "x_test": rng.integers(0, 256, (8, 32, 24, 3), dtype=np.uint8), "y_test": np.arange(8) % 4}
    np.savez(tmp_path / "mine.npz", **arrays)
    data = load_dataset("mine", tmp_path / "mine.npz")
    assert data.x_train.shape == (20, 32, 24, 3) and data.class_names == ("0", "1", "2", "3")
    with pytest.raises(DataError, match="mnist needs"):
        load_dataset("mnist", tmp_path / "mine.npz")


def _rewrite(root, edit):
    lines = (root / "metadata.csv").read_text().splitlines()
    (root / "metadata.csv").write_text("\n".join(edit(lines)) + "\n")


BAD_FOLDERS = {
    "not an image": (lambda root: (root / "0003.png").write_text("hello"), "0003.png: not a readable image"),
    "mixed sizes": (lambda root: Image.new("RGB", (9, 9)).save(root / "0004.png"),
                    "0004.png is 9×9 but .*0000.png is 16×16; pass `image_size`"),
    "missing file": (lambda root: (root / "0005.png").unlink(), "line 7 names '0005.png', which is missing"),
    "duplicate row": (lambda root: _rewrite(root, lambda lines: lines + [lines[3]]), "repeats '0002.png'"),
    "one value": (lambda root: _rewrite(root, lambda lines: [line + ",x" for line in lines]),
                  "column 'x' has one value"),
    "non-number": (lambda root: _rewrite(root, lambda lines: [lines[0].replace("size", "size")] + lines[1:3] + [
        lines[3].rsplit(",", 1)[0] + ",big"] + lines[4:]), "column 'size' is continuous but row 3 holds 'big'"),
    "bad split": (lambda root: _rewrite(root, lambda lines: [lines[0] + ",split"] + [line + ",valid" for line in lines[1:]]),
                  "column 'split' holds 'valid'"),
    "no conditions": (lambda root: _rewrite(root, lambda lines: [line.split(",")[0] for line in lines]),
                      "no condition columns besides 'file_name'"),
    "bad name": (lambda root: _rewrite(root, lambda lines: [lines[0].replace("colour", "hair colour")] + lines[1:]),
                 "condition column 'hair colour' cannot name a serving input"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folders_are_one_error_naming_the_file_or_column(tmp_path, cache, case):
    root = write_shapes_folder(tmp_path / "shapes", count=30)
    break_it, message = BAD_FOLDERS[case]
    break_it(root)
    conditions = "shape,size:continuous" if case == "non-number" else None
    with pytest.raises(DataError, match=message):
        load_dataset(None, root, conditions=conditions)


def test_unknown_condition_and_empty_folder(tmp_path, cache):
    root = write_shapes_folder(tmp_path / "shapes", count=30)
    with pytest.raises(DataError, match="no column 'hue'; its conditions are shape, colour, size"):
        load_dataset(None, root, conditions="shape,hue")
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="empty: no IDX files"):
        load_dataset(None, tmp_path / "empty")


def test_train_and_test_folders_give_the_split(tmp_path, cache):
    rng = np.random.default_rng(1)
    write_class_folders(tmp_path / "d" / "train", rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), np.arange(12) % 2,
                        ["no", "yes"])
    write_class_folders(tmp_path / "d" / "test", rng.integers(0, 256, (4, 8, 8), dtype=np.uint8), np.arange(4) % 2,
                        ["no", "yes"])
    data = load_dataset(None, tmp_path / "d")
    assert (len(data.x_train), len(data.x_test)) == (12, 4) and data.class_names == ("no", "yes")
    assert all(name.startswith("test/") for name in data.test_files)
    # Rows come in a seeded order, not class by class: the validation tail is not one class.
    assert set(data.y_train[-4:, 0]) == {0.0, 1.0}
