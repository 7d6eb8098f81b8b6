"""Weighted, mixed queries (rclip's `"2:golden retriever" + photo.jpg - fruit`): the one parser
(core/library/terms.py), the front door's weighted sum, the real `python -m core search`, and the
JSON API's terms over real HTTP, with a tiny real CLIP on the sample photos."""
from __future__ import annotations

import base64
import os
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from cli.main import main
from core import SearchQuery, build_workbench
from core.access import Caller
from core.errors import NotFoundError, QueryError
from core.images import load_image
from core.library.search import MAX_TERMS, Term, parse_terms
from core.settings import ASSETS_DIR, PROJECT_ROOT
from ui_server import serve

SAMPLES = sorted((ASSETS_DIR / "samples").glob("*.jpg"))[:6]
CJK = re.compile(r"[\u4e00-\u9fff]")


# ---------------------------------------------------------------- the parser

@pytest.mark.parametrize("typed, expected", [
    ('"2:red circle" - blue', [(2.0, "text", "red circle"), (-1.0, "text", "blue")]),
    ('"2:golden retriever" + photo.jpg - fruit',
     [(2.0, "text", "golden retriever"), (1.0, "path", "photo.jpg"), (-1.0, "text", "fruit")]),
    ("0.5:'a - b' + .5:cat - 2.:dog", [(0.5, "text", "a - b"), (0.5, "text", "cat"), (-2.0, "text", "dog")]),
    ("2:\"red circle\"", [(2.0, "text", "red circle")]),
    ("a T-shirt + dog's toy", [(1.0, "text", "a T-shirt"), (1.0, "text", "dog's toy")]),
    ("beach + 3F2A9C0E11D4 - ./pool.png", [(1.0, "text", "beach"), (1.0, "image_id", "3f2a9c0e11d4"),
                                          (-1.0, "path", "./pool.png")]),
    ("/tmp/x y.jpg + 3f2a9c0e11", [(1.0, "path", "/tmp/x y.jpg"), (1.0, "text", "3f2a9c0e11")]),   # 10 hex: text
    ("- fruit + -1.5:dog + 海滩", [(-1.0, "text", "fruit"), (-1.5, "text", "dog"), (1.0, "text", "海滩")]),
    ("note:cat + “红色 - 圆形”", [(1.0, "text", "note:cat"), (1.0, "text", "红色 - 圆形")]),
    ("   ", []),
])
def test_the_parser_reads_rclips_syntax(typed, expected):
    assert [(t.weight, t.kind, getattr(t, t.kind)) for t in parse_terms(typed)] == expected


@pytest.mark.parametrize("typed, en, zh", [
    ("cat + ", "An empty term", "空的项"),
    ("cat +  + dog", "An empty term", "空的项"),
    ('"red circle - blue', "A quote is not closed", "引号没有闭合"),
    ("2,5:cat", "is not a number", "不是数字"),
    ("1e3:cat - dog", "is not a number", "不是数字"),
    (" + ".join(["cat"] * (MAX_TERMS + 1)), f"at most {MAX_TERMS}", "最多"),
])
def test_the_parser_says_what_is_wrong_in_both_languages(typed, en, zh):
    with pytest.raises(QueryError, match=en) as caught:
        parse_terms(typed)
    assert zh in caught.value.args[0].text("zh") and CJK.search(caught.value.args[0].text("zh"))


# ---------------------------------------------------------------- the front door

@pytest.fixture(scope="module")
def wb(tiny_clip_path, tmp_path_factory):
    bench = build_workbench(str(tiny_clip_path), tmp_path_factory.mktemp("weighted") / "lib", device="cpu",
                            offline=True, fallback=False)
    bench.add(SAMPLES)
    bench.flush()
    return bench


def expected_order(wb, parts: list[tuple[float, np.ndarray]]) -> tuple[list[int], np.ndarray]:
    """The right answer in numpy: rows by descending cosine with the normalised weighted sum of unit vectors."""
    vec = sum(w * v.astype(np.float64) / np.linalg.norm(v) for w, v in parts)
    vec /= np.linalg.norm(vec)
    scores = wb.library.features.numpy().astype(np.float64) @ vec
    return list(np.argsort(-scores, kind="stable")), scores


def test_a_weighted_query_ranks_as_the_weighted_sum_of_unit_vectors(wb):
    enc = wb.encoder
    coffee = next(e for e in wb.entries() if e.name == "coffee.jpg")
    upload = SAMPLES[-1].read_bytes()
    query = SearchQuery(terms=parse_terms(f'"2:red circle" + {coffee.id} - 0.5:blue') + [Term(1.5, image=upload)],
                        k=len(SAMPLES))
    result = wb.search(query)
    red, blue = enc.encode_texts(["red circle", "blue"]).numpy()
    stored = wb.library.vector(coffee.id).numpy()
    picture = enc.encode_images([load_image(upload)])[0].numpy()
    order, scores = expected_order(wb, [(2.0, red), (1.0, stored), (-0.5, blue), (1.5, picture)])
    assert [h.rowid for h in result.hits] == order
    assert [h.score for h in result.hits] == pytest.approx([scores[i] for i in order], abs=1e-5)
    assert str(result.plan) == f"2 × “red circle” + library image {coffee.id} (coffee.jpg) − 0.5 × “blue” + 1.5 × image upload"
    assert "图库图片" in result.plan.text("zh") and "图片" in result.plan.text("zh")
    assert result.text_used == f'"2:red circle" + {coffee.id} - 0.5:blue + 1.5:[image]'


class _Translator:
    """Stands in for NLLB (no weights in tests): a fixed zh->en dictionary."""
    def translate(self, texts, to="en"):
        return [{"红色圆形": "red circle", "蓝色": "blue"}.get(t, t) for t in texts]


def test_chinese_terms_are_translated_each_and_the_plan_shows_them(tiny_clip_path, tmp_path):
    bench = build_workbench(str(tiny_clip_path), tmp_path / "lib", device="cpu", offline=True, fallback=False)
    bench.add(SAMPLES)
    bench.provide(translator=_Translator())
    typed = bench.search(SearchQuery(terms=parse_terms('"2:红色圆形" - 蓝色'), k=len(SAMPLES)))
    english = bench.search(SearchQuery(terms=parse_terms('"2:red circle" - blue'), k=len(SAMPLES)))
    assert [h.id for h in typed.hits] == [h.id for h in english.hits]
    assert [(t.weight, t.asked, t.text) for t in typed.terms] == [(2.0, "红色圆形", "red circle"), (-1.0, "蓝色", "blue")]
    assert str(typed.plan) == "2 × “红色圆形” → “red circle” − “蓝色” → “blue”" and typed.note is None
    assert typed.text_used == '"2:red circle" - blue'
    lone = bench.search(SearchQuery(terms=parse_terms("红色圆形"), k=2))   # one text: today's note, no plan
    assert lone.plan is None and "English query" in lone.note and lone.text_used == "red circle"


def test_the_old_fields_are_terms_too(wb):
    """text / image / minus with their weights give the same answer as the same terms."""
    old = wb.search(SearchQuery(text="beach", image=str(SAMPLES[0]), minus=["people, crowd"], text_weight=0.7,
                                image_weight=1.3, k=len(SAMPLES)))
    new = wb.search(SearchQuery(terms=parse_terms("0.7:beach - people - crowd")
                                + [Term(1.3, image=SAMPLES[0].read_bytes())], k=len(SAMPLES)))
    assert [(h.id, round(h.score, 5)) for h in old.hits] == [(h.id, round(h.score, 5)) for h in new.hits]


@pytest.mark.parametrize("terms, error, en, zh", [
    ([Term(-1.0, text="cat")], QueryError, "only subtracts", "只有要减去"),
    ([Term(0.0, text="cat"), Term(-1.0, text="dog")], QueryError, "only subtracts", "只有要减去"),
    ([Term(float("nan"), text="cat")], QueryError, "not a number", "不是数字"),
    ([Term(1.0, text="cat", image_id="3f2a9c0e11d4")], QueryError, "one of a text", "只能是"),
    ([Term(1.0, text="cat"), Term(-1.0, text="cat")], QueryError, "cancel out", "抵消"),
    ([Term(1.0, image_id="abcdefabcdef")], NotFoundError, "abcdefabcdef", "abcdefabcdef"),
    ([Term(1.0, path="/no/such/photo.jpg", name="photo.jpg")], QueryError, "No image file", "没有图片文件"),
])
def test_absurd_queries_are_clear_errors_in_both_languages(wb, terms, error, en, zh):
    with pytest.raises(error, match=en) as caught:
        wb.search(SearchQuery(terms=terms))
    message = caught.value.args[0]
    assert zh in message.text("zh") and CJK.search(message.text("zh"))


def test_only_the_local_user_names_image_files_in_a_query(wb):
    student = Caller("ann", admin=False, named=True, surface="page")
    query = SearchQuery(terms=parse_terms(f"red + {SAMPLES[1]}"), k=1)
    with pytest.raises(QueryError, match="names a file on the server") as caught:
        wb.search(query, student)
    assert str(SAMPLES[1].parent) not in str(caught.value)   # the message names the file, not the server's folders
    assert len(wb.search(query, Caller("local", True, True, "cli")).hits) == 1   # the command line may


# ---------------------------------------------------------------- the command line

def run_cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "core", "search", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=env, timeout=300)


def cli_ids(stdout: str) -> list[str]:
    return re.findall(r"id ([0-9a-f]{12})\)", stdout)


def test_the_command_line_parses_weights_and_negative_terms_as_rclip(wb, tiny_clip_path):
    common = ["--model", str(tiny_clip_path), "--library", str(wb.root), "-k", str(len(SAMPLES))]
    out = run_cli('"2:red circle" - blue', *common)
    assert out.returncode == 0, out.stderr
    expected = wb.search(SearchQuery(terms=[Term(2.0, text="red circle"), Term(-1.0, text="blue")], k=len(SAMPLES)))
    assert cli_ids(out.stdout) == [h.id for h in expected.hits]
    assert "plan: 2 × “red circle” − “blue”" in out.stdout
    # rclip's own form (the shell took the quotes), with an image file as a weighted term
    argv = run_cli("2:red circle", "+", f"0.5:{SAMPLES[2]}", "-", "blue", *common)
    mixed = wb.search(SearchQuery(terms=[Term(2.0, text="red circle"), Term(0.5, image=SAMPLES[2].read_bytes()),
                                         Term(-1.0, text="blue")], k=len(SAMPLES)))
    assert argv.returncode == 0 and cli_ids(argv.stdout) == [h.id for h in mixed.hits]
    assert f"0.5 × image {SAMPLES[2].name}" in argv.stdout


def test_the_command_line_says_what_is_wrong_with_a_query(wb, tiny_clip_path, capsys):
    common = ["--model", str(tiny_clip_path), "--library", str(wb.root)]
    for typed, message in (("- blue", "only subtracts"), ("2,5:cat", "not a number"), ("./nowhere.jpg", "No image file")):
        assert main(["search", typed, *common]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, typed


# ---------------------------------------------------------------- the JSON API

@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("weighted_api") / "library", lang="en") as served:
        served.wb.add(SAMPLES)
        yield served


def test_the_json_api_takes_weighted_terms(app):
    coffee = next(e.id for e in app.wb.entries() if e.name == "coffee.jpg")
    upload = base64.b64encode(SAMPLES[-1].read_bytes()).decode()
    body = {"terms": [{"text": "red circle", "weight": 2}, {"image_id": coffee},
                      {"image": "data:image/jpeg;base64," + upload, "name": "mine.jpg", "weight": 1.5},
                      {"text": "blue", "weight": -0.5}], "k": len(SAMPLES)}
    with httpx.Client(base_url=app.url, timeout=60) as http:
        reply = http.post("/api/search", json=body)
        assert reply.status_code == 200, reply.text
        got = reply.json()
        same = http.get("/api/search", params={"q": f'"2:red circle" + {coffee} - 0.5:blue', "k": len(SAMPLES)}).json()
        errors = [http.post("/api/search", json=bad) for bad in (
            {"terms": [{"text": "cat", "weight": "heavy"}]},
            {"terms": [{"text": "cat", "weight": -1}]},
            {"q": f"red + {SAMPLES[1]}"},
            {"terms": [{"image": "not base64!"}]},
            {"terms": [{"text": "cat"}] * (MAX_TERMS + 1)})]
    expected = app.wb.search(SearchQuery(terms=[Term(2, text="red circle"), Term(1, image_id=coffee),
                                                Term(1.5, image=SAMPLES[-1].read_bytes()), Term(-0.5, text="blue")],
                                         k=len(SAMPLES)))
    assert [h["id"] for h in got["results"]] == [h.id for h in expected.hits]
    assert [h["score"] for h in got["results"]] == pytest.approx([h.score for h in expected.hits], abs=1e-5)
    assert got["terms"] == [{"text": "red circle", "weight": 2.0}, {"image_id": coffee, "name": "coffee.jpg", "weight": 1.0},
                            {"image": "mine.jpg", "weight": 1.5}, {"text": "blue", "weight": -0.5}]
    assert "2 × “red circle”" in got["plan"] and "image mine.jpg" in got["plan"]
    assert same["plan"].startswith("2 × “red circle” + library image")   # GET's q reads the same syntax
    assert [(e.status_code, e.json()["kind"]) for e in errors] == [
        (400, "ValidationError"), (400, "QueryError"), (400, "QueryError"), (400, "ImageError"), (400, "QueryError")]
    assert "names a file on the server" in errors[2].json()["error"] and str(SAMPLES[1].parent) not in errors[2].text


def test_the_page_takes_the_same_syntax_and_shows_the_plan(app):
    """The search box reads weighted terms (a library image id among them); its results are /api/search's
    strong ones, and the info says the plan; "Add to the query" appends the selected result's id."""
    from gradio_client import Client
    from ui.callbacks import Callbacks
    coffee = next(e.id for e in app.wb.entries() if e.name == "coffee.jpg")
    typed = f'"2:red circle" + {coffee} - 0.5:blue'
    gallery, info = Client(app.url, verbose=False).predict(typed, None, "", len(SAMPLES), 0, api_name="/search")
    hits = httpx.get(app.url + "api/search", params={"q": typed, "k": len(SAMPLES)}, timeout=60).json()["results"]
    names = [item["caption"].split(" · ", 1)[1] for item in gallery]
    assert names == [h["name"] for h in hits if not h["weak"]]
    assert f"Query plan: 2 × “red circle” + library image {coffee} (coffee.jpg) − 0.5 × “blue”" in info
    assert Callbacks.add_term("red circle", coffee, "en") == f"red circle + {coffee}"
