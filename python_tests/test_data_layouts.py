"""CUB200, CARS196, SOP and folder trees in their real layouts, tiny, built in a temp dir:
known class splits, and the promised messages for missing or garbled roots."""

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from diva_ext.data import load


def _image(path, shade=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (9, 7), (shade, 50, 100)).save(path)
    return path


def _write(path, text="not an image"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _labels_and_names(ds):
    return ds.labels.tolist(), ds.class_names


# --- CUB200-2011 -------------------------------------------------------------------------------

CUB_CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 100: "100.Brown_Pelican",
               101: "101.White_Pelican", 200: "200.Common_Yellowthroat"}
CUB_IMAGES = [(1, 2), (2, 1), (100, 1), (101, 2), (200, 3)]  # (class id, number of images)


@pytest.fixture
def cub_root(tmp_path):
    base = tmp_path / "CUB_200_2011"
    rows, labels, image_id = [], [], 0
    for class_id, count in CUB_IMAGES:
        for i in range(count):
            image_id += 1
            relative = f"{CUB_CLASSES[class_id]}/img_{i}.jpg"
            _image(base / "images" / relative, image_id)
            rows.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
    (base / "images.txt").write_text("\n".join(rows) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in CUB_CLASSES.items()))
    return tmp_path


def test_cub_split_by_class_id(cub_root):
    train = load("cub200", cub_root, "train")
    test = load("cub200", cub_root, "test")
    assert _labels_and_names(train) == ([0, 0, 1, 2], [CUB_CLASSES[1], CUB_CLASSES[2], CUB_CLASSES[100]])
    assert _labels_and_names(test) == ([0, 0, 1, 1, 1], [CUB_CLASSES[101], CUB_CLASSES[200]])
    assert train.paths[2].endswith("002.Laysan_Albatross/img_0.jpg")
    assert "5 images, 2 classes" in repr(test)


def test_cub_without_index_files_uses_folder_numbers(cub_root):
    base = cub_root / "CUB_200_2011"
    for name in ("images.txt", "image_class_labels.txt", "classes.txt"):
        (base / name).unlink()
    # ROOT may also be CUB_200_2011 itself.
    test = load("cub200", base, "test")
    assert _labels_and_names(test) == ([0, 0, 1, 1, 1], [CUB_CLASSES[101], CUB_CLASSES[200]])


def test_cub_item(cub_root):
    image, label, index = load("cub200", cub_root, "test", transform=lambda im: im.size)[3]
    assert (image, label, index) == ((9, 7), 1, 3)
    image, _, _ = load("cub200", cub_root, "test")[0]
    assert image.shape == (3, 7, 9) and image.dtype == torch.float32


@pytest.mark.parametrize(
    "garble, error, match",
    [
        (lambda b: (b / "image_class_labels.txt").unlink(), FileNotFoundError, "image_class_labels.txt not found"),
        (lambda b: (b / "images.txt").write_text("1\n"), ValueError, r"images.txt:1: expected 2 columns"),
        (lambda b: (b / "images.txt").write_text("x a.jpg\n"), ValueError, r"images.txt:1: expected an integer, got 'x'"),
        (lambda b: (b / "image_class_labels.txt").write_text("1 1\n"), ValueError, "disagree"),
        (lambda b: (b / "image_class_labels.txt").write_text("".join(f"{i} 250\n" for i in range(1, 10))),
         ValueError, "class id 250 .* outside 1-200"),
        (lambda b: (b / "images" / CUB_CLASSES[200] / "img_1.jpg").unlink(), FileNotFoundError,
         r"1 of 5 listed images are missing .*200.Common_Yellowthroat/img_1.jpg"),
    ],
)
def test_cub_garbled(cub_root, garble, error, match):
    garble(cub_root / "CUB_200_2011")
    with pytest.raises(error, match=match):
        load("cub200", cub_root, "test")


def test_cub_bad_folder_name(tmp_path):
    _image(tmp_path / "CUB_200_2011" / "images" / "Albatross" / "a.jpg")
    with pytest.raises(ValueError, match="class folder .*Albatross does not start with a class number"):
        load("cub200", tmp_path)


def test_cub_missing_images_dir(tmp_path):
    (tmp_path / "CUB_200_2011").mkdir()
    with pytest.raises(FileNotFoundError, match=f"CUB_200_2011/images not found under {tmp_path}; "
                                                "expected the extracted CUB_200_2011.tgz"):
        load("cub200", tmp_path)


# --- CARS196 -----------------------------------------------------------------------------------

CARS_CLASSES = [1, 98, 99, 196, 1, 99, 99]  # class id of car_ims/000001.jpg, 000002.jpg, ...


def _write_cars_mat(path, classes):
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, len(classes)), dtype=[(f, "O") for f in fields])
    for i, class_id in enumerate(classes):
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 2, 8, 6)]
        annotations[0, i] = (f"car_ims/{i + 1:06d}.jpg", *box, np.array([[class_id]], np.uint8),
                             np.array([[i % 2]], np.uint8))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = [f"Car Model {i}" for i in range(1, 197)]
    scipy.io.savemat(str(path), {"annotations": annotations, "class_names": names})


@pytest.fixture
def cars_root(tmp_path):
    for i in range(len(CARS_CLASSES)):
        _image(tmp_path / "car_ims" / f"{i + 1:06d}.jpg", i)
    _write_cars_mat(tmp_path / "cars_annos.mat", CARS_CLASSES)
    return tmp_path


def test_cars_split_by_annotation_class(cars_root):
    train = load("cars196", cars_root, "train")
    test = load("cars196", cars_root, "test")
    assert _labels_and_names(train) == ([0, 1, 0], ["Car Model 1", "Car Model 98"])
    assert [p[-10:] for p in train.paths] == ["000001.jpg", "000002.jpg", "000005.jpg"]
    assert _labels_and_names(test) == ([0, 1, 0, 0], ["Car Model 99", "Car Model 196"])


def test_cars_single_annotation(tmp_path):
    _image(tmp_path / "car_ims" / "000001.jpg")
    _write_cars_mat(tmp_path / "cars_annos.mat", [150])
    assert load("cars196", tmp_path, "test").labels.tolist() == [0]
    with pytest.raises(ValueError, match="no images for split 'train'"):
        load("cars196", tmp_path, "train")


@pytest.mark.parametrize(
    "garble, error, match",
    [
        (lambda r: (r / "cars_annos.mat").unlink(), FileNotFoundError, "cars_annos.mat not found under"),
        (lambda r: [p.unlink() for p in (r / "car_ims").iterdir()] and (r / "car_ims").rmdir(),
         FileNotFoundError, "car_ims/ not found under .*; expected the extracted car_ims.tgz"),
        (lambda r: (r / "cars_annos.mat").write_bytes(b"not a mat file at all"), ValueError,
         "cannot read .*cars_annos.mat as a MATLAB file"),
        (lambda r: scipy.io.savemat(str(r / "cars_annos.mat"), {"x": 1}), ValueError, "has no 'annotations' struct"),
        (lambda r: _write_cars_mat(r / "cars_annos.mat", [0]), ValueError, "class id 0 .* outside 1-196"),
        (lambda r: (r / "car_ims" / "000004.jpg").unlink(), FileNotFoundError, "missing .*000004.jpg"),
    ],
)
def test_cars_garbled(cars_root, garble, error, match):
    garble(cars_root)
    with pytest.raises(error, match=match):
        load("cars196", cars_root, "test")


# --- Stanford Online Products -------------------------------------------------------------------

SOP_HEADER = "image_id class_id super_class_id path\n"
SOP_ROWS = {
    "train": [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
              (3, 7, 2, "chair_final/222_0.JPG")],
    "test": [(4, 11319, 1, "bicycle_final/333_0.JPG"), (5, 11400, 2, "chair_final/444_0.JPG"),
             (6, 11319, 1, "bicycle_final/333_1.JPG")],
}


def _sop_tree(base, info_files=False):
    for split, rows in SOP_ROWS.items():
        for row in rows:
            _image(base / row[3], row[0])
        index_dir = base / "Info_Files" if info_files else base
        index_dir.mkdir(parents=True, exist_ok=True)
        (index_dir / f"Ebay_{split}.txt").write_text(SOP_HEADER + "".join("%d %d %d %s\n" % r for r in rows))


@pytest.mark.parametrize("layout", ["root", "info_files", "parent"])
def test_sop_layouts(tmp_path, layout):
    base = tmp_path / "Stanford_Online_Products" if layout == "parent" else tmp_path
    _sop_tree(base, info_files=layout == "info_files")
    train, test = load("sop", tmp_path, "train"), load("sop", tmp_path, "test")
    assert _labels_and_names(train) == ([0, 0, 1], ["1", "7"])
    assert _labels_and_names(test) == ([0, 1, 0], ["11319", "11400"])
    assert test.paths[1] == str(base / "chair_final/444_0.JPG")


@pytest.mark.parametrize(
    "text, match",
    [
        ("id class super path\n", r"Ebay_test.txt:1: expected the header 'image_id class_id super_class_id path'"),
        (SOP_HEADER + "1 2 bicycle_final/111_0.JPG\n", r"Ebay_test.txt:2: expected 4 columns, got 3"),
        (SOP_HEADER + "1 x 1 bicycle_final/111_0.JPG\n", r"Ebay_test.txt:2: expected an integer, got 'x'"),
    ],
)
def test_sop_garbled(tmp_path, text, match):
    _sop_tree(tmp_path)
    (tmp_path / "Ebay_test.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        load("sop", tmp_path, "test")


def test_sop_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Ebay_train.txt not found in .* or .*Info_Files; "
                                                "expected the extracted Stanford_Online_Products.zip"):
        load("sop", tmp_path, "train")


# --- folder -------------------------------------------------------------------------------------

def test_folder_with_train_and_test(tmp_path):
    for relative in ("train/owl/a.png", "train/owl/sub/b.jpg", "train/cat/c.jpg", "test/dog/d.JPEG"):
        _image(tmp_path / relative)
    _write(tmp_path / "test/dog/notes.txt")
    train, test = load("folder", tmp_path, "train"), load("folder", tmp_path, "test")
    assert _labels_and_names(train) == ([0, 1, 1], ["cat", "owl"])
    assert _labels_and_names(test) == ([0], ["dog"])


def test_folder_halves_sorted_classes(tmp_path):
    for name in ("e", "a", "c", "d", "b"):
        _image(tmp_path / name / "x.jpg")
    assert load("folder", tmp_path, "train").class_names == ["a", "b", "c"]
    assert load("folder", tmp_path, "test").class_names == ["d", "e"]


def test_folder_overlapping_classes_warn(tmp_path):
    for relative in ("train/owl/a.png", "test/owl/b.png"):
        _image(tmp_path / relative)
    with pytest.warns(UserWarning, match=r"classes \['owl'\] are in both train/ and test/"):
        load("folder", tmp_path, "test")


@pytest.mark.parametrize(
    "files, error, match",
    [
        (["train/owl/a.png"], FileNotFoundError, "has train/ but no test/"),
        (["only/a.png"], ValueError, "needs at least 2 class folders"),
        (["train/owl/a.png", "test/cat/readme.txt"], FileNotFoundError, "Found no valid file for the classes cat"),
        ([], FileNotFoundError, "Couldn't find any class folder"),
    ],
)
def test_folder_bad_trees(tmp_path, files, error, match):
    for relative in files:
        (_image if relative.endswith(".png") else _write)(tmp_path / relative)
    with pytest.raises(error, match=match):
        load("folder", tmp_path, "test")
