"""Gradio's own texts ("Drop File Here", "Click to Upload", "Loading…") in the app's language.

Gradio's front end translates its built-in texts with svelte-i18n, reading the browser's locale
once as the page starts. Two pieces make them follow this app instead:

- `LocaleScript`, an ASGI middleware, puts a tiny script at the top of the page's <head>, before
  Gradio's own code runs: the page's language (`?lang=zh|en` in the address, else demo.py's
  `--lang`) becomes `navigator.language`, so Gradio starts in it, and so does the app's
  language radio (it reads the same value).
- `switch_js()`, run in the browser by the language radio, calls the `changeLocale` that Gradio's
  settings panel uses (one hashed module of its front end, imported by the same URL, so the
  same instance) and records `?lang=` in the address, so a reload keeps the choice. Components
  already on screen keep Gradio's text until the page reloads (Gradio renders them once); the
  image inputs carry their own localized placeholder (ui/tabs.py), so they switch at once.
- Both set `data-ui-lang` on the page's <html>: Gradio writes its toasts' titles ("Error",
  "Warning") in English whatever the locale, and the app's CSS (`TOAST_CSS`) says them in Chinese.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import gradio as gr

__all__ = ["LocaleScript", "switch_js", "detect_js", "GRADIO_LOCALES", "TOAST_CSS"]

log = logging.getLogger(__name__)

GRADIO_LOCALES = {"zh": "zh-CN", "en": "en-US"}   # app language -> the locale Gradio's front end knows

# Gradio's toast titles are its English type names; on a Chinese page the title is hidden and said in Chinese
TOAST_TITLES_ZH = {"error": "出错了", "warning": "注意", "info": "提示", "success": "完成"}
TOAST_CSS = "\n".join(
    f'html[data-ui-lang="zh"] .toast-title.{kind} {{font-size: 0 !important}}\n'
    f'html[data-ui-lang="zh"] .toast-title.{kind}::before {{content: "{zh}"; font-size: var(--text-lg)}}'
    for kind, zh in TOAST_TITLES_ZH.items())

_ASKED = "(() => { const a = new URLSearchParams(location.search).get('lang'); return a === 'zh' || a === 'en' ? a : null; })()"

_HEAD = """<script>(() => {
  const lang = ASKED || FORCED;
  document.documentElement.dataset.uiLang = lang || ((navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh' : 'en');
  if (!lang) return;
  const tag = LOCALES[lang];
  Object.defineProperty(navigator, 'language', {get: () => tag, configurable: true});
  Object.defineProperty(navigator, 'languages', {get: () => [tag], configurable: true});
})();</script>"""

_SWITCH = """(lang, ...rest) => {
  document.documentElement.dataset.uiLang = lang;   // toast titles (ui/app.py CSS) follow
  const u = new URL(location.href);
  if (u.searchParams.get('lang') !== lang) { u.searchParams.set('lang', lang); history.replaceState(history.state, '', u); }
  const main = document.querySelector('script[type="module"][src*="assets/index-"]');
  if (ASSET && main) import(new URL(ASSET, main.src).href)
    .then((m) => m.changeLocale(LOCALES[lang])).catch((e) => console.warn('changeLocale', e));
  return [lang, ...rest];
}"""


def head_script(forced: str | None) -> str:
    """The <head> script that sets the page's locale before Gradio starts (`forced`: --lang)."""
    return (_HEAD.replace("ASKED", _ASKED).replace("FORCED", json.dumps(forced))
            .replace("LOCALES", json.dumps({k: v for k, v in GRADIO_LOCALES.items()})))


def detect_js(follow_browser: bool = True) -> str:
    """On page load, the radio's language: `?lang=` in the address, else (following the browser)
    the page's locale, which head_script has set from --lang or left as the browser's."""
    fallback = "((navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh' : 'en')" if follow_browser else "current"
    return f"(current) => (document.documentElement.dataset.uiLang = {_ASKED} || {fallback})"


@lru_cache(maxsize=1)
def switch_js() -> str:
    """JS for the language radio: Gradio's texts follow, `?lang=` is recorded. It hands its inputs
    (the language, then the message slots' States) on unchanged to the Python side."""
    return _SWITCH.replace("ASSET", json.dumps(_change_locale_module())).replace("LOCALES", json.dumps(GRADIO_LOCALES))


def _change_locale_module() -> str | None:
    """"./core-XXXX.js": the front-end module exporting `changeLocale`, or None (with a log line) if
    this Gradio version has none; then only the app's own texts switch in place."""
    assets = Path(gr.__file__).parent / "templates" / "frontend" / "assets"
    for path in sorted(assets.glob("*.js")):
        if path.stat().st_size < 2_000_000 and "as changeLocale" in path.read_text(encoding="utf-8", errors="ignore"):
            return f"./{path.name}"
    log.warning("Gradio %s has no changeLocale module: its own texts switch language on the next reload", gr.__version__)
    return None


class LocaleScript:
    """ASGI middleware: the app's HTML pages get `head_script(forced)` first in their <head>."""

    def __init__(self, app, forced: str | None = None):
        self.app, self.script = app, head_script(forced).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def hold(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if not headers.get(b"content-type", b"").startswith(b"text/html"):
                    return await send(message)
                start = message
                return None
            if start is None:   # not HTML: pass through untouched
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            body = b"".join(chunks).replace(b"<head>", b"<head>" + self.script, 1)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        await self.app(scope, receive, hold)
