"""The safety filter's parts, each through its real code: the concept and block lists, zero-shot
judging with the bundled mini model, a LAION-shaped classifier head built with torch and loaded
from a file, the review queue beside a library, and near-duplicates from stored embeddings."""
from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn as nn
from PIL import Image, ImageFilter

from core.errors import QueryRefused, SafetyError
from core.library.duplicates import collapse, near_duplicate_groups
from core.library.ingest import Upload, ingest, open_library
from core.messages import Msg
from core.models import load_encoder
from core.safety import (Held, ReviewBook, SafetyConfig, SafetyPolicy, default_mode, load_blocklist, load_concepts,
                         load_head)
from core.safety.judge import ConceptJudge
from core.settings import ASSETS_DIR, pick_runtime

SHAPES = ASSETS_DIR / "shapes"
RED_CIRCLE, BLUE_STAR = SHAPES / "19_red_circle.png", SHAPES / "09_blue_star.png"


@pytest.fixture(scope="module")
def mini():
    return load_encoder("mini", pick_runtime("cpu"))


@pytest.fixture
def red_circle_list(tmp_path):
    path = tmp_path / "class_rules.txt"
    path.write_text("# our class\nred circle\n", encoding="utf-8")
    return path


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- the lists

def test_builtin_concepts_are_bilingual_and_versioned():
    concepts = load_concepts()
    assert concepts.source == "built-in" and concepts.version == "1"
    assert len(concepts.unsafe) >= 10 and len(concepts.safe) >= 10
    nudity = concepts.unsafe[0]
    assert nudity.variants == ("nudity", "裸体") and nudity.label == "nudity / 裸体"
    assert "built-in list v1" in concepts.describe() and "内置列表" in concepts.describe().text("zh")


def test_a_users_file_replaces_the_concepts_and_keeps_the_safe_prompts(red_circle_list, tmp_path):
    own = load_concepts(red_circle_list)
    assert [c.label for c in own.unsafe] == ["red circle"] and own.safe == load_concepts().safe
    assert own.source == "class_rules.txt" and own.digest != load_concepts().digest
    both = tmp_path / "both.txt"
    both.write_text("version: 3\nblood / 血 | 0.3\nsafe: blue star\n", encoding="utf-8")
    parsed = load_concepts(both)
    assert parsed.unsafe[0].variants == ("blood", "血") and parsed.unsafe[0].threshold == 0.3
    assert [c.label for c in parsed.safe] == ["blue star"] and parsed.version == "3"


@pytest.mark.parametrize("text, says", [("blood | lots\n", "similarity between -1 and 1"),
                                        ("blood | 3\n", "not between -1 and 1"),
                                        ("# only a comment\n\n", "names no concept")])
def test_a_bad_concept_file_is_refused_saying_where(tmp_path, text, says):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SafetyError) as e:
        load_concepts(path)
    assert says in str(e.value) and "bad.txt" in str(e.value)
    assert isinstance(e.value.args[0], Msg) and e.value.args[0].text("zh") != str(e.value)


def test_a_missing_concept_file_says_so(tmp_path):
    with pytest.raises(SafetyError, match="File not found"):
        load_concepts(tmp_path / "nope.txt")


def test_blocklist_matches_whole_english_words_and_chinese_anywhere():
    blocked = load_blocklist()
    assert blocked.version == "1"
    assert blocked.blocks("a SEXY photo") == "sexy"
    assert blocked.blocks("Essex county") is None and blocked.blocks("a nudibranch") is None
    assert blocked.blocks("一张色情图片") == "色情"
    assert blocked.blocks("a red circle") is None and blocked.blocks("一只猫") is None
    assert blocked.blocks("self-harm pictures") == "self-harm"


# ---------------------------------------------------------------- zero-shot judging

def test_the_mini_model_cannot_judge_the_builtin_list(mini):
    judge = ConceptJudge(mini, load_concepts())
    assert judge.judged == 0 and len(judge.unjudged) == len(load_concepts().unsafe)
    vectors = mini.encode_images([Image.open(RED_CIRCLE).convert("RGB")])
    assert [v.flagged for v in judge.judge(vectors)] == [False]   # no rule, no guess
    policy = SafetyPolicy(SafetyConfig(mode="standard", shared=True), mini, ".")
    note = policy.cannot_judge()
    assert note and "cannot read 14 of the unsafe concepts" in note and "读不懂" in note.text("zh")
    assert policy.describe().startswith("none: the model mini:")


def test_a_concept_the_model_knows_is_judged_like_any_other(mini, red_circle_list):
    judge = ConceptJudge(mini, load_concepts(red_circle_list))
    assert judge.unjudged == [] and judge.judged == 1
    shapes = [Image.open(p).convert("RGB") for p in (RED_CIRCLE, BLUE_STAR, SHAPES / "02_yellow_square.png")]
    verdicts = judge.judge(mini.encode_images(shapes))
    assert [v.flagged for v in verdicts] == [True, False, False]
    assert verdicts[0].concept == "red circle" and verdicts[0].score > 0.2 > verdicts[1].score


def test_a_threshold_in_the_list_raises_the_bar(mini, tmp_path):
    path = tmp_path / "high.txt"
    path.write_text("red circle | 0.99\n", encoding="utf-8")
    vectors = mini.encode_images([Image.open(RED_CIRCLE).convert("RGB")])
    assert not ConceptJudge(mini, load_concepts(path)).judge(vectors)[0].flagged


def test_queries_about_a_concept_are_refused_others_pass(mini, red_circle_list):
    policy = SafetyPolicy(SafetyConfig(mode="standard", concepts=str(red_circle_list)), mini, ".")
    embed = lambda text: mini.encode_texts([text])[0]   # noqa: E731
    for query in ("red circle", "a red circle", "红色圆形", "porn"):
        with pytest.raises(QueryRefused) as e:
            policy.check_query(query, embed=embed)
        assert query not in str(e.value) and e.value.args[0].text("zh") != str(e.value)
    for query in ("blue star", "yellow circle", "a photo"):
        policy.check_query(query, embed=embed)
    with pytest.raises(QueryRefused):   # a Chinese query is judged by what the encoder reads (its translation)
        policy.check_query("一张图", "a sexy red circle", embed)
    SafetyPolicy(SafetyConfig(mode="off", concepts=str(red_circle_list)), mini, ".").check_query("red circle", embed=embed)


def test_modes_and_their_defaults():
    assert default_mode(shared=True, env={}) == "standard" and default_mode(shared=False, env={}) == "off"
    assert default_mode(shared=True, env={"CLIP_WB_SAFETY": "strict"}) == "strict"
    with pytest.raises(SafetyError, match="expected one of off, standard, strict"):
        default_mode(shared=False, env={"CLIP_WB_SAFETY": "loose"})
    with pytest.raises(SafetyError):
        SafetyConfig(mode="loose")
    assert SafetyConfig(shared=True).collapses and not SafetyConfig().collapses


# ---------------------------------------------------------------- the classifier head

def laion_head(dim: int) -> dict:
    """A state dict of LAION's NSFW detector shape (as ported to PyTorch), random weights."""
    torch.manual_seed(0)
    layers = {"linear_1": nn.Linear(dim, 64), "linear_2": nn.Linear(64, 512), "linear_3": nn.Linear(512, 256),
              "linear_4": nn.Linear(256, 1)}
    state = {f"{name}.{k}": v for name, layer in layers.items() for k, v in layer.state_dict().items()}
    state["norm.mean"], state["norm.variance"] = torch.zeros(dim) + 0.01, torch.ones(dim) * 0.5
    return state


def reference(state: dict, x: torch.Tensor) -> torch.Tensor:
    x = (x - state["norm.mean"]) / state["norm.variance"].sqrt()
    for i in range(1, 5):
        x = x @ state[f"linear_{i}.weight"].T + state[f"linear_{i}.bias"]
        x = torch.relu(x) if i < 4 else torch.sigmoid(x)
    return x[:, 0]


def test_a_laion_shaped_head_loads_and_scores_as_its_layers_say(mini, tmp_path):
    state = laion_head(mini.dim)
    torch.save(state, tmp_path / "head.pth")
    head = load_head(tmp_path / "head.pth", mini)
    x = torch.nn.functional.normalize(torch.randn(3, mini.dim), dim=-1)
    assert torch.allclose(head.probability(x), reference(state, x), atol=1e-6)
    from safetensors.torch import save_file
    save_file(state, str(tmp_path / "head.safetensors"))
    assert torch.allclose(load_head(tmp_path / "head.safetensors", mini).probability(x), reference(state, x), atol=1e-6)


@pytest.mark.parametrize("dim", [512, 768])
def test_a_head_for_another_dimension_is_refused_clearly(mini, tmp_path, dim):
    torch.save(laion_head(dim), tmp_path / "head.pth")
    with pytest.raises(SafetyError) as e:
        load_head(tmp_path / "head.pth", mini)
    assert f"reads {dim}-d embeddings but the model {mini.model_id} gives 256-d" in str(e.value)
    assert f"{dim} 维" in e.value.args[0].text("zh")


def test_a_head_for_another_model_or_not_a_head_is_refused(mini, tmp_path):
    torch.save({"state_dict": laion_head(mini.dim), "model_id": "ViT-L/14"}, tmp_path / "other.pth")
    with pytest.raises(SafetyError, match="trained for the model ViT-L/14"):
        load_head(tmp_path / "other.pth", mini)
    torch.save({"fc.weight": torch.zeros(1, mini.dim)}, tmp_path / "fc.pth")
    with pytest.raises(SafetyError, match="not a LAION-style classifier head"):
        load_head(tmp_path / "fc.pth", mini)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SafetyError, match="Cannot read the classifier head"):
        load_head(tmp_path / "junk.pth", mini)


def test_the_head_flags_what_zero_shot_lets_pass(mini, tmp_path):
    state = laion_head(mini.dim)
    state["linear_4.bias"] = torch.tensor([50.0])   # says "unsafe" to everything
    torch.save(state, tmp_path / "always.pth")
    policy = SafetyPolicy(SafetyConfig(mode="standard", head=str(tmp_path / "always.pth")), mini, tmp_path)
    vectors = mini.encode_images([Image.open(BLUE_STAR).convert("RGB")])
    assert policy.verdicts(vectors)[0].flagged and "classifier head always.pth" in policy.describe()
    assert policy.cannot_judge() is None   # the head judges where the zero-shot list cannot


# ---------------------------------------------------------------- the review queue

def test_the_review_queue_is_durable_shared_and_small(tmp_path):
    book, other = ReviewBook(tmp_path), ReviewBook(tmp_path)   # two processes' views of one folder
    book.hold({"a" * 64: Held("flagged", "red circle", "ann"), "b" * 64: Held("strict", None, "bob")})
    assert set(other.held()) == {"a" * 64, "b" * 64} and other.held()["a" * 64].at > 0
    assert other.held()["a" * 64].reason() == "flagged by the filter: red circle"
    assert other.release(["a" * 64, "c" * 64]) == ["a" * 64]
    assert set(book.held()) == {"b" * 64}
    on_disk = json.loads((tmp_path / "review.json").read_text(encoding="utf-8"))
    assert on_disk["version"] == 1 and list(on_disk["held"]) == ["b" * 64]
    book.release([], keep=lambda sha: False)   # holds of images no longer stored are dropped
    assert book.held() == {}


def test_a_damaged_queue_says_what_to_do(tmp_path):
    (tmp_path / "review.json").write_text("{torn", encoding="utf-8")
    with pytest.raises(Exception, match="review queue .* is damaged"):
        ReviewBook(tmp_path).held()


def test_ingest_asks_before_it_stores(mini, tmp_path):
    library = open_library(tmp_path / "lib", mini)
    seen = []

    def before_store(shas, vectors):
        seen.append([(sha, library.contains(sha)) for sha in shas])
        assert vectors.shape == (len(shas), mini.dim)
    report = ingest(library, mini, [RED_CIRCLE, BLUE_STAR], before_store=before_store)
    assert len(report.added) == 2 and [stored for batch in seen for _, stored in batch] == [False, False]
    assert not ingest(library, mini, [RED_CIRCLE], before_store=before_store).added and len(seen) == 1


# ---------------------------------------------------------------- near-duplicates

def test_near_identical_images_are_grouped_oldest_first(mini, tmp_path):
    library = open_library(tmp_path / "lib", mini)
    circle = Image.open(RED_CIRCLE).convert("RGB")
    copies = [Upload("circle.png", png(circle)), Upload("star.png", png(Image.open(BLUE_STAR).convert("RGB"))),
              Upload("circle_small.png", png(circle.resize((120, 120)).filter(ImageFilter.GaussianBlur(0.6)))),
              Upload("square.png", png(Image.open(SHAPES / "02_yellow_square.png").convert("RGB")))]
    report = ingest(library, mini, copies[:2])
    ingest(library, mini, copies[2:])
    by_name = {e.name: e for e in library.entries()}
    groups = near_duplicate_groups(library)
    assert groups == [[by_name["circle.png"].rowid, by_name["circle_small.png"].rowid]]
    assert near_duplicate_groups(library, threshold=1.01) == []
    vectors = library.vectors_of([by_name[n].rowid for n in ("circle.png", "circle_small.png", "star.png")])
    assert collapse(vectors) == [0, 2] and collapse(vectors, threshold=1.01) == [0, 1, 2]
    assert report.added   # (the first batch was stored)


# ---------------------------------------------------------------- the benchmark on a labelled folder

def test_bench_safety_measures_precision_and_recall(tmp_path, red_circle_list):
    import subprocess
    import sys
    from core.settings import PROJECT_ROOT
    for sub, names in {"safe": ["09_blue_star", "02_yellow_square", "18_green_square"],
                       "unsafe": ["19_red_circle"]}.items():
        (tmp_path / sub / "deeper").mkdir(parents=True)
        for name in names:
            (tmp_path / sub / "deeper" / f"{name}.png").write_bytes((SHAPES / f"{name}.png").read_bytes())
    circle = Image.open(RED_CIRCLE).convert("RGB").resize((100, 100))
    (tmp_path / "unsafe" / "circle_small.png").write_bytes(png(circle))
    run = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_safety.py"), str(tmp_path),
                          "--model", "mini", "--safety-concepts", str(red_circle_list)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("3 safe and 2 unsafe images, model mini:")
    assert lines[1].startswith("filter: zero-shot (class_rules.txt, 1 concept) on mini:")
    assert lines[2] == "margin +0.02 (configured): precision 1.000 recall 1.000 (tp 2, fp 0, fn 0, tn 3)"
    assert len([s for s in lines if s.startswith("margin ")]) == 8
