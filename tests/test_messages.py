"""Every message key in both languages (issue 11, item 3).

- ui/i18n.py: every key has a Chinese and an English text, the Chinese one is Chinese, both take the
  same fields and format with them; every key the UI names exists, and every key is used.
- core/: every `Msg(zh, en, ...)` has literal texts, Chinese Chinese, the same fields in both, and
  is given every field; every error core raises on purpose carries a Msg, so the app can show
  it in the user's language (only the command-line-only modules below may speak English alone).
"""
from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from core.errors import __all__ as ERROR_NAMES
from core.messages import Msg, localize
from core.settings import PROJECT_ROOT
from ui import i18n

CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
# The same in both languages on purpose (names of things, examples meant to be typed as they are)
SAME_IN_BOTH = {"app.lang", "learn.transformer", "learn.lstm", "learn.probe_assign_ph"}
# Only ever printed on a terminal (the CLI speaks English): their errors may be plain strings
CLI_ONLY = {"core/__main__.py", "core/train.py", "core/evaluate.py", "core/lab/evaluate.py", "core/lab/csvpairs.py"}
CLI_ONLY_DIRS = ("core/scale/",)
ERRORS = set(ERROR_NAMES) - {"EXPECTED_ERRORS", "WorkbenchError"} | {"WorkbenchError"}


def fields(template: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def _sample(names: set[str]) -> dict:
    return {n: 1 for n in names}


# ------------------------------------------------------------------ ui/i18n.py

@pytest.mark.parametrize("key", sorted(i18n._S))
def test_every_ui_key_in_both_languages(key):
    zh, en = i18n._S[key]
    assert zh.strip() and en.strip(), f"{key}: an empty text"
    if key not in SAME_IN_BOTH:
        assert CJK.search(zh), f"{key}: the Chinese text has no Chinese: {zh!r}"
    assert fields(zh) == fields(en), f"{key}: fields differ: zh {fields(zh)} vs en {fields(en)}"
    for lang in ("zh", "en"):   # formats with its fields (or with none)
        i18n.t(key, lang, **_sample(fields(en))) if fields(en) else i18n.t(key, lang)


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_every_key_the_ui_names_exists_and_every_key_is_used():
    ui_files = [p for p in (PROJECT_ROOT / "ui").rglob("*.py") if p.name != "i18n.py"] + [PROJECT_ROOT / "demo.py"]
    used = set().union(*(_string_constants(p) for p in ui_files))
    keyish = {s for s in used if re.fullmatch(r"[a-z]+\.[a-z0-9_]+", s)}
    prefixes = {k.split(".")[0] for k in i18n._S}
    missing = {s for s in keyish if s.split(".")[0] in prefixes and s not in i18n._S}
    assert not missing, f"keys named in ui/ but missing from ui/i18n.py: {sorted(missing)}"
    unused = set(i18n._S) - used
    assert not unused, f"keys in ui/i18n.py that nothing shows: {sorted(unused)}"


# ------------------------------------------------------------------ core/: Msg and raised errors

def _core_files() -> list[Path]:
    return sorted(p for p in (PROJECT_ROOT / "core").rglob("*.py") if p.name != "messages.py")


def _rel(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def _msg_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Msg":
            yield node


def test_every_core_msg_in_both_languages():
    seen = 0
    for path in _core_files():
        for call in _msg_calls(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{_rel(path)}:{call.lineno}"
            assert len(call.args) == 2 and all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                               for a in call.args), f"{where}: Msg takes two literal texts (zh, en)"
            zh, en = (a.value for a in call.args)
            assert CJK.search(zh), f"{where}: the Chinese text has no Chinese: {zh!r}"
            assert fields(zh) == fields(en), f"{where}: fields differ: zh {fields(zh)} vs en {fields(en)}"
            given = {k.arg for k in call.keywords}
            if None not in given:   # no **fields
                assert fields(en) <= given, f"{where}: fields {sorted(fields(en) - given)} not given"
            seen += 1
    assert seen > 100, f"only {seen} Msg(...) in core/"


def _module_msgs(tree: ast.Module) -> set[str]:
    """Module-level names assigned from Msg(...) (constants such as images.NOT_A_FILE)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                isinstance(node.value.func, ast.Name) and node.value.func.id == "Msg":
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _is_msg(node: ast.AST, constants: set[str]) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Msg":
        return True
    return isinstance(node, ast.Name) and node.id in constants


def test_every_error_core_raises_carries_a_msg():
    bad, checked = [], 0
    for path in _core_files():
        rel = _rel(path)
        if rel in CLI_ONLY or rel.startswith(CLI_ONLY_DIRS) or rel == "core/errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = _module_msgs(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name not in ERRORS:
                continue
            args = node.exc.args
            message = args[1] if name == "ImageError" and len(args) > 1 else args[0] if args else None
            if message is None or not _is_msg(message, constants):
                bad.append(f"{rel}:{node.lineno} raise {name}(...)")
            checked += 1
    assert checked > 50, f"only {checked} raises found: is the walk broken?"
    assert not bad, "errors raised with English only (use core.messages.Msg):\n" + "\n".join(bad)


def test_msg_is_its_english_text_and_says_itself_in_chinese():
    reason = Msg("文件已损坏", "the file is corrupt")
    m = Msg("无法读取 {name}：{reason}", "Cannot read {name}: {reason}", name="a.jpg", reason=reason)
    assert m == "Cannot read a.jpg: the file is corrupt" and isinstance(m, str)
    assert m.text("zh") == "无法读取 a.jpg：文件已损坏" and localize(m, "en") == str(m)
    assert localize(ValueError(m), "zh") == "无法读取 a.jpg：文件已损坏"
    assert localize(ValueError("plain"), "zh") == "plain"


def test_one_helper_gives_the_message_an_error_was_raised_with():
    """core.messages.error_message is the only copy: the encoders and the query planner use it."""
    from core.language import query
    from core.messages import error_message
    from core.models import base
    reason = Msg("缺少模型", "the model is missing")
    assert error_message(RuntimeError(reason)) is reason                       # both languages kept
    assert error_message(OSError(2, "No such file")) == "[Errno 2] No such file"   # anything else: str(e)
    assert base.error_message is error_message and query.error_message is error_message
    for path in (PROJECT_ROOT / "core").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "isinstance(e.args[0], Msg)" not in text or path.name == "messages.py", path
