"""Search and zero-shot classification with a tiny CLIP through the real loaders, on the sample photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.images import iter_image_files, load_image
from core.library.ingest import Upload, ingest, open_library
from core.library.search import MAX_QUERY_CHARS, ExactIndex, Searcher, SearchQuery
from core.errors import QueryError
from core.errors import LabelError
from core.zeroshot import ZeroShotClassifier, load_labelset, load_templates, parse_labels, plan_prompts
from core_fixtures import SAMPLES, png_bytes


@pytest.fixture()
def library(tmp_path, encoder):
    lib = open_library(tmp_path / "lib", encoder)
    report = ingest(lib, encoder, list(iter_image_files([SAMPLES])))
    assert len(report.added) == 14 and not report.errors
    return lib


@pytest.fixture()
def searcher(encoder, library):
    return Searcher(encoder, library, ExactIndex(library, encoder.runtime))


def brute_force(library, vec):
    """The right answer, computed independently in numpy: rows by descending cosine score."""
    m = library.features.numpy().astype(np.float64)
    scores = m @ vec.numpy().astype(np.float64)
    return list(np.argsort(-scores, kind="stable")), scores


def test_image_query_finds_itself_first(searcher):
    img = load_image(SAMPLES / "cat_chelsea.jpg")
    hits = searcher.search(SearchQuery(image=img, k=3)).hits
    assert hits[0].name == "cat_chelsea.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_similar_to_a_library_image(searcher, library):
    entry = next(e for e in library.entries() if e.name == "rocket.jpg")
    hits = searcher.similar_to(entry.id, k=14)
    assert hits[0].id == entry.id and len(hits) == 14


def test_text_ranking_matches_brute_force(searcher, library, encoder):
    result = searcher.search(SearchQuery(text="a cat on a sofa", k=14))
    order, scores = brute_force(library, encoder.encode_texts(["a cat on a sofa"])[0])
    assert [h.rowid for h in result.hits] == order
    assert [h.score for h in result.hits] == pytest.approx([scores[i] for i in order], abs=1e-5)


def test_combined_and_negative_queries_are_weighted_sums(searcher, library, encoder):
    img = load_image(SAMPLES / "coffee.jpg")
    q = SearchQuery(text="beach", image=img, minus=["people", "crowd"], text_weight=0.7, image_weight=1.3, k=14)
    t, p, c = encoder.encode_texts(["beach", "people", "crowd"])
    expected = F.normalize(0.7 * t + 1.3 * encoder.encode_images([img])[0] - p - c, dim=-1)
    vec, used, _ = searcher.query_vector(q)
    assert torch.allclose(vec, expected, atol=1e-5) and used == "beach"
    assert [h.rowid for h in searcher.search(q).hits] == brute_force(library, expected)[0]


def test_threshold_and_k(searcher):
    hits = searcher.search(SearchQuery(text="a clock", k=14)).hits
    cut = hits[4].score
    kept = searcher.search(SearchQuery(text="a clock", k=14, threshold=cut)).hits
    assert len(kept) == 5 and all(h.score >= cut for h in kept)
    assert len(searcher.search(SearchQuery(text="a clock", k=3)).hits) == 3


@pytest.mark.parametrize("query,match", [
    (SearchQuery(text="   "), "Empty query"),
    (SearchQuery(text="x" * (MAX_QUERY_CHARS + 1)), "at most"),
    (SearchQuery(text="cat", k=0), "k must be"),
    (SearchQuery(text="cat", minus=["cat"]), "cancel out"),
])
def test_bad_queries_are_clear_errors(searcher, query, match):
    with pytest.raises(QueryError, match=match):
        searcher.search(query)


def test_long_query_is_truncated_to_the_context_not_rejected(searcher):
    assert searcher.search(SearchQuery(text="a very long description " * 30, k=2)).hits


def test_query_embeddings_are_cached(searcher, encoder, monkeypatch):
    calls = []
    original = encoder.encode_texts
    monkeypatch.setattr(encoder, "encode_texts", lambda texts: calls.append(list(texts)) or original(texts))
    for _ in range(3):
        searcher.search(SearchQuery(text="a red rocket", k=1))
    assert calls == [["a red rocket"]]


def test_empty_library_returns_no_hits(tmp_path, encoder):
    lib = open_library(tmp_path / "empty", encoder)
    assert Searcher(encoder, lib).search(SearchQuery(text="cat")).hits == []


def test_search_sees_images_added_by_another_handle(searcher, library, encoder):
    other = open_library(library.root, encoder)     # e.g. the CLI while the app runs
    ingest(other, encoder, [Upload("new.png", png_bytes((1, 2, 3)))])
    assert len(searcher.search(SearchQuery(text="cat", k=100)).hits) == 15


# ------------------------------------------------------------------ zero-shot

def test_classify_probabilities_are_the_softmax_of_scaled_cosines(encoder):
    clf = ZeroShotClassifier(encoder)
    img = load_image(SAMPLES / "cat_chelsea.jpg")
    labels, templates = ["cat", "dog", "小鸟"], load_templates("selected7")
    top = clf.classify(img, labels, templates)
    prompts = encoder.encode_texts([t.replace("{c}", l) for l in labels for t in templates]).view(3, 7, -1)
    classes = F.normalize(prompts.mean(1), dim=-1)
    expected = (encoder.logit_scale * encoder.encode_images([img]) @ classes.T).softmax(-1)[0]
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert dict(top) == pytest.approx({l: float(expected[i]) for i, l in enumerate(labels)}, abs=1e-5)


def test_classify_known_answer_with_labels_made_from_the_image(encoder):
    # Templates "{c}" with the right label identical to the prompt whose embedding we plant:
    # a classifier whose class matrix contains the image's own embedding must pick that class.
    clf = ZeroShotClassifier(encoder)
    img = load_image(SAMPLES / "rocket.jpg")
    key = (encoder.model_id, ("rocket", "cat", "coffee"), ("{c}",))
    planted = torch.cat([encoder.encode_images([img]), encoder.encode_texts(["cat", "coffee"])])
    clf._cache[key] = planted
    assert clf.classify(img, ["rocket", "cat", "coffee"], ["{c}"])[0][0] == "rocket"


def test_class_matrices_are_cached_per_labels_and_templates(encoder, monkeypatch):
    clf = ZeroShotClassifier(encoder)
    calls = []
    original = encoder.encode_texts
    monkeypatch.setattr(encoder, "encode_texts", lambda texts: calls.append(len(texts)) or original(texts))
    img_feats = torch.randn(2, encoder.dim)
    for _ in range(3):
        clf.probabilities(img_feats, ["a", "b"], ["a photo of a {c}."])
    clf.probabilities(img_feats, ["a", "c"], ["a photo of a {c}."])
    assert calls == [2, 2]


@pytest.mark.parametrize("text,expected", [
    ("cat, dog,小鸟", ["cat", "dog", "小鸟"]),
    ("猫，狗；鸟\nfish", ["猫", "狗", "鸟", "fish"]),
    (" a photo , , b ", ["a photo", "b"]),
])
def test_parse_labels(text, expected):
    assert parse_labels(text) == expected


@pytest.mark.parametrize("text,match", [("", "No labels"), (" , \n", "No labels"), ("cat", "at least two"),
                                        ("cat, Cat, dog", "Duplicate labels: Cat"), ("a," + "b" * 300, "characters")])
def test_bad_labels(text, match):
    with pytest.raises(LabelError, match=match):
        parse_labels(text)


def test_builtin_sets_and_templates():
    assert len(load_labelset("imagenet1k")) == 1000 and load_labelset("imagenet1k", "zh")[0] == "丁鲷"
    assert len(load_labelset("CIFAR-10", "zh")) == 10 and len(load_labelset("cifar100")) == 100
    assert len(load_templates("ensemble80")) == 80 and len(load_templates("selected7")) == 7
    assert load_templates("single", "zh") == ["{c}的照片。"] and load_templates("bare") == ["{c}"]
    assert load_templates("a drawing of a {c}") == ["a drawing of a {c}"]
    with pytest.raises(LabelError, match="contain"):
        load_templates("no placeholder here")


def test_stored_captions_rerank_text_queries(tmp_path, encoder):
    captions = [("a cup of coffee on a table", "桌子上的一杯咖啡"), ("a rocket launching into the sky", "火箭升空")]
    lib = open_library(tmp_path / "lib", encoder)
    # stands in for core.lang.caption_metadata (same output shape), called once for the batch of two
    ingest(lib, encoder, [SAMPLES / "coffee.jpg", SAMPLES / "rocket.jpg"],
           annotate=lambda images: [{"caption_en": en, "caption_zh": zh} for en, zh in captions[:len(images)]])
    searcher = Searcher(encoder, lib)

    def scores(text, **kw):
        return {h.name: h.score for h in searcher.search(SearchQuery(text=text, k=2, **kw)).hits}
    plain, boosted = scores("rocket launch", use_captions=False), scores("rocket launch")
    assert boosted["rocket.jpg"] == pytest.approx(plain["rocket.jpg"] + 0.1, abs=1e-5)   # both words in its caption
    assert boosted["coffee.jpg"] == pytest.approx(plain["coffee.jpg"], abs=1e-5)         # no word in its caption
    plain, boosted = scores("咖啡", use_captions=False), scores("咖啡")
    assert boosted["coffee.jpg"] == pytest.approx(plain["coffee.jpg"] + 0.1, abs=1e-5)   # Chinese caption matches


class _English:   # an English-only encoder, as far as planning is concerned
    multilingual = False


class _Bilingual:
    multilingual = True


def test_plan_prompts_for_english_only_and_chinese_capable_encoders():
    zh_set = plan_prompts(_English(), "cifar10", "single", "zh")
    assert zh_set.labels[0] == "飞机" and zh_set.prompt_labels[0] == "airplane"
    assert zh_set.templates == ["a photo of a {c}."] and zh_set.note is None
    typed = plan_prompts(_English(), "猫, dog", "single", "zh", translate=lambda xs: ["cat", "dog"])
    assert typed.labels == ["猫", "dog"] and typed.prompt_labels == ["cat", "dog"] and "猫 → cat" in typed.note
    untranslated = plan_prompts(_English(), "猫, 狗", "single", "en", translate=lambda xs: None)
    assert untranslated.prompt_labels == ["猫", "狗"] and "untranslated" in untranslated.note
    native = plan_prompts(_Bilingual(), "猫, 狗", "single", "zh")
    assert native.prompt_labels == ["猫", "狗"] and native.templates == ["{c}的照片。"] and native.note is None
    english = plan_prompts(_English(), "cat, dog", "ensemble80", "en")
    assert english.prompt_labels == ["cat", "dog"] and len(english.templates) == 80
    # the templates follow the labels' language, not the page's: English labels on a Chinese page
    # read "a photo of a red circle." (as the dropdown says), so both pages give the same numbers
    for spec in ("single", "ensemble80"):
        assert plan_prompts(_Bilingual(), "red circle, blue star", spec, "zh").templates == \
            plan_prompts(_Bilingual(), "red circle, blue star", spec, "en").templates == load_templates(spec, "en")


def test_workbench_zero_shot_shows_chinese_and_reads_english(tmp_path, tiny_clip_path):
    from core.workbench import build_workbench
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", "cpu", offline=True, fallback=False)
    img = load_image(SAMPLES / "cat_chelsea.jpg")
    top, note = wb.classify(img, "cifar10", "single", "zh", top_k=10)
    english, _ = wb.classify(img, "cifar10", "single", "en", top_k=10)
    assert {l for l, _ in top} == set(load_labelset("cifar10", "zh"))
    zh_to_en = dict(zip(load_labelset("cifar10", "zh"), load_labelset("cifar10", "en")))
    assert {zh_to_en[l]: p for l, p in top} == pytest.approx(dict(english), abs=1e-6)
