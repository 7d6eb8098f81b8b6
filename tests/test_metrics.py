"""Metrics on hand-built cases whose answers are worked out in the comments."""
import math

import pytest
import torch
import torch.nn.functional as F

from core.lab import metrics
from core.lab.metrics import per_class_accuracy, retrieval_recall, topk_accuracy


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_retrieval_hand_case_both_directions():
    images = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    # text 0 -> image 0 exactly; text 1 belongs to image 1 but points between images 0 and 2
    # with image 0 closer, so its own image is ranked 3rd; text 2 -> image 2 exactly.
    texts = unit([1, 0, 0], [0.6, 0.1, 0.5], [0, 0, 1])
    r = retrieval_recall(images, texts, [0, 1, 2], ks=(1, 2, 3))
    assert r["t2i_R@1"] == pytest.approx(200 / 3)   # texts 0 and 2
    assert r["t2i_R@2"] == pytest.approx(200 / 3)   # text 1 has rank 2 (0-based): still a miss at 2
    assert r["t2i_R@3"] == 100
    # image 1: its caption (text 1) scores 0.13; texts 0 and 2 score 0 with it -> hit at 1
    assert r["i2t_R@1"] == 100
    assert r["mean_recall"] == pytest.approx((200 / 3 * 2 + 100 + 300) / 6)


def test_image_to_text_counts_any_caption_of_the_image():
    images = unit([1, 0], [0, 1])
    # image 0 has two captions: text 0 is bad (points at image 1), text 1 is good.
    # text 2 belongs to image 1.
    texts = unit([0, 1], [1, 0.1], [0.2, 1])
    r = retrieval_recall(images, texts, [0, 0, 1], ks=(1,))
    # image 0: its best caption (text 1) outscores every other caption -> hit at 1.
    # image 1: text 0 (image 0's) scores 1.0 > text 2's ~0.98 -> rank 1, miss at 1.
    assert r["i2t_R@1"] == 50
    # text 0 -> image 1 first (miss); text 1 -> image 0 (hit); text 2 -> image 1 (hit)
    assert r["t2i_R@1"] == pytest.approx(200 / 3)


def test_other_captions_of_the_same_image_never_push_it_down():
    images = unit([1, 0], [0, 1])
    texts = unit([1, 0], [1, 0], [1, 0], [0, 1])  # three identical captions of image 0
    r = retrieval_recall(images, texts, [0, 0, 0, 1], ks=(1,), ties="pessimistic")
    assert r["i2t_R@1"] == 100


def test_ties_duplicate_images_optimistic_vs_pessimistic():
    images = unit([1, 0], [1, 0], [0, 1])  # images 0 and 1 are the same picture
    texts = unit([1, 0], [1, 0], [0, 1])
    opt = retrieval_recall(images, texts, [0, 1, 2], ks=(1, 2))
    pes = retrieval_recall(images, texts, [0, 1, 2], ks=(1, 2), ties="pessimistic")
    assert opt["t2i_R@1"] == 100                      # a tie does not count against
    assert pes["t2i_R@1"] == pytest.approx(100 / 3)   # texts 0 and 1 each lose to the other copy
    assert pes["t2i_R@2"] == 100
    # image->text: image 0's caption ties with image 1's caption
    assert opt["i2t_R@1"] == 100 and pes["i2t_R@1"] == pytest.approx(100 / 3)


def test_collapsed_encoder_is_exposed_by_pessimistic_ties():
    images = unit(*[[1, 1]] * 4)
    texts = unit(*[[1, 1]] * 4)
    assert retrieval_recall(images, texts, range(4), ks=(1,))["t2i_R@1"] == 100
    assert retrieval_recall(images, texts, range(4), ks=(1,), ties="pessimistic")["t2i_R@1"] == 0


def test_k_larger_than_candidates_is_all_hits():
    images = unit([1, 0], [0, 1])
    texts = unit([0, 1], [1, 0])  # both wrong at rank 1
    r = retrieval_recall(images, texts, [0, 1])
    assert r["t2i_R@1"] == 0 and r["t2i_R@5"] == 100 and r["t2i_R@10"] == 100
    assert set(r) == {"t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10", "mean_recall"}


def test_image_without_caption_is_left_out_of_image_to_text():
    images = unit([1, 0], [0, 1])
    texts = unit([1, 0])
    r = retrieval_recall(images, texts, [0], ks=(1,))
    assert r["i2t_R@1"] == 100  # only image 0 is a query


def _brute_force(images, texts, t2i, k):
    sims = texts @ images.T
    order = sims.argsort(dim=1, descending=True)
    t2i_hits = [int(t2i[j]) in order[j, :k].tolist() for j in range(len(texts))]
    order_i = sims.T.argsort(dim=1, descending=True)
    i2t_hits = [any(int(t2i[j]) == i for j in order_i[i, :k].tolist()) for i in range(len(images))]
    return 100 * sum(t2i_hits) / len(t2i_hits), 100 * sum(i2t_hits) / len(i2t_hits)


def test_chunked_computation_matches_brute_force(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_SCORES", 50)  # forces many small chunks
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(23, 8, generator=g), dim=-1)
    t2i = torch.arange(23).repeat_interleave(5)  # 5 captions per image, COCO style
    texts = F.normalize(images[t2i] + 0.9 * torch.randn(115, 8, generator=g), dim=-1)
    r = retrieval_recall(images, texts, t2i.tolist(), ks=(1, 5))
    for k in (1, 5):
        t2i_ref, i2t_ref = _brute_force(images, texts, t2i, k)
        assert r[f"t2i_R@{k}"] == pytest.approx(t2i_ref)
        assert r[f"i2t_R@{k}"] == pytest.approx(i2t_ref)


def test_retrieval_rejects_bad_inputs():
    images, texts = unit([1, 0]), unit([1, 0], [0, 1])
    with pytest.raises(ValueError, match="one image index per text"):
        retrieval_recall(images, texts, [0])
    with pytest.raises(ValueError, match="must lie in"):
        retrieval_recall(images, texts, [0, 1])
    with pytest.raises(ValueError, match="same D"):
        retrieval_recall(images, unit([1, 0, 0]), [0])


def test_topk_accuracy_hand_case():
    logits = torch.tensor([[0.9, 0.5, 0.1, 0.0],    # true 0: rank 0
                           [0.9, 0.5, 0.1, 0.0],    # true 2: rank 2
                           [0.1, 0.2, 0.3, 0.4]])   # true 0: rank 3
    r = topk_accuracy(logits, [0, 2, 0], ks=(1, 3, 5))
    assert r["top1"] == pytest.approx(100 / 3)
    assert r["top3"] == pytest.approx(200 / 3)
    assert r["top5"] == 100  # k clipped to C = 4


def test_topk_ties_and_per_class():
    logits = torch.tensor([[1.0, 1.0, 0.0],   # true 1, tied with class 0
                           [0.0, 0.0, 1.0],   # true 2
                           [0.0, 1.0, 0.0]])  # true 0: miss
    assert topk_accuracy(logits, [1, 2, 0], ks=(1,))["top1"] == pytest.approx(200 / 3)
    assert topk_accuracy(logits, [1, 2, 0], ks=(1,), ties="pessimistic")["top1"] == pytest.approx(100 / 3)
    acc = per_class_accuracy(logits, [1, 2, 0])
    assert acc.tolist() == [0.0, 100.0, 100.0]
    acc = per_class_accuracy(logits[1:], [2, 2])  # classes 0 and 1 have no sample
    assert math.isnan(acc[0]) and math.isnan(acc[1]) and acc[2] == 50


def test_topk_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ValueError, match="ties must be"):
        topk_accuracy(torch.zeros(2, 3), [0, 1], ties="random")
