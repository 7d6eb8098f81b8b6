"""Dataset readers on tiny fabricated layouts, and the evaluation harness end to end with a
tiny real CLIP loaded through load_encoder (no network, no downloaded weights)."""
import csv
import json

import pytest
import torch
from PIL import Image

from core.errors import DatasetError
from core.lab.datasets import (imagenet_wnids, read_class_folders, read_classification, read_flickr8k, read_imagenet_val, read_karpathy, read_retrieval)
from core.models import load_encoder
from cli.evaluate import main
from core.lab.evaluate import (encode_image_files, evaluate_retrieval, evaluate_zeroshot, evenly_spaced, resolve_classes, to_markdown)
from core.images import load_image
from core.lab.metrics import retrieval_map, retrieval_recall, topk_accuracy
from core.lab.reference import references_for
from core.settings import pick_runtime
from core.zeroshot import class_matrix, load_labelset, load_templates
from tests.tiny_models import make_tiny_clip_file

COLOURS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (240, 240, 0), (0, 200, 200), (128, 0, 128), (30, 30, 30)]


def img(path, n=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (40, 30), COLOURS[n % len(COLOURS)])
    im.paste((255 - 30 * n % 255, 90, 20 * n % 255), (5 * (n % 5), 3, 20, 20))
    im.save(path, fmt)
    return path


def corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return path


# ---------------------------------------------------------------- readers

def make_imagenet_val(root, n=6):
    wnids = imagenet_wnids()
    labels = [0, 1, 999, 1, 0, 500][:n]
    for i in range(n):
        img(root / f"ILSVRC2012_val_{i + 1:08d}.JPEG", i, "JPEG")
    return wnids, labels


def test_imagenet_val_with_kaggle_csv(tmp_path):
    wnids, labels = make_imagenet_val(tmp_path / "val")
    with open(tmp_path / "LOC_val_solution.csv", "w", newline="") as f:  # in the parent folder, as Kaggle ships it
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for i, label in enumerate(labels):
            w.writerow([f"ILSVRC2012_val_{i + 1:08d}", f"{wnids[label]} 1 2 30 40 {wnids[label]} 5 5 9 9"])
    data = read_classification(tmp_path / "val")
    assert data.layout == "imagenet-val" and data.labels == labels and len(data.classes) == 1000
    assert [p.name for p in data.images][0] == "ILSVRC2012_val_00000001.JPEG"


def test_imagenet_val_with_val_txt_indices_or_wnids(tmp_path):
    wnids, labels = make_imagenet_val(tmp_path)
    rows = [f"ILSVRC2012_val_{i + 1:08d}.JPEG {label if i % 2 else wnids[label]}" for i, label in enumerate(labels)]
    (tmp_path / "val.txt").write_text("\n".join(rows[:-1]) + "\n")  # the last image is unlabelled
    data = read_imagenet_val(tmp_path)
    assert data.labels == labels[:-1]
    assert any("not in val.txt" in n for n in data.notes)


def test_imagenet_val_with_devkit_ground_truth(tmp_path):
    sio = pytest.importorskip("scipy.io")
    import numpy as np
    wnids, labels = make_imagenet_val(tmp_path / "val")
    # devkit ILSVRC2012_IDs are not the standard order: give class k the id 1000 - k, plus a non-leaf synset
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.array([(1000 - k, w, "x", "x", 0) for k, w in enumerate(wnids)] + [(1001, "n00000001", "x", "x", 3)],
                       dtype=dtype)
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    sio.savemat(str(devkit / "meta.mat"), {"synsets": synsets})
    gt = devkit / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("\n".join(str(1000 - label) for label in labels) + "\n")
    assert read_classification(tmp_path / "val", ground_truth=gt).labels == labels


def test_imagenet_devkit_without_meta_says_what_to_do(tmp_path):
    make_imagenet_val(tmp_path)
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n")
    with pytest.raises(DatasetError, match="meta.mat"):
        read_imagenet_val(tmp_path)


def test_imagenet_val_without_ground_truth_is_a_clear_error(tmp_path):
    make_imagenet_val(tmp_path / "val")
    with pytest.raises(DatasetError, match="ground-truth"):
        read_imagenet_val(tmp_path / "val")


def test_class_folders_and_wnid_folders(tmp_path):
    for i, name in enumerate(["dog", "cat", "tabby_cat"]):
        img(tmp_path / "named" / name / f"{i}.png", i)
    img(tmp_path / "named" / "cat" / "sub" / "deep.jpg", 4)
    (tmp_path / "named" / "empty").mkdir()
    data = read_classification(tmp_path / "named")
    assert data.layout == "folders" and data.classes == ["cat", "dog", "empty", "tabby_cat"]
    assert sorted(data.labels) == [0, 0, 1, 3] and any("empty" in n for n in data.notes)
    names, mapping, how = resolve_classes(data)
    assert names == ["cat", "dog", "empty", "tabby cat"] and how == "folder names"

    for i, w in enumerate(["n01443537", "n01440764"]):
        img(tmp_path / "wnid" / w / f"{i}.jpg", i)
    data = read_class_folders(tmp_path / "wnid")
    names, mapping, _ = resolve_classes(data)  # auto: only the classes present compete
    assert names == ["tench", "goldfish"] and mapping == [0, 1]
    names, mapping, how = resolve_classes(data, "imagenet1k", "zh")  # the whole set, standard indices
    assert len(names) == 1000 and mapping == [0, 1] and names[0] == load_labelset("imagenet1k", "zh")[0]


def test_resolve_classes_by_name_position_or_error(tmp_path):
    for i, name in enumerate(["airplane", "automobile", "bird"]):
        img(tmp_path / name / "a.png", i)
    data = read_class_folders(tmp_path)
    names, mapping, how = resolve_classes(data, "cifar10", "zh")  # matched on the English names
    assert how == "by name" and mapping == [0, 1, 2] and names == load_labelset("cifar10", "zh")
    names, mapping, how = resolve_classes(data, "飞机, 汽车, 鸟")
    assert how.startswith("by position") and names[mapping[2]] == "鸟"
    with pytest.raises(DatasetError, match="Cannot match"):
        resolve_classes(data, "cat, dog")


def make_karpathy(root, with_corrupt=False):
    entries = []
    for i in range(5):
        split = "train" if i == 4 else "test"
        img(root / "val2014" / f"im{i}.jpg", i)
        entries.append({"filepath": "val2014", "filename": f"im{i}.jpg", "split": split,
                        "sentences": [{"raw": f"a picture number {i} "}, {"raw": f"colour {i}"}]})
    if with_corrupt:
        corrupt(root / "val2014" / "broken.jpg")
        entries.append({"filepath": "val2014", "filename": "broken.jpg", "split": "test",
                        "sentences": [{"raw": "broken one"}]})
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": entries}))
    return path


def test_karpathy_json(tmp_path):
    path = make_karpathy(tmp_path)
    data = read_retrieval(tmp_path)  # a folder holding one dataset_*.json
    assert data.name == "coco" and data.split == "test" and len(data.images) == 4
    assert data.captions[:2] == ["a picture number 0", "colour 0"] and data.text_to_image == [0, 0, 1, 1, 2, 2, 3, 3]
    assert data.images[0] == tmp_path / "val2014" / "im0.jpg"
    assert len(read_karpathy(path, "train").images) == 1 and len(read_karpathy(path, "all").images) == 5
    sub = data.subset([3, 1])
    assert sub.text_to_image == [1, 1, 0, 0] and sub.captions[0] == "a picture number 1"


def test_flickr30k_json_finds_images_folder(tmp_path):
    img(tmp_path / "flickr30k-images" / "1.jpg", 1)
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": [
        {"filename": "1.jpg", "split": "test", "sentences": [{"raw": "one"}]}]}))
    data = read_retrieval(tmp_path / "dataset_flickr30k.json", "karpathy")
    assert data.name == "flickr30k" and data.images == [tmp_path / "flickr30k-images" / "1.jpg"]


def test_flickr8k_kaggle_csv_and_original_token_file(tmp_path):
    kaggle = tmp_path / "kaggle"
    for n in ("a.jpg", "b.jpg"):
        img(kaggle / "Images" / n)
    with open(kaggle / "captions.txt", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows([["a.jpg", "a dog, running"], ["a.jpg", "dog"], ["b.jpg", "a cat"]])
    with pytest.raises(DatasetError, match="--split all"):
        read_flickr8k(kaggle)
    data = read_retrieval(kaggle, "flickr8k", "all")
    assert data.captions == ["a dog, running", "dog", "a cat"] and data.text_to_image == [0, 0, 1]
    assert data.images[0] == kaggle / "Images" / "a.jpg"

    orig = tmp_path / "orig"
    img(orig / "Flicker8k_Dataset" / "x.jpg")
    orig.joinpath("Flickr8k.token.txt").write_text("x.jpg#0\tA boy .\nx.jpg#1\tA kid .\ny.jpg#0\tA tree .\n")
    orig.joinpath("Flickr_8k.testImages.txt").write_text("x.jpg\n")
    data = read_retrieval(orig)
    assert data.captions == ["A boy .", "A kid ."] and data.images == [orig / "Flicker8k_Dataset" / "x.jpg"]


# ---------------------------------------------------------------- harness with a tiny real CLIP

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip_file(tmp_path_factory.mktemp("model") / "tiny_clip.pt")


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    return load_encoder(str(tiny_clip), pick_runtime("cpu"))


def test_encode_image_files_skips_and_names_unreadable(encoder, tmp_path):
    paths = [img(tmp_path / f"{i}.png", i) for i in range(5)]
    paths.insert(2, corrupt(tmp_path / "bad.jpg"))
    paths.append(tmp_path / "missing.jpg")
    seen = []
    enc = encode_image_files(encoder, paths, batch_size=2, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert enc.kept == [0, 1, 3, 4, 5] and [i for i, _ in enc.failed] == [2, 6]
    assert "bad.jpg" in enc.failed[0][1] and "missing.jpg" in enc.failed[1][1]
    direct = encoder.encode_images([load_image(paths[i]) for i in enc.kept])
    torch.testing.assert_close(enc.feats, direct, atol=1e-5, rtol=1e-4)
    assert seen[-1] == (7, 7)


def test_worker_processes_give_the_same_result_as_threads(encoder, tmp_path):
    paths = [img(tmp_path / f"{i}.jpg", i) for i in range(5)] + [corrupt(tmp_path / "bad.jpg")]
    threads = encode_image_files(encoder, paths, batch_size=2, workers=2, decode="threads")
    procs = encode_image_files(encoder, paths, batch_size=2, workers=2, decode="processes")
    assert procs.kept == threads.kept == [0, 1, 2, 3, 4] and procs.failed == threads.failed
    torch.testing.assert_close(procs.feats, threads.feats)


def test_zeroshot_end_to_end_matches_direct_computation(encoder, tmp_path):
    for c, name in enumerate(["red thing", "green thing", "blue thing"]):
        for j in range(3):
            img(tmp_path / name / f"{j}.png", c + 3 * j)
    corrupt(tmp_path / "red thing" / "zz_bad.jpg")
    data = read_classification(tmp_path)
    report = evaluate_zeroshot(encoder, data, templates="single", batch_size=4, workers=2)
    assert report["skipped"]["count"] == 1 and "zz_bad.jpg" in report["skipped"]["files"][0]
    assert report["dataset"]["images_found"] == 10 and report["dataset"]["images_evaluated"] == 9
    ok = [(p, y) for p, y in zip(data.images, data.labels) if p.name != "zz_bad.jpg"]
    feats = encoder.encode_images([load_image(p) for p, _ in ok])
    weights = class_matrix(encoder, ["red thing", "green thing", "blue thing"], load_templates("single"))
    expected = topk_accuracy(feats @ weights.T, [y for _, y in ok], ks=(1, 5))
    assert report["metrics"]["top1"] == pytest.approx(expected["top1"])
    assert report["metrics"]["top5"] == 100  # 3 classes: k clipped
    assert sum(c["n"] for c in report["per_class"]) == 9
    assert 0 <= report["metrics"]["mean_per_class"] <= 100
    assert report["timing"]["images_per_s"] > 0 and report["reference"] == []
    json.dumps(report)  # the report is plain JSON


def test_zeroshot_imagenet_layout_with_limit_and_references(encoder, tmp_path, monkeypatch):
    wnids, labels = make_imagenet_val(tmp_path)
    (tmp_path / "val.txt").write_text("".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG {y}\n" for i, y in enumerate(labels)))
    monkeypatch.setattr(encoder, "model_id", "ViT-B/32")  # as if it were OpenAI's: the published rows apply
    data = read_classification(tmp_path)
    report = evaluate_zeroshot(encoder, data, templates="bare", limit=3)
    assert report["dataset"]["classes"] == 1000 and report["dataset"]["images_evaluated"] == 3
    assert {c["index"] for c in report["per_class"]} <= {labels[i] for i in evenly_spaced(6, 3)}
    assert 0 <= report["metrics"]["top1"] <= report["metrics"]["top5"] <= 100
    assert {r["metrics"]["top1"] for r in report["reference"]} == {63.3, 55.7}
    assert "| top-1 % |" in to_markdown(report) and "63.3" in to_markdown(report)
    # Chinese labels and prompts are another setting: no published row is comparable
    assert evaluate_zeroshot(encoder, data, lang="zh", templates="bare", limit=2)["reference"] == []


def test_retrieval_end_to_end_drops_unreadable_image_with_its_captions(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(encoder, "model_id", "ViT-B/32")
    make_karpathy(tmp_path, with_corrupt=True)
    data = read_retrieval(tmp_path / "dataset_coco.json")
    report = evaluate_retrieval(encoder, data, batch_size=3, workers=2)
    assert report["skipped"]["count"] == 1 and "broken.jpg" in report["skipped"]["files"][0]
    assert report["dataset"]["images_evaluated"] == 4 and report["dataset"]["captions"] == 8
    keep = data.subset(range(4))
    expected = retrieval_recall(encoder.encode_images([load_image(p) for p in keep.images]),
                                encoder.encode_texts(keep.captions), keep.text_to_image)
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value)
    assert report["metrics"]["t2i_R@5"] == 100  # only 4 candidate images
    expected_map = retrieval_map(encoder.encode_images([load_image(p) for p in keep.images]),
                                 encoder.encode_texts(keep.captions), keep.text_to_image, ks=(5, 10))
    assert expected_map and all(report["metrics"][k] == pytest.approx(v) for k, v in expected_map.items())
    assert [r["metrics"]["t2i_R@1"] for r in report["reference"]] == [30.4]  # COCO 5k, open_clip


def test_markdown_shows_matching_reference_rows():
    refs = references_for("ViT-B/32", "zeroshot", "imagenet1k")
    assert {r.metrics["top1"] for r in refs} == {63.3, 55.7}
    assert references_for("ViT-B/32", "retrieval", "flickr30k")[0].metrics["t2i_R@1"] == 58.8
    report = {"task": "zeroshot", "model": "ViT-B/32", "runtime": "CPU",
              "dataset": {"layout": "imagenet-val", "images_evaluated": 10, "classes": 1000},
              "settings": {"templates": "ensemble80", "n_templates": 80, "lang": "en"},
              "metrics": {"top1": 62.0, "top5": 88.0, "mean_per_class": 61.0}, "per_class": [],
              "timing": {"images_per_s": 50.0, "s_per_image": 0.02},
              "skipped": {"count": 1, "files": ["x.jpg: corrupt"]},
              "reference": [{"label": r.label(), "metrics": r.metrics} for r in refs]}
    md = to_markdown(report)
    assert "| top-1 % | 62.0 | 63.3 | 55.7 |" in md and "| s/image | 0.0200 | – | 0.2000 |" in md
    assert "Skipped 1 unreadable image(s): x.jpg: corrupt" in md


def test_cli_writes_json_and_prints_markdown(tiny_clip, tmp_path, capsys):
    make_karpathy(tmp_path / "data")
    model = tiny_clip
    out = tmp_path / "out" / "report.json"
    rc = main(["retrieval", "--data", str(tmp_path / "data"), "--model", str(model), "--device", "cpu",
               "--batch-size", "2", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["task"] == "retrieval" and set(report["metrics"]) >= {"t2i_R@1", "i2t_R@10", "mean_recall"}
    assert set(report["metrics"]) >= {"t2i_mAP@5", "t2i_mAP@10", "i2t_mAP@5", "i2t_mAP@10"}
    table = capsys.readouterr().out
    assert "| text→image R@1 % |" in table
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if " % |" in line]
    assert rows == ["text→image R@1 %", "text→image R@5 %", "text→image R@10 %", "text→image mAP@5 %",
                    "text→image mAP@10 %", "image→text R@1 %", "image→text R@5 %", "image→text R@10 %",
                    "image→text mAP@5 %", "image→text mAP@10 %", "mean recall %"]
    rc = main(["zeroshot", "--data", str(tmp_path / "nowhere"), "--model", str(model), "--device", "cpu"])
    assert rc == 2 and "not a directory" in capsys.readouterr().err
    rc = main(["zeroshot", "--data", str(tmp_path / "data"), "--model", str(model), "--device", "tpu"])
    assert rc == 2 and "Unknown device" in capsys.readouterr().err
