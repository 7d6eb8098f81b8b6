"""Language tools: script detection, zh↔en translation, captions, and query planning."""
from .caption import Captioner
from .query import QueryPlan, caption_metadata, prepare_query
from .script import has_cjk, is_chinese, source_language
from .translate import Translator

__all__ = ["Captioner", "Translator", "QueryPlan", "prepare_query", "caption_metadata", "has_cjk", "is_chinese",
           "source_language"]
