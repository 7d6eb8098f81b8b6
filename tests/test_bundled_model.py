"""The bundled offline model on the bundled Shapes samples: what a newcomer offline sees.

Thresholds sit well above chance and a little below the model card's held-out numbers
(shape 74-76 %, colour 100 %), since these are only 24 images."""
from __future__ import annotations

import pytest

from core.models import load_encoder
from core.images import load_image
from core.library.ingest import open_library, seed
from core.library.search import Searcher, SearchQuery
from core.settings import ASSETS_DIR, pick_runtime
from core.lab.shapes import class_prompts, describe
from core.zeroshot import ZeroShotClassifier

SHAPES = sorted((ASSETS_DIR / "shapes").glob("*.png"))   # NN_<colour>_<shape>.png


def truth(path):
    _, colour, shape = path.stem.split("_")
    return {"colour": colour, "shape": shape}


@pytest.fixture(scope="module")
def mini():
    return load_encoder("mini", pick_runtime("cpu"))


@pytest.fixture(scope="module")
def searcher(mini, tmp_path_factory):
    lib = open_library(tmp_path_factory.mktemp("seeded"), mini)
    report = seed(lib, mini)
    assert not report.errors and len(lib) == len(report.added) == 14 + len(SHAPES)
    return Searcher(mini, lib)


def test_red_circle_query_finds_the_red_circle(searcher):
    assert searcher.search(SearchQuery(text="红色圆形", k=1)).hits[0].name == "19_red_circle.png"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_offline_search_finds_each_shape(searcher, lang):
    found = 0
    for path in SHAPES:
        query = describe(truth(path), lang, style=0)   # "a red circle" / "红色圆形"-style captions
        found += path.name in [h.name for h in searcher.search(SearchQuery(text=query, k=3)).hits]
    assert found / len(SHAPES) >= 0.6, (lang, found)     # chance: 3 of 38 library images


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("attribute,minimum", [("shape", 0.6), ("colour", 0.9)])
def test_offline_zero_shot_accuracy(mini, lang, attribute, minimum):
    names, prompts = class_prompts(attribute, lang)
    english, _ = class_prompts(attribute, "en")
    clf = ZeroShotClassifier(mini)
    right = sum(english[names.index(clf.classify(load_image(p), names, ["{c}"], prompt_labels=prompts)[0][0])]
                == truth(p)[attribute] for p in SHAPES)
    assert right / len(SHAPES) >= minimum, (right, len(SHAPES))


def test_offline_fallback_keeps_a_real_models_library_apart(tmp_path, tiny_clip_path):
    from core.library.ingest import ingest, peek_model
    from core.workbench import build_workbench
    first = build_workbench(str(tiny_clip_path), tmp_path / "lib", "cpu", fallback=False)
    ingest(first.library, first.encoder, [SHAPES[0]])
    before = peek_model(tmp_path / "lib")
    # no network, empty cache: ViT-B/32 cannot be had, the bundled model steps in
    wb = build_workbench("ViT-B/32", tmp_path / "lib", "cpu", offline=True, cache=tmp_path / "empty-cache")
    assert wb.encoder.model_id.startswith("mini:") and wb.library.root == tmp_path / "lib" / "offline-mini"
    assert "ViT-B/32" in wb.notice and "offline-mini" in wb.notice
    assert peek_model(tmp_path / "lib") == before and len(first.library) == 1
