"""Metrics on hand-built cases whose answers are worked out in the comments."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.lab import metrics
from core.lab.metrics import per_class_accuracy, retrieval_map, retrieval_recall, topk_accuracy


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


def test_map_hand_case_counts_every_relevant_item():
    # image 0 has captions 0, 2, 4; its ranking is t0 (1.0) > t1 (0.8) > t2 (0.6) > t3 (0.4) > t4 (0.2):
    # hits at positions 1, 3, 5 -> precisions 1, 2/3, 3/5
    images = unit([1, 0], [0, 1])
    angles = [0.0, 0.8, 0.6, 0.4, 0.2]
    texts = unit(*[[c, math.sqrt(1 - c * c)] if i else [1, 0] for i, c in enumerate(angles)])
    r = retrieval_map(images, texts, [0, 1, 0, 1, 0], ks=(1, 2, 5))
    image0 = {1: 1 / 1, 2: 1 / 2, 5: (1 + 2 / 3 + 3 / 5) / 3}   # denominators min(K, 3): 1, 2, 3
    # image 1 (captions 1, 3) ranks them by their y: t4 (0.98) > t3 (0.92) > t2 (0.8) > t1 (0.6) > t0 (0)
    image1 = {1: 0, 2: (1 / 2) / 2, 5: (1 / 2 + 2 / 4) / 2}
    for k in (1, 2, 5):
        assert r[f"i2t_mAP@{k}"] == pytest.approx(100 * (image0[k] + image1[k]) / 2)
    assert set(r) == {f"{d}_mAP@{k}" for d in ("t2i", "i2t") for k in (1, 2, 5)}


def test_map_with_one_relevant_item_is_the_reciprocal_rank_cut_at_k():
    images = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    texts = unit([1, 0, 0], [0.6, 0.1, 0.5], [0, 0, 1])   # text 1's image is ranked 3rd (see the recall case)
    r = retrieval_map(images, texts, [0, 1, 2], ks=(2, 3))
    assert r["t2i_mAP@2"] == pytest.approx(100 * 2 / 3) and r["t2i_mAP@3"] == pytest.approx(100 * (2 + 1 / 3) / 3)


def _ap_at_k_sklearn(scores, relevant, k, ties):
    """The same mAP@K from scikit-learn's average_precision_score: each query's candidates put in the
    order the tie rule gives (relevant first among equal scores when optimistic), scored by position so
    that scikit-learn sees no tie, cut at K; its AP over the hits found is rescaled to min(K, R)."""
    from sklearn.metrics import average_precision_score
    aps = []
    for row, rel in zip(scores.tolist(), relevant.tolist()):
        if not any(rel):
            continue
        order = sorted(range(len(row)), key=lambda j: (-row[j], (not rel[j]) if ties == "optimistic" else rel[j]))
        top = np.array([rel[j] for j in order][:k], dtype=int)
        hits = int(top.sum())
        aps.append(0.0 if hits == 0 else
                   average_precision_score(top, -np.arange(len(top))) * hits / min(k, sum(rel)))
    return 100 * float(np.mean(aps))


def _check_against_sklearn(images, texts, t2i, ks, ties):
    r = retrieval_map(images, texts, t2i.tolist(), ks=ks, ties=ties)
    sims = texts @ images.T
    own = t2i[:, None] == torch.arange(len(images))[None, :]   # [Nt, Ni]
    for k in ks:
        assert r[f"t2i_mAP@{k}"] == pytest.approx(_ap_at_k_sklearn(sims, own, k, ties), abs=1e-9)
        assert r[f"i2t_mAP@{k}"] == pytest.approx(_ap_at_k_sklearn(sims.T, own.T, k, ties), abs=1e-9)


def test_map_matches_scikit_learn_with_five_captions_per_image(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_SCORES", 50)  # many small chunks
    g = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(23, 8, generator=g), dim=-1)
    t2i = torch.arange(23).repeat_interleave(5)   # Flickr8k style
    texts = F.normalize(images[t2i] + 0.9 * torch.randn(115, 8, generator=g), dim=-1)
    _check_against_sklearn(images, texts, t2i, ks=(1, 5, 10, 200), ties="optimistic")
    # with K past every candidate, the denominator is R and this is scikit-learn's AP itself
    from sklearn.metrics import average_precision_score
    own = (torch.arange(23)[:, None] == t2i[None, :]).int()
    full = np.mean([average_precision_score(own[i], (images @ texts.T)[i]) for i in range(23)])
    assert retrieval_map(images, texts, t2i.tolist(), ks=(115,))["i2t_mAP@115"] == pytest.approx(100 * full)


def test_map_ties_follow_the_tie_rule():
    # features in quarters: every dot product is exact in float32, so equal scores are equal in every chunk,
    # and coarse values give many ties besides the planted ones (not normalised; the ranking is the point)
    g = torch.Generator().manual_seed(2)
    images = torch.randint(-2, 3, (12, 6), generator=g).float() / 4
    images[5], images[9] = images[4].clone(), images[4].clone()    # the same picture three times
    t2i = torch.arange(12).repeat_interleave(5)
    texts = images[t2i] + torch.randint(-1, 2, (60, 6), generator=g).float() / 4
    texts[[1, 7, 12, 33]] = texts[0].clone()                      # one caption written for four images
    texts[20:25] = texts[20].clone()                              # an image whose 5 captions are one
    for ties in ("optimistic", "pessimistic"):
        _check_against_sklearn(images, texts, t2i, ks=(1, 5, 10), ties=ties)
    optimistic, pessimistic = (retrieval_map(images, texts, t2i.tolist(), ties=t) for t in ("optimistic", "pessimistic"))
    assert all(optimistic[key] > pessimistic[key] for key in optimistic)   # the ties are there and decide


def test_map_ties_on_a_collapsed_encoder():
    images, texts = unit(*[[1, 1]] * 4), unit(*[[1, 1]] * 8)
    t2i = [0, 0, 1, 1, 2, 2, 3, 3]
    assert retrieval_map(images, texts, t2i, ks=(2,))["i2t_mAP@2"] == 100
    # pessimistic: an image's 2 captions come after the 6 others -> positions 7, 8: no hit in the top 2
    assert retrieval_map(images, texts, t2i, ks=(2, 8), ties="pessimistic") == pytest.approx(
        {"t2i_mAP@2": 0, "t2i_mAP@8": 100 / 4, "i2t_mAP@2": 0, "i2t_mAP@8": 100 * (1 / 7 + 2 / 8) / 2})


def test_map_leaves_out_images_without_captions_and_rejects_bad_input():
    images, texts = unit([1, 0], [0, 1]), unit([1, 0])
    assert retrieval_map(images, texts, [0], ks=(1,))["i2t_mAP@1"] == 100   # only image 0 is a query
    with pytest.raises(ValueError, match="ties must be one of"):
        retrieval_map(images, texts, [0], ties="random")
    with pytest.raises(ValueError, match="one image index per text"):
        retrieval_map(images, unit([1, 0], [0, 1]), [0])


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_map_on_cuda_matches_the_cpu():
    g = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(40, 16, generator=g), dim=-1)
    t2i = torch.arange(40).repeat_interleave(5)
    texts = F.normalize(images[t2i] + torch.randn(200, 16, generator=g), dim=-1)
    cpu = retrieval_map(images, texts, t2i.tolist())
    assert retrieval_map(images.cuda(), texts.cuda(), t2i.tolist()) == pytest.approx(cpu, abs=1e-9)
