"""A query as weighted terms, and the one parser of the typed query syntax (rclip's).

    parse_terms('"2:golden retriever" + photo.jpg - fruit')
    # [Term(weight=2.0, text='golden retriever'), Term(weight=1.0, path='photo.jpg'), Term(weight=-1.0, text='fruit')]
    parse_terms("red circle + 3f2a9c0e11d4")   # a library image id (12+ hex digits) is an image term

The grammar, as rclip reads its command line (`rclip "2:cat" + ./pool.jpg - fruit`):
- terms are separated by " + " or " - " (the operator with a space on each side; "T-shirt" is one word);
  a leading "+ " / "- " signs the first term;
- a term may be quoted ("..." or '...' or “...”), the whole of it or what follows its weight, so a quoted
  term keeps its " - " and its spaces;
- "W:term" weighs the term by W (a number: 2, 0.5, .5, 2.; a signed one, -1:fruit, subtracts too);
- a term that looks like a file path (starts with /, ./, ../, ~/, file://, C:\\, or names a file ending
  in an image extension) is an image read from that file: only the machine's own user may name one
  (the command line, Python); the front door refuses it from the shared app;
- a term of 12 to 64 hex digits is a library image id (its stored embedding, no re-encoding);
- anything else is text (Chinese or English; the front door translates it for an English-only model).

The query vector is the weighted sum of the terms' L2-normalised embeddings, normalised again
(core/library/search.py): a negative weight subtracts. Nothing here reads a file or the library.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import QueryError
from ..images import IMAGE_EXTENSIONS
from ..messages import Msg, join

__all__ = ["Term", "parse_terms", "check_terms", "describe_terms", "format_terms", "MAX_TERMS"]

MAX_TERMS = 16   # terms per query: more is a paste accident (each one is an encoder pass or an image to decode)

_OPERATOR = re.compile(r"\s+([+-])\s+")
_LEADING = re.compile(r"([+-])\s+")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}
_WEIGHT = re.compile(r"(?P<w>[^\s:\"'“‘]+):(?=\S)")           # a candidate "W:" prefix
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")         # rclip's multiplier, with a sign allowed
_NUMBERISH = re.compile(r"[-+]?[\d.,eE+-]*\d[\d.,eE+-]*")      # meant as a weight but not a number we read
_ID = re.compile(r"[0-9a-fA-F]{12,64}")
_PATH_START = re.compile(r"(?:/|\./|\.\./|~/|file://|[A-Za-z]:[\\/])")
_KINDS = ("text", "image_id", "image", "path")   # what a term may be: exactly one of them is set


@dataclass(frozen=True)
class Term:
    """One weighted term of a query: exactly one of `text`, `image_id`, `image` or `path` is set."""
    weight: float = 1.0           # a negative weight subtracts the term
    text: str | None = None       # a text (Chinese or English), as typed or as the encoder reads it
    image_id: str | None = None   # a library image's id (its stored embedding is used)
    image: Any = None             # a PIL image or its file's bytes (an upload; decoded by core's safe loader)
    path: str | None = None       # an image file on this machine, named in the query (local users only)
    name: str = ""                # how an image term is shown (a file or upload name, a library image's name)
    asked: str | None = None      # a text term's text as typed, when the encoder reads a translation

    @property
    def kind(self) -> str:
        """"text" | "image_id" | "image" | "path" (check_terms makes sure there is exactly one)."""
        return next(k for k in _KINDS if getattr(self, k) is not None)


def parse_terms(query: str) -> list[Term]:
    """The terms of a typed query (see the module docstring); [] for a blank one. QueryError for an
    unclosed quote, an operator with no term after it, a weight that is not a number, too many terms."""
    query = (query or "").strip()
    if not query:
        return []
    sign, start = 1.0, 0
    lead = _LEADING.match(query)
    if lead or query in "+-":
        sign, start = (-1.0 if query[0] == "-" else 1.0), (lead.end() if lead else len(query))
    pieces = []
    while True:
        if _LEADING.match(query, start) or re.search(r"\s[+-]$", query):   # "a +  + b", "a +": a term missing
            raise _empty(query)
        end, operator = _term_end(query, start)
        pieces.append((sign, query[start:end].strip()))
        if operator is None:
            break
        sign, start = (1.0 if operator.group(1) == "+" else -1.0), operator.end()
    if len(pieces) > MAX_TERMS:
        raise _too_many(len(pieces))
    return [_term(sign, raw, query) for sign, raw in pieces]


def _term_end(query: str, start: int) -> tuple[int, re.Match | None]:
    """Where the term starting at `start` ends, and the operator after it (None at the end). A quote
    opens only at the term's start or after its weight, so an apostrophe (dog's toy) is a letter."""
    at = start
    weight = _WEIGHT.match(query, at)
    if weight:
        at = weight.end()
    if at < len(query) and query[at] in _QUOTES:
        close = query.find(_QUOTES[query[at]], at + 1)
        if close < 0:
            raise QueryError(Msg("引号没有闭合：{part}", "A quote is not closed: {part}", part=query[start:]))
        at = close + 1
    operator = _OPERATOR.search(query, at)
    return (operator.start() if operator else len(query)), operator


def _term(sign: float, raw: str, query: str) -> Term:
    body = _unquote(raw)
    weight, body = _weight(body)
    body = _unquote(body).strip()
    if not body:
        raise _empty(query)
    weight *= sign
    if _ID.fullmatch(body):
        return Term(weight, image_id=body.lower())
    if _PATH_START.match(body) or ("." in body and " " not in body and _suffix(body) in IMAGE_EXTENSIONS):
        path = body[len("file://"):] if body.startswith("file://") else body
        return Term(weight, path=path, name=path.replace("\\", "/").rsplit("/", 1)[-1])
    return Term(weight, text=body)


def _empty(query: str) -> QueryError:
    return QueryError(Msg("“{query}”中有一个空的项：在 + 或 - 两侧都要写上词、图片文件或图片 ID",
                          "An empty term in '{query}': put words, an image file or an image id on both sides "
                          "of each + or -", query=query))


def _suffix(body: str) -> str:
    return "." + body.rsplit(".", 1)[-1].lower()


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]]:
        return text[1:-1]
    return text


def _weight(body: str) -> tuple[float, str]:
    """(weight, the rest) of "W:rest"; (1, body) without a weight. A prefix meant as a number but not
    one (2,5:  1e3:  1.2.3:) is an error, not silently part of the text; "note: ..." stays text."""
    m = _WEIGHT.match(body)
    if not m:
        return 1.0, body
    w = m.group("w")
    if _NUMBER.fullmatch(w):
        return float(w), body[m.end():]
    if _NUMBERISH.fullmatch(w):
        raise _not_a_number(w)
    return 1.0, body


def _not_a_number(weight) -> QueryError:
    return QueryError(Msg("权重“{weight}”不是数字：请写成“2:猫”或“0.5:猫”这样（小数用点号），用“ - ”表示减去",
                          "The weight '{weight}' is not a number: write it as 2:cat or 0.5:cat (a decimal point, "
                          "not a comma), and subtract a term with ' - '", weight=weight))


def _too_many(n: int) -> QueryError:
    return QueryError(Msg("查询有 {n} 个项，最多 {limit} 个", "The query has {n} terms; at most {limit} are accepted",
                          n=n, limit=MAX_TERMS))


def check_terms(terms: Sequence[Term]) -> list[Term]:
    """The terms, each with exactly one of text / image_id / image / path and a finite weight, at most
    MAX_TERMS of them, and something positive to search for; QueryError otherwise. Texts are stripped
    (their length is check_query's to judge)."""
    if len(terms) > MAX_TERMS:
        raise _too_many(len(terms))
    out = []
    for term in terms:
        kinds = [k for k in _KINDS if getattr(term, k) is not None]
        if len(kinds) != 1:
            raise QueryError(Msg("每个查询项只能是文字、图片 ID 或图片中的一种，这个项给了 {n} 种",
                                 "Each query term is one of a text, an image id or an image; this one gives {n}",
                                 n=len(kinds)))
        if isinstance(term.weight, bool) or not isinstance(term.weight, (int, float)) or not math.isfinite(term.weight):
            raise _not_a_number(term.weight)
        out.append(term)
    positive = [t for t in out if t.weight > 0]
    if out and not positive:
        raise QueryError(Msg("查询只有要减去的项（或权重都为 0）：请至少给一个正权重的词或图片，例如“海滩 - 人”",
                             "The query only subtracts (or weighs everything 0): give at least one word or image "
                             "with a positive weight, e.g. 'beach - people'"))
    return out


def describe_terms(terms: Sequence[Term]) -> Msg | None:
    """The plan of a query for the user, in both languages: each term with its weight, a translated
    text with what the encoder read (2 × “金毛犬” → “golden retriever” + image cat.jpg − “fruit”)."""
    parts = []
    for i, term in enumerate(terms):
        sign = ("− " if term.weight < 0 else ("+ " if i else ""))
        weight = abs(term.weight)
        head = sign + (f"{weight:g} × " if weight != 1 else "")
        parts.append(join([head, _describe(term)], sep=""))
    return join(parts) if parts else None


def _describe(term: Term) -> str:
    if term.text is not None:
        if term.asked is not None and term.asked != term.text:
            return f"“{term.asked}” → “{term.text}”"
        return f"“{term.text}”"
    if term.image_id is not None:
        return Msg("图库图片 {id}{name}", "library image {id}{name}", id=term.image_id[:12],
                   name=f" ({term.name})" if term.name else "")
    return Msg("图片 {name}", "image {name}", name=term.name or "upload")


def format_terms(terms: Sequence[Term]) -> str:
    """The terms written back in the query syntax (what the encoder read: translated texts), e.g.
    '"2:golden retriever" + 3f2a9c0e11d4 - fruit'; a single text of weight 1 is that text."""
    if len(terms) == 1 and terms[0].text is not None and terms[0].weight == 1:
        return terms[0].text
    out = []
    for i, term in enumerate(terms):
        body = term.text if term.text is not None else ((term.image_id or "")[:12] or term.path
                                                        or f"[{term.name or 'image'}]")
        weight = abs(term.weight)
        quote = term.text is not None and (" " in term.text or ":" in term.text)
        body = f"{weight:g}:{body}" if weight != 1 else body
        body = f'"{body}"' if quote else body
        out.append(("- " if term.weight < 0 else "+ " if i else "") + body)
    return " ".join(out)
