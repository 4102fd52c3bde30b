"""JSON-constrained decoding for the embedded engine, with llama.cpp's grammar engine.

A request's ``response_format`` (:attr:`~infscale.params.SamplingParams.response_format`) becomes a
GBNF grammar: ``json_object`` is llama.cpp's JSON grammar (``JSON_GBNF``: one JSON object),
``json_schema`` is the grammar llama.cpp's JSON-schema converter writes for the schema
(``llama_cpp.llama_grammar.json_schema_to_gbnf``). Schema keywords that converter does not turn
into grammar rules (``minimum``, ``uniqueItems``, ``not``, ...) are refused with a one-line
:class:`~infscale.errors.ConfigError` naming the keyword and where it is: a constraint that
would be silently dropped is never accepted.

The grammar is parsed once by llama.cpp (``llama_sampler_init_grammar``) into a template; every
constrained sequence owns a clone of it (``llama_sampler_clone``: the clone carries the parse
state, so forking a sequence forks its grammar state). At each step the engine asks each
constrained sequence's grammar which tokens it accepts (``llama_sampler_apply`` over the whole
vocabulary: rejected tokens get a logit of ``-inf``; end-of-generation tokens are accepted only
where the grammar is complete), draws from the masked logits, and feeds the drawn token to the
grammar (``llama_sampler_accept``).
"""

from __future__ import annotations

import ctypes
import json
import threading

import numpy as np

from ..errors import ConfigError

__all__ = ["Grammar", "GrammarBook", "grammar_text", "check_schema"]

_ACCEPTED = ("a JSON schema built from type, properties, required, additionalProperties, items, prefixItems, "
             "minItems, maxItems, enum, const, anyOf, oneOf (read as anyOf), allOf of objects, $ref to #/..., "
             "pattern, minLength, maxLength, format date/time/date-time/uuid")

# keywords that only describe (no constraint to enforce)
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
                "readOnly", "writeOnly", "$anchor"}
# keywords llama.cpp's converter turns into grammar rules
_ENFORCED = {"type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
             "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern",
             "minLength", "maxLength", "format"}
_FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def check_schema(schema, where: str = "#") -> None:
    """Refuse (ConfigError naming the keyword and its place) what the grammar would not enforce."""
    if isinstance(schema, bool):
        if schema:
            return
        raise ConfigError("response_format", f"the schema at {where} is false (nothing matches)", _ACCEPTED)
    if not isinstance(schema, dict):
        raise ConfigError("response_format", f"the schema at {where} is not an object", _ACCEPTED)
    for key in schema:
        if key not in _ENFORCED and key not in _ANNOTATIONS:
            raise ConfigError("response_format", f"schema keyword {key!r} at {where} is not supported by the "
                              "embedded engine's grammar", _ACCEPTED)
    types = schema.get("type")
    for t in types if isinstance(types, list) else [types] if types is not None else []:
        if t not in _TYPES:
            raise ConfigError("response_format", f"type {t!r} at {where} is not a JSON schema type", _ACCEPTED)
    fmt = schema.get("format")
    if fmt is not None and fmt not in _FORMATS:
        raise ConfigError("response_format", f"format {fmt!r} at {where} is not supported by the embedded "
                          "engine's grammar", _ACCEPTED)
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise ConfigError("response_format", f"$ref {ref!r} at {where} is not supported by the embedded engine's "
                          "grammar (only references inside the schema, #/...)", _ACCEPTED)
    if "pattern" in schema and ("minLength" in schema or "maxLength" in schema):
        raise ConfigError("response_format", f"pattern with minLength/maxLength at {where} is not supported by the "
                          "embedded engine's grammar (one of them would be dropped)", _ACCEPTED)
    if "allOf" in schema and ("properties" in schema or types not in (None, "object")):
        raise ConfigError("response_format", f"allOf at {where} is supported only as an object's whole definition "
                          "(no properties or other type beside it)", _ACCEPTED)
    if ("anyOf" in schema or "oneOf" in schema) and ({"properties", "enum", "const", "items"} & schema.keys()):
        raise ConfigError("response_format", f"anyOf/oneOf beside other constraints at {where} is not supported by "
                          "the embedded engine's grammar (the others would be dropped)", _ACCEPTED)
    for key in ("properties", "$defs", "definitions"):
        sub = schema.get(key, {})
        if not isinstance(sub, dict):
            raise ConfigError("response_format", f"{key} at {where} is not an object", _ACCEPTED)
        for name, s in sub.items():
            check_schema(s, f"{where}/{key}/{name}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        subs = schema.get(key, [])
        if not isinstance(subs, list):
            raise ConfigError("response_format", f"{key} at {where} is not a list", _ACCEPTED)
        for i, s in enumerate(subs):
            check_schema(s, f"{where}/{key}/{i}")
    items = schema.get("items")
    if isinstance(items, list):
        for i, s in enumerate(items):
            check_schema(s, f"{where}/items/{i}")
    elif items is not None:
        check_schema(items, f"{where}/items")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        check_schema(extra, f"{where}/additionalProperties")


def grammar_text(response_format: str) -> str:
    """The GBNF grammar (root rule ``root``) of a ``response_format`` (JSON text, as
    :class:`~infscale.params.SamplingParams` holds it); ConfigError for what cannot be enforced."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf  # noqa: PLC0415

    rf = json.loads(response_format)
    if rf.get("type") == "json_object":
        return JSON_GBNF
    schema = (rf.get("json_schema") or {}).get("schema", {})
    check_schema(schema)
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as e:  # noqa: BLE001 - the converter asserts and raises on what it cannot read
        raise ConfigError("response_format", f"llama.cpp's schema converter cannot read the schema: {e}"[:300],
                          _ACCEPTED) from None


class Grammar:
    """One sequence's grammar state (a llama.cpp grammar sampler); free it with :meth:`free`."""

    __slots__ = ("_ll", "ptr")

    def __init__(self, ll, ptr):
        self._ll = ll
        self.ptr = ptr

    def clone(self) -> "Grammar":
        return Grammar(self._ll, self._ll.llama_sampler_clone(self.ptr))

    def accept(self, token: int) -> None:
        """Advance the state by ``token``, which must be one :meth:`GrammarBook.mask` allowed."""
        self._ll.llama_sampler_accept(self.ptr, token)

    def free(self) -> None:
        if self.ptr is not None:
            self._ll.llama_sampler_free(self.ptr)
            self.ptr = None

    def __del__(self):  # a safety net; the engine frees explicitly when a sequence ends
        try:
            self.free()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class GrammarBook:
    """An engine's grammars: parsed templates (one per distinct grammar, kept while the engine
    lives) and the scratch token array that masking reuses (scheduler thread only)."""

    _DTYPE = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])

    def __init__(self, ll, vocab, n_vocab: int):
        self._ll = ll
        self._vocab = vocab
        self.n_vocab = n_vocab
        self._templates: dict[str, Grammar] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread token arrays (masks may run in parallel)

    def template(self, response_format: str) -> Grammar:
        """The parsed grammar of ``response_format`` (cached); ConfigError if it cannot be built."""
        text = grammar_text(response_format)
        with self._lock:
            g = self._templates.get(text)
            if g is None:
                ptr = self._ll.llama_sampler_init_grammar(self._vocab, text.encode(), b"root")
                if not ptr:
                    raise ConfigError("response_format", "llama.cpp could not parse the grammar made from it",
                                      _ACCEPTED)
                g = self._templates[text] = Grammar(self._ll, ptr)
            return g

    def _buffers(self):
        """This thread's scratch arrays: the vocabulary as llama_token_data, and one token."""
        b = self._local
        if getattr(b, "arr", None) is None:
            ll, V = self._ll, self.n_vocab
            b.arr = (ll.llama_token_data * V)()
            b.view = np.frombuffer(b.arr, dtype=self._DTYPE)
            b.ids = np.arange(V, dtype=np.int32)
            b.cur = ll.llama_token_data_array(data=b.arr, size=V, selected=-1, sorted=False)
            b.one = (ll.llama_token_data * 1)()
            b.cur_one = ll.llama_token_data_array(data=b.one, size=1, selected=-1, sorted=False)
        return b

    def mask(self, g: Grammar, row: np.ndarray) -> np.ndarray:
        """``row`` (a logits row) with ``-inf`` at every token the grammar rejects now (a new
        float64 array). Thread-safe for distinct grammars: llama.cpp releases nothing shared."""
        b = self._buffers()
        b.view["id"] = b.ids
        b.view["logit"] = row
        cur = b.cur
        cur.data, cur.size, cur.selected, cur.sorted = b.arr, self.n_vocab, -1, False
        self._ll.llama_sampler_apply(g.ptr, ctypes.byref(cur))
        if cur.size != self.n_vocab or ctypes.addressof(cur.data.contents) != ctypes.addressof(b.arr):
            raise RuntimeError("llama.cpp's grammar sampler changed the token array's layout")
        return b.view["logit"].astype(np.float64)

    def allows(self, g: Grammar, token: int) -> bool:
        """Whether the grammar accepts ``token`` next (one token checked, not the vocabulary)."""
        b = self._buffers()
        b.one[0].id, b.one[0].logit, b.one[0].p = token, 0.0, 0.0
        cur = b.cur_one
        cur.data, cur.size, cur.selected, cur.sorted = b.one, 1, -1, False
        self._ll.llama_sampler_apply(g.ptr, ctypes.byref(cur))
        return bool(np.isfinite(b.one[0].logit))

    def close(self) -> None:
        with self._lock:
            for g in self._templates.values():
                g.free()
            self._templates.clear()
