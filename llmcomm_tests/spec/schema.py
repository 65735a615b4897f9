"""Pass 2 of spec loading: structure.  :func:`check_schema` validates the plain data of a
:class:`~llmcomm_tests.spec.yaml_lines.Doc` against ``schema/slo-spec.schema.json`` and turns the
jsonschema error it picks into one :class:`SpecError` at the line of the node it is about (a typo'd
key before the field it left missing; the type the user most likely meant in an anyOf)."""

from __future__ import annotations

import difflib
import functools
from typing import Any

from llmcomm_tests.spec.types import SpecError, spec_schema
from llmcomm_tests.core.units import describe
from llmcomm_tests.spec.yaml_lines import Doc, field_name

__all__ = ["check_schema"]


# --------------------------------------------------------------------------------------------
# Pass 2: structure (JSON Schema)


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema  # late: only needed when a spec is loaded
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    # YAML's 2.0 is a float: an integer field wants an int (jsonschema would accept 2.0).
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, v: isinstance(v, int) and not isinstance(v, bool)
    )
    strict = validators.extend(base, type_checker=checker)
    return strict(spec_schema())


_TYPE_WORDS = {
    "integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping",
    "array": "a list", "boolean": "true or false", "null": "null",
}
_JSON_TYPES = {"integer": int, "number": (int, float), "string": str, "object": dict, "array": list,
               "boolean": bool, "null": type(None)}


def _matches_type(schema: Any, v: Any) -> bool:
    """Whether ``v`` has the (top-level) type a schema branch wants; True if it names none."""
    if not isinstance(schema, dict) or "type" not in schema:
        if isinstance(schema, dict) and "$ref" in schema:
            return _matches_type(_resolve_ref(schema["$ref"]), v)
        return True
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    for t in types:
        if t == "integer" and isinstance(v, int) and not isinstance(v, bool):
            return True
        if t == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True
        if t in ("integer", "number") or (isinstance(v, bool) and t != "boolean"):
            continue
        if isinstance(v, _JSON_TYPES[t]):
            return True
    return False


def _resolve_ref(ref: str) -> Any:
    node: Any = spec_schema()
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _branch_types(schema: Any) -> list[str]:
    if isinstance(schema, dict) and "$ref" in schema:
        return _branch_types(_resolve_ref(schema["$ref"]))
    if isinstance(schema, dict) and "type" in schema:
        t = schema["type"]
        return list(t) if isinstance(t, list) else [t]
    if isinstance(schema, dict) and "anyOf" in schema:
        return [t for s in schema["anyOf"] for t in _branch_types(s)]
    return []


def _schema_error(doc: Doc, error) -> SpecError:
    """One jsonschema error (possibly an anyOf with sub-errors) → one located SpecError."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    v, kind, value = error.validator, error.validator_value, error.instance
    xmsg = schema.get("x-message")
    if v in ("anyOf", "oneOf"):
        if xmsg:
            got = "" if isinstance(value, (dict, list)) else f"; got {describe(value)}"
            return SpecError(doc.display, doc.line(path), field_name(path), f"{xmsg}{got}")
        branches = [s for s in kind if _matches_type(s, value)]
        if branches:
            index = kind.index(branches[0])
            sub = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] == index]
            if sub:
                return _pick([_schema_error(doc, e) for e in sub])
        wanted = []
        for t in _branch_types({"anyOf": kind}):
            if t not in wanted:
                wanted.append(t)
        words = " or ".join(_TYPE_WORDS[t] if t != "array" else "a list of them" for t in wanted)
        return SpecError(doc.display, doc.line(path), field_name(path), f"expected {words}, got {describe(value)}")
    if v == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in value if k not in allowed]
        key = min(extra, key=lambda k: doc.line(path + (k,)))
        hint = difflib.get_close_matches(key, allowed, n=1)
        msg = f"unknown field; did you mean {hint[0]!r}?" if hint else "unknown field"
        err = SpecError(doc.display, doc.line(path + (key,)), field_name(path + (key,)),
                        f"{msg} (allowed: {', '.join(allowed)})")
        err._unknown_in = path
        return err
    if v == "required":
        missing = [k for k in kind if k not in value]
        err = SpecError(doc.display, doc.line(path), field_name(path + (missing[0],)), "required field missing")
        err._missing_in = path  # see _pick
        return err
    if v == "type":
        want = kind if isinstance(kind, list) else [kind]
        words = " or ".join(_TYPE_WORDS[t] for t in want)
        return SpecError(doc.display, doc.line(path), field_name(path), f"expected {words}, got {describe(value)}")
    if v == "enum":
        if xmsg:
            msg = f"{xmsg} {value!r}"
        else:
            msg = f"unknown value {value!r}" if isinstance(value, str) else f"unexpected {describe(value)}"
        return SpecError(doc.display, doc.line(path), field_name(path),
                         f"{msg}; expected one of: {', '.join(map(str, kind))}")
    if v == "pattern":
        msg = xmsg or f"does not match {kind}"
        return SpecError(doc.display, doc.line(path), field_name(path), f"{msg}; got {value!r}")
    if v == "minimum":
        return SpecError(doc.display, doc.line(path), field_name(path), f"must be >= {kind}, got {value}")
    if v == "exclusiveMinimum":
        return SpecError(doc.display, doc.line(path), field_name(path), f"must be > {kind}, got {value}")
    if v == "maximum":
        return SpecError(doc.display, doc.line(path), field_name(path), f"must be <= {kind}, got {value}")
    if v == "minItems":
        msg = "must not be empty" if kind == 1 else f"needs at least {kind} items"
        return SpecError(doc.display, doc.line(path), field_name(path), msg)
    if v == "minProperties":
        return SpecError(doc.display, doc.line(path), field_name(path), "must not be empty")
    if v == "minLength":
        return SpecError(doc.display, doc.line(path), field_name(path), "must not be empty")
    if v == "uniqueItems":
        seen: list = []
        for i, item in enumerate(value):
            if any(item == s and type(item) is type(s) for s in seen):
                return SpecError(doc.display, doc.line(path + (i,)), field_name(path + (i,)),
                                 f"{describe(item)} is listed twice")
            seen.append(item)
    return SpecError(doc.display, doc.line(path), field_name(path), error.message.splitlines()[0])


def _pick(errors: list[SpecError]) -> SpecError:
    """The one error to report: the first in the file, but a typo before the field it left missing."""
    typo_in = {getattr(e, "_unknown_in", None) for e in errors} - {None}
    errors = [e for e in errors if getattr(e, "_missing_in", None) not in typo_in] or errors
    return min(errors, key=lambda e: (e.line or 0, len(e.field or "")))


def check_schema(doc: Doc) -> None:
    """Raise the one located :class:`SpecError` for the first schema problem of ``doc``, if any."""
    errors = [_schema_error(doc, e) for e in _validator().iter_errors(doc.data)]
    if errors:
        raise _pick(errors)


