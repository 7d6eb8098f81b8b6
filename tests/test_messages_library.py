"""Errors and notes of the images, library, zero-shot and access code say themselves in both languages:
str(err) stays the English text (CLI, logs, JSON API, tests that match it), localize(err, "zh") is Chinese."""
from __future__ import annotations

import re

import pytest

from core.access import Access, Accounts, Limits
from core.errors import ImageError, LabelError, LibraryError, PermissionDenied, QuotaError
from core.images import load_image
from core.library.ingest import Upload, ingest, open_library
from core.messages import Msg, localize
from core.zeroshot import plan_prompts
from core_fixtures import png_bytes

CJK = re.compile(r"[\u4e00-\u9fff]")
ENGLISH_SENTENCE = re.compile(r"[A-Za-z]{2,}(?:[ ,]+[A-Za-z]{2,}){2,}")   # three English words in a row


def assert_chinese(text: str) -> None:
    assert CJK.search(text), text
    assert not ENGLISH_SENTENCE.search(text), text


@pytest.fixture()
def wb(tiny_clip_path, tmp_path):
    from core.workbench import build_workbench
    return build_workbench(str(tiny_clip_path), tmp_path / "lib", "cpu", offline=True, fallback=False)


def test_unreadable_image_file(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"just some text, not an image\n")
    with pytest.raises(ImageError) as info:
        load_image(bad)
    err = info.value
    assert str(err) == "notes.png: not an image file (unrecognised format)"
    assert isinstance(err.reason, Msg)
    zh = localize(err, "zh")
    assert zh.startswith("notes.png: ")
    assert_chinese(zh)


def test_truncated_image_keeps_the_decoder_detail_verbatim(tmp_path):
    cut = tmp_path / "cut.png"
    cut.write_bytes(png_bytes(size=(64, 64))[:60])
    with pytest.raises(ImageError) as info:
        load_image(cut)
    assert str(info.value).startswith("cut.png: corrupt or truncated image (")
    assert localize(info.value, "zh").startswith("cut.png: 图片已损坏或不完整（")


def test_the_decoders_known_reasons_are_said_in_chinese(tmp_path):
    """PIL's English ("image file is truncated (23 bytes not processed)") never sits inside a Chinese message."""
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(buf, "JPEG")
    for name, data in {"half.jpg": buf.getvalue()[:len(buf.getvalue()) // 2], "head.jpg": buf.getvalue()[:200],
                       "cut.png": png_bytes(size=(64, 64))[:60]}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError) as info:
            load_image(tmp_path / name)
        zh = localize(info.value, "zh").removeprefix(f"{name}: ")
        assert zh.startswith("图片已损坏或不完整（") and not re.search(r"[A-Za-z]{3}", zh), zh


def test_ingest_report_reasons_are_bilingual(encoder, tmp_path):
    library = open_library(tmp_path / "lib", encoder)
    report = ingest(library, encoder, [Upload("empty.png", b""), Upload("ok.png", png_bytes())])
    assert len(report.added) == 1
    [(name, reason)] = report.errors
    assert name == "empty.png" and reason == "file is empty (0 bytes)"
    assert_chinese(localize(reason, "zh"))


def test_one_label_for_zero_shot(wb):
    with pytest.raises(LabelError) as info:
        wb.classify(png_bytes(), "猫")
    err = info.value
    assert str(err).startswith("Only one label ('猫') given: zero-shot classification compares labels")
    zh = localize(err, "zh")
    assert "'猫'" in zh
    assert_chinese(zh)


def test_zero_shot_note_is_bilingual(encoder):
    class EnglishOnly:
        multilingual = False
    plan = plan_prompts(EnglishOnly(), "猫, 狗", "single", "en", translate=lambda labels: None)
    assert "untranslated" in plan.note
    assert_chinese(localize(plan.note, "zh"))


def test_permission_and_quota_refusals(wb):
    access = Access(Accounts.parse(students=["ann:pw"], admins=["teacher:pw"]), Limits(quota_mb=1e-6))
    ann = access.caller("ann")
    with pytest.raises(PermissionDenied) as denied:
        access.require_admin(ann, Msg("删除图片", "delete images"))
    assert str(denied.value) == "Only the teacher (an --admin login) may delete images; you are logged in as 'ann' (student)."
    zh = localize(denied.value, "zh")
    assert "删除图片" in zh and "'ann'" in zh
    assert_chinese(zh)

    with pytest.raises(QuotaError) as over:
        wb.add([Upload("big.png", png_bytes(size=(200, 200)))], caller=ann)   # the quota is the caller's
    assert str(over.value).startswith("Upload quota reached: ")
    assert_chinese(localize(over.value, "zh"))


def test_removing_an_unknown_image(wb):
    with pytest.raises(LibraryError) as info:
        wb.remove(["abcdef123456"])
    assert str(info.value) == "No image with id abcdef123456"
    assert localize(info.value, "zh") == "没有 ID 为 abcdef123456 的图片"
    with pytest.raises(LibraryError) as info:
        wb.remove(["zz"])
    assert str(info.value).startswith("'zz' is not an image id")
    assert_chinese(localize(info.value, "zh"))
