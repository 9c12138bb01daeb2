#!/usr/bin/python3
"""moed's JSON Schema constraint (SchemaPrefix) against an independent validator, Debian's
python3-jsonschema (Draft 2020-12):
- every answer a random walk through the constraint ends with is valid, for each schema below;
- instances written in the schema's property order are taken exactly when they are valid (the
  constraint takes one way of writing an instance, so the valid ones here are written that way);
- schemas it cannot enforce are refused when strict, with the JSON Pointer of the keyword.
Usage: test_json_schema.py SCHEMA_WALK_BINARY"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import jsonschema

WALK = sys.argv[1] if len(sys.argv) > 1 else None

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer"},
        "height": {"type": "number"},
        "email": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "height", "email", "tags", "active"],
    "additionalProperties": False,
}

# Pydantic's shape: definitions under $defs, references to them, Optional as anyOf with null,
# an enum, a discriminated union written as oneOf.
ORDER = {
    "$defs": {
        "Item": {
            "type": "object",
            "properties": {
                "sku": {"type": "string", "title": "Sku"},
                "quantity": {"type": "integer", "title": "Quantity"},
                "unit": {"enum": ["kg", "g", "piece"], "type": "string"},
            },
            "required": ["sku", "quantity", "unit"],
            "title": "Item",
        },
        "Card": {
            "type": "object",
            "properties": {"kind": {"const": "card"}, "last4": {"type": "string", "minLength": 4, "maxLength": 4}},
            "required": ["kind", "last4"],
            "additionalProperties": False,
        },
        "Cash": {
            "type": "object",
            "properties": {"kind": {"const": "cash"}, "change": {"type": "number"}},
            "required": ["kind", "change"],
            "additionalProperties": False,
        },
    },
    "type": "object",
    "title": "Order",
    "properties": {
        "id": {"type": "integer"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
        "payment": {"oneOf": [{"$ref": "#/$defs/Card"}, {"$ref": "#/$defs/Cash"}],
                    "discriminator": {"propertyName": "kind"}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["id", "items", "payment"],
}

# Recursion through the root and through $defs, bottoming out where it may.
TREE = {
    "type": "object",
    "properties": {
        "value": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2},
        "next": {"anyOf": [{"$ref": "#/$defs/Link"}, {"type": "null"}]},
    },
    "required": ["value", "children", "next"],
    "additionalProperties": False,
    "$defs": {
        "Link": {
            "type": "object",
            "properties": {"label": {"type": "string", "maxLength": 3},
                           "next": {"anyOf": [{"$ref": "#/$defs/Link"}, {"type": "null"}]}},
            "required": ["label", "next"],
            "additionalProperties": False,
        }
    },
}

OPTIONAL = {
    "type": "object",
    "properties": {
        "a": {"type": "integer"},
        "b": {"type": "string", "maxLength": 2},
        "c": {"type": "boolean"},
        "d": {"type": "null"},
    },
    "required": ["c"],
    "additionalProperties": False,
}

SHAPES = {
    "type": "object",
    "properties": {
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string", "maxLength": 3}],
                 "items": False, "minItems": 2},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "anything": {},
        "free": {"type": "object"},
        "either": {"type": ["integer", "string", "null"], "maxLength": 2},
        "mixed": {"enum": [1, 12, "12", True, None, {"x": [1, 2]}, [3]]},
        "sized": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3},
        "accents": {"type": "string", "minLength": 2, "maxLength": 2},
    },
    "required": ["pair", "counts", "anything", "free", "either", "mixed", "sized", "accents"],
}

# Non-strict: what is not enforced (here a lookahead in a pattern) is left free, the rest holds.
LOOSE = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^(?=[A-Z])[A-Z]+$", "maxLength": 4},
        "n": {"type": "integer", "minimum": 0},
    },
    "required": ["code", "n"],
    "additionalProperties": False,
}

# Keywords that say the kind of value without a type; false where a property or item is optional;
# many optional properties and many alternatives at once (each followed, none dropped).
MANY = {
    "type": "object",
    "properties": {
        "short": {"maxLength": 2},
        "pair": {"minItems": 2, "maxItems": 2},
        "never": False,
        "union": {"anyOf": [{"type": "object", "properties": {"kind": {"const": "k%02d" % i}, "v": {"type": "integer"}},
                             "required": ["kind", "v"], "additionalProperties": False} for i in range(40)]},
        "tail": {"type": "array", "prefixItems": [{"type": "integer"}, False], "items": False},
        **{"p%02d" % i: {"type": "integer"} for i in range(40)},
    },
    "required": ["short", "pair", "union"],
    "additionalProperties": False,
}

# Numbers' bounds: an integer's exactly, a number's as the double its text parses to (as
# validators compare them).
BOUNDED = {
    "type": "object",
    "properties": {
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "year": {"type": "integer", "minimum": 1900.5, "exclusiveMaximum": 2100},
        "offset": {"type": "integer", "exclusiveMinimum": -13, "maximum": -3},
        "big": {"type": "integer", "minimum": 250},
        "zero": {"type": "integer", "minimum": -0.5, "maximum": 0.5},
        "small": {"type": "integer", "maximum": -1000000000000},
        "p": {"type": "number", "minimum": 0, "maximum": 1},
        "t": {"type": "number", "exclusiveMinimum": -1.5, "exclusiveMaximum": 2.25},
        "point": {"type": "number", "minimum": 0.3, "maximum": 0.3},
        "neg": {"type": "number", "maximum": -0.001},
        "wide": {"type": "integer", "minimum": 9007199254740993, "maximum": 9223372036854775806},
        "far": {"type": "number", "maximum": 9007199254740992},
    },
    "required": ["rating", "year", "offset", "big", "zero", "small", "p", "t", "point", "neg", "wide", "far"],
    "additionalProperties": False,
}

# ECMA-262 patterns, matched anywhere unless anchored, with length bounds in characters; a pattern
# without a type makes the answer a string.
PATTERNS = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3,5}$"},
        "slug": {"type": "string", "pattern": "^[a-z0-9]+(?:-[a-z0-9]+)*$", "minLength": 3, "maxLength": 12},
        "word": {"type": "string", "pattern": "x"},
        "file": {"pattern": "^\\w+\\.(?:png|jpe?g)$"},
        "quoted": {"type": "string", "pattern": "^\"[^\"\\\\]*\"$"},
        "accented": {"type": "string", "pattern": "^[\u00e0-\u00ff]+ ?\u20ac$"},
        "phone": {"type": ["string", "null"], "pattern": "^\\+?[1-9]\\d{1,14}$"},
        "either": {"anyOf": [{"type": "string", "pattern": "^a+$"}, {"type": "string", "pattern": "^b+$"}]},
        "pairs": {"type": "string", "pattern": "^(?:ab)+$", "minLength": 3, "maxLength": 6},
    },
    "required": ["sku", "slug", "word", "file", "quoted", "accented", "phone", "either", "pairs"],
    "additionalProperties": False,
}

# The formats OpenAI's structured outputs name, each held to a pattern; others are annotations.
FORMATS = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "clock": {"type": "string", "format": "time"},
        "span": {"type": "string", "format": "duration"},
        "mail": {"type": "string", "format": "email"},
        "host": {"type": "string", "format": "hostname", "maxLength": 20},
        "v4": {"type": "string", "format": "ipv4"},
        "v6": {"type": "string", "format": "ipv6"},
        "id": {"type": "string", "format": "uuid"},
        "color": {"type": "string", "format": "color", "maxLength": 3},
    },
    "required": ["day", "at", "clock", "span", "mail", "host", "v4", "v6", "id", "color"],
    "additionalProperties": False,
}

FORMATS_VALID = {"day": "2024-02-28", "at": "1999-12-31T23:59:59.5Z", "clock": "08:30:00+05:30",
                 "span": "P1Y2M3DT4H", "mail": "jane.doe@example.org", "host": "a-1.example.com",
                 "v4": "192.168.0.1", "v6": "2001:db8:0:0:0:0:0:1",
                 "id": "123e4567-e89b-12d3-a456-426614174000", "color": "red"}


def formats_invalid():
    for key, value in [("day", "2024-02-30"), ("at", "1999-12-31 23:59:59Z"), ("clock", "8:30:00Z"),
                       ("span", "P"), ("mail", "jane"), ("mail", "a" * 65 + "@example.org"),
                       ("host", "-a.example.com"), ("host", "ab--c.example"), ("v4", "192.168.0.256"),
                       ("v6", "2001:db8::1:2:3:4:5:6:7"), ("id", "123e4567"), ("color", "blue")]:
        yield {**FORMATS_VALID, key: value}


def format_errors(instance):
    """What an independent reading of each format finds wrong with FORMATS' instance: Python's
    datetime, uuid and ipaddress, and python3-jsonschema's checkers where it has them."""
    import datetime
    import ipaddress
    import re
    import uuid
    errors = []
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER

    def expect(key, ok):
        if not ok:
            errors.append("%s: %r" % (key, instance[key]))

    def parses(parse, text):
        try:
            parse(text)
            return True
        except ValueError:
            return False

    expect("day", re.fullmatch(r"\d{4}-\d{2}-\d{2}", instance["day"]) and parses(datetime.date.fromisoformat, instance["day"]))
    at = instance["at"]
    expect("at", re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", at)
           and parses(datetime.datetime.fromisoformat, at.replace("z", "Z")))
    clock = instance["clock"]
    expect("clock", re.fullmatch(r"\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", clock)
           and parses(datetime.time.fromisoformat, clock))
    # RFC 3339's appendix A, written anew here.
    expect("span", re.fullmatch(r"P(?!$)(\d+Y)?(\d+M)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?|P\d+W", instance["span"])
           and not instance["span"].endswith("T"))
    for key, name in [("mail", "email"), ("host", "idn-hostname"), ("v4", "ipv4"), ("v6", "ipv6"), ("id", "uuid")]:
        expect(key, checker.conforms(instance[key], name))
    expect("mail", len(instance["mail"].rpartition("@")[0]) <= 64)  # RFC 5321's limit
    expect("v4", parses(lambda t: ipaddress.IPv4Address(t), instance["v4"]))
    expect("id", parses(uuid.UUID, instance["id"]))
    return errors


# multipleOf where it is a whole number (a number's answer is then an integer), with bounds.
MULTIPLES = {
    "type": "object",
    "properties": {
        "step": {"type": "integer", "multipleOf": 5, "minimum": 3, "maximum": 42},
        "even": {"type": "number", "multipleOf": 2.0},
        "prime": {"type": "integer", "multipleOf": 1000000007, "exclusiveMinimum": -3000000000},
        "below": {"type": "integer", "multipleOf": 7, "maximum": -20},
        "one": {"type": "integer", "multipleOf": 1},
        # Written as floats: python-jsonschema then divides in floating point, exact to 2^53.
        "thirds": {"type": "integer", "multipleOf": 3.0},
        "huge": {"type": "integer", "multipleOf": 1e20},
    },
    "required": ["step", "even", "prime", "below", "one"],
    "additionalProperties": False,
}

CASES = {
    "person": (PERSON, True, [
        {"name": "Ann", "age": 31, "height": 1.62, "email": None, "tags": [], "active": True},
        {"name": "Zoë ✓", "age": -4, "height": 2e3, "email": "a@b.co", "tags": ["x", "yy"], "active": False},
    ], [
        {"name": "", "age": 31, "height": 1.62, "email": None, "tags": [], "active": True},
        {"name": "Ann", "age": 1.5, "height": 1.62, "email": None, "tags": [], "active": True},
        {"name": "Ann", "age": 3, "height": 1.62, "email": None, "tags": ["toolong"], "active": True},
        {"name": "Ann", "age": 3, "height": 1.62, "email": None, "tags": ["a", "b", "c", "d"], "active": True},
        {"name": "Ann", "age": 3, "height": 1.62, "email": None, "tags": []},
        {"name": "Ann", "age": 3, "height": 1.62, "email": None, "tags": [], "active": True, "x": 1},
        {"name": "Ann", "age": 3, "height": "tall", "email": None, "tags": [], "active": True},
    ]),
    "order": (ORDER, True, [
        {"id": 7, "items": [{"sku": "A1", "quantity": 2, "unit": "kg"}], "payment": {"kind": "card", "last4": "1234"}},
        {"id": 8, "items": [{"sku": "", "quantity": 0, "unit": "piece"}, {"sku": "B", "quantity": 1, "unit": "g"}],
         "payment": {"kind": "cash", "change": 0.5}, "note": None},
        {"id": 9, "items": [{"sku": "C", "quantity": 3, "unit": "g"}], "payment": {"kind": "cash", "change": 1}, "note": "ok"},
    ], [
        {"id": 7, "items": [], "payment": {"kind": "card", "last4": "1234"}},
        {"id": 7, "items": [{"sku": "A1", "quantity": 2, "unit": "lb"}], "payment": {"kind": "card", "last4": "1234"}},
        {"id": 7, "items": [{"sku": "A1", "quantity": 2, "unit": "kg"}], "payment": {"kind": "card", "change": 1}},
        {"id": 7, "items": [{"sku": "A1", "quantity": 2, "unit": "kg"}], "payment": {"kind": "card", "last4": "123"}},
    ]),
    "tree": (TREE, True, [
        {"value": 1, "children": [], "next": None},
        {"value": 1, "children": [{"value": 2, "children": [], "next": {"label": "a", "next": None}}], "next": None},
    ], [
        {"value": 1, "children": [], "next": {"label": "long", "next": None}},
        {"value": 1, "children": [{"value": 2}], "next": None},
    ]),
    "optional": (OPTIONAL, True, [
        {"c": True}, {"a": 1, "c": False}, {"a": 1, "b": "xy", "c": True, "d": None}, {"c": True, "d": None},
        {"b": "", "c": True},
    ], [
        {}, {"a": 1}, {"c": 1}, {"b": "xyz", "c": True},
    ]),
    "shapes": (SHAPES, True, [
        {"pair": [1, "abc"], "counts": {}, "anything": [1, {"a": None}], "free": {"k": [True]},
         "either": None, "mixed": 12, "sized": [1, 2.5], "accents": "éé"},
        {"pair": [-1, ""], "counts": {"a": 1, "b": 2}, "anything": "s", "free": {},
         "either": "ab", "mixed": {"x": [1, 2]}, "sized": [1, 2, 3], "accents": "€x"},
        {"pair": [0, "x"], "counts": {"": 0}, "anything": None, "free": {}, "either": 5,
         "mixed": "12", "sized": [0, 0], "accents": "ab"},
    ], [
        {"pair": [1], "counts": {}, "anything": 1, "free": {}, "either": None, "mixed": 1, "sized": [1, 2], "accents": "ab"},
        {"pair": [1, "a", 2], "counts": {}, "anything": 1, "free": {}, "either": None, "mixed": 1, "sized": [1, 2], "accents": "ab"},
        {"pair": [1, "a"], "counts": {"a": "1"}, "anything": 1, "free": {}, "either": None, "mixed": 1, "sized": [1, 2], "accents": "ab"},
        {"pair": [1, "a"], "counts": {}, "anything": 1, "free": [], "either": None, "mixed": 1, "sized": [1, 2], "accents": "ab"},
        {"pair": [1, "a"], "counts": {}, "anything": 1, "free": {}, "either": "abc", "mixed": 1, "sized": [1, 2], "accents": "ab"},
        {"pair": [1, "a"], "counts": {}, "anything": 1, "free": {}, "either": True, "mixed": 1, "sized": [1, 2], "accents": "ab"},
        {"pair": [1, "a"], "counts": {}, "anything": 1, "free": {}, "either": None, "mixed": 2, "sized": [1, 2], "accents": "ab"},
        {"pair": [1, "a"], "counts": {}, "anything": 1, "free": {}, "either": None, "mixed": 1, "sized": [1], "accents": "ab"},
        {"pair": [1, "a"], "counts": {}, "anything": 1, "free": {}, "either": None, "mixed": 1, "sized": [1, 2], "accents": "abc"},
    ]),
    "many": (MANY, True, [
        {"short": "ab", "pair": [1, "x"], "union": {"kind": "k39", "v": 1}},
        {"short": "", "pair": [[], {}], "union": {"kind": "k00", "v": -1}, "tail": [3], "p39": 1},
        {"short": "a", "pair": [None, None], "union": {"kind": "k17", "v": 0}, "p00": 0, "p20": 2, "p38": 3},
    ], [
        {"short": "abc", "pair": [1, 2], "union": {"kind": "k39", "v": 1}},
        {"short": "ab", "pair": [1], "union": {"kind": "k39", "v": 1}},
        {"short": "ab", "pair": [1, 2], "never": 1, "union": {"kind": "k39", "v": 1}},
        {"short": "ab", "pair": [1, 2], "union": {"kind": "k40", "v": 1}},
        {"short": "ab", "pair": [1, 2], "union": {"kind": "k39", "v": 1}, "tail": [1, 2]},
    ]),
    "bounded": (BOUNDED, True, [
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 5, "year": 2099, "offset": -3, "big": 99999999999, "zero": -0, "small": -9000000000000000000, "p": 1, "t": -1.499, "point": 0.30000000000000001, "neg": -0.001, "wide": 9223372036854775806, "far": -123456789012345},
    ], [
        {"rating": 0, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 6, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 15, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1900, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 2100, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -13, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -2, "big": 250, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 249, "zero": 0, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 1, "small": -1000000000000, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -999999999999, "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 1.01, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": -0.0001, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 0.5, "t": -1.5, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 0.5, "t": 2.25, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 0.5, "t": 0, "point": 0.31, "neg": -1},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 0.5, "t": 0, "point": 0.3, "neg": 0, "wide": 9007199254740993, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740992, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9223372036854775807, "far": 1.5},
        {"rating": 1, "year": 1901, "offset": -12, "big": 250, "zero": 0, "small": -1000000000000,
         "p": 0.5, "t": 0, "point": 0.3, "neg": -1, "wide": 9007199254740993, "far": 9007199254740993},
    ]),
    "loose": (LOOSE, False, [{"code": "AB", "n": 3}], [{"code": "ABCDE", "n": 3}, {"code": "A", "n": 1.5}]),
    "patterns": (PATTERNS, True, [
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": "+4915112345678", "either": "aaa", "pairs": "abab"},
        {"sku": "ZZ-00000", "slug": "abcdefghijkl", "word": "x", "file": "_.jpg", "quoted": '""', "accented": "ÿ€",
         "phone": None, "either": "b", "pairs": "ababab"},
    ], [
        {"sku": "AB-12", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a--b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "ab", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a-b", "word": "bob", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.gif", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"h"i"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "Été €",
         "phone": None, "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": "0123", "either": "a", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "ab", "pairs": "abab"},
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "ab"},
        {"sku": "AB-123", "slug": "a-b", "word": "box", "file": "cat.png", "quoted": '"hi"', "accented": "éàè €",
         "phone": None, "either": "a", "pairs": "abababab"},
    ]),
    "formats": (FORMATS, True, [FORMATS_VALID, {**FORMATS_VALID, "v6": "2001:db8::1", "host": "localhost",
                                                  "mail": "a_b@x.io"}], list(formats_invalid())),
    "multiples": (MULTIPLES, True, [
        {"step": 5, "even": 0, "prime": 0, "below": -21, "one": 3},
        {"step": 40, "even": -18, "prime": -2000000014, "below": -700, "one": -1},
        {"step": 10, "even": 12345678, "prime": 9000000063, "below": -21, "one": 0},
        {"step": 10, "even": 0, "prime": 0, "below": -21, "one": 0, "thirds": -9007199254740990, "huge": 0},
    ], [
        {"step": 5, "even": 0, "prime": 0, "below": -21, "one": 3, "thirds": 9007199254740993},
        {"step": 5, "even": 0, "prime": 0, "below": -21, "one": 3, "thirds": 4},
        {"step": 0, "even": 0, "prime": 0, "below": -21, "one": 3},
        {"step": 45, "even": 0, "prime": 0, "below": -21, "one": 3},
        {"step": 12, "even": 0, "prime": 0, "below": -21, "one": 3},
        {"step": 5, "even": 3, "prime": 0, "below": -21, "one": 3},
        {"step": 5, "even": 0, "prime": 1000000008, "below": -21, "one": 3},
        {"step": 5, "even": 0, "prime": -3000000021, "below": -21, "one": 3},
        {"step": 5, "even": 0, "prime": 0, "below": -14, "one": 3},
        {"step": 5, "even": 0, "prime": 0, "below": -22, "one": 3},
        {"step": 5, "even": 0, "prime": 0, "below": -21, "one": 0.5},
    ]),
}

# Schemas refused, and the JSON Pointer the refusal names.
REFUSED = [
    (LOOSE, True, "/properties/code/pattern"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}, True, "/properties/a/pattern"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "[z-a]"}}}, True, "/properties/a/pattern"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "a[ab]{20}$"}}}, True,
     "/properties/a/pattern"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "date", "pattern": "^2"}}}, True,
     "/properties/a/format"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(ab)+$", "maxLength": 3, "minLength": 3}},
      "required": ["a"]}, True, "/properties/a"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": 5}}}, True, "/properties/a/pattern"),
    ({"type": "array", "items": {"type": "integer"}}, True, ""),
    ({"type": "object", "properties": {"a": {"type": "strng"}}}, True, "/properties/a/type"),
    ({"type": "object", "properties": {"a": False}, "required": ["a"]}, True, "/properties/a"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, True, "/properties/a/$ref"),
    ({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}, True, "/properties/a"),
    ({"type": "object", "properties": {"a": {"type": "string", "enum": ["abc"], "maxLength": 2}}}, True,
     "/properties/a/maxLength"),
    ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}], "maxLength": 2}}}, True,
     "/properties/a/maxLength"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}}},
     True, "/properties/a/oneOf"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "integer"}, {"type": "number"}]}}},
     True, "/properties/a/oneOf"),
    ({"type": "object", "properties": {"a": {"enum": [{"k": i} for i in range(100)]}}}, True, "/properties/a"),
    ({"type": "object", "properties": {"a": {"type": "integer", "const": 1, "enum": [2]}}}, True,
     "/properties/a/const"),
    ({"type": "object", "properties": {"a": {"enum": []}}}, True, "/properties/a/enum"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 3, "maxLength": 2}}}, True,
     "/properties/a/minLength"),
    ({"type": "object", "properties": {"a": {"type": "number", "multipleOf": 0.5}}}, True, "/properties/a/multipleOf"),
    ({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 0}}}, True, "/properties/a/multipleOf"),
    ({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 5, "minimum": 1, "maximum": 4}}}, True,
     "/properties/a"),
    ({"type": "object", "properties": {"a": {"type": ["integer", "null"], "multipleOf": 5}}}, True,
     "/properties/a/multipleOf"),
    ({"type": "object", "properties": {"a": {"type": "number", "minimum": 1e20}}}, True, "/properties/a"),
    ({"type": "object", "properties": {"a": {"type": "number", "exclusiveMinimum": 0.1,
                                             "exclusiveMaximum": 0.10000000000000002}}}, True, "/properties/a"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/A"}]}},
      "$defs": {"A": {"type": "object", "properties": {"k": {"const": "a"}}, "required": ["k"]}}},
     True, "/properties/a/oneOf"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"const": 1}, {"const": 1.0}]}}}, True,
     "/properties/a/oneOf"),
    ({"type": "object", "properties": {"a": {"type": "number", "minimum": 1, "exclusiveMaximum": 1}}}, True,
     "/properties/a"),
    ({"type": "object", "properties": {"a": {"type": ["integer", "null"], "maximum": 1}}}, True,
     "/properties/a/maximum"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1.5, "maximum": 1.7}}}, True,
     "/properties/a"),
    ({"type": "object", "required": ["a"], "additionalProperties": False}, True, "/required"),
]


def run(schema, strict, *args, stdin=None):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(schema, f)
    try:
        return subprocess.run([WALK, f.name, "1" if strict else "0", *args], input=stdin,
                              capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(f.name)


class JsonSchemaConstraint(unittest.TestCase):
    def test_walks_end_in_valid_answers(self):
        for name, (schema, strict, _, _) in CASES.items():
            with self.subTest(schema=name):
                result = run(schema, strict, "walk", "150", "7")
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                validator = jsonschema.Draft202012Validator(schema)
                answers = [json.loads(line) for line in result.stdout.split("\n") if line]  # not splitlines: U+2028 is text
                if name == "formats":
                    for text in answers:
                        self.assertEqual(format_errors(json.loads(text)), [], text)
                self.assertEqual(len(answers), 150)
                for text in answers:
                    instance = json.loads(text)
                    errors = [e.message for e in validator.iter_errors(instance)]
                    if name == "loose":  # pattern and minimum are left free
                        errors = [e for e in errors if "does not match" not in e and "less than" not in e]
                    self.assertEqual(errors, [], text)
                self.assertGreater(len(set(answers)), 100, "walks should differ")

    def test_patterns_match_as_an_ecmascript_engine_reads_them(self):
        """Python's re is not ECMA-262 (its \\d and \\w take Unicode digits and letters, its $ a
        final newline): node's RegExp, with the u flag JSON Schema recommends, checks the walks'
        strings too."""
        result = run(PATTERNS, True, "walk", "150", "11")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        pairs = []
        for line in result.stdout.split("\n"):
            if not line:
                continue
            instance = json.loads(json.loads(line))
            for key, schema in PATTERNS["properties"].items():
                if "pattern" in schema and isinstance(instance[key], str):
                    pairs.append([schema["pattern"], instance[key]])
            pairs += [["^a+$|^b+$", instance["either"]], ["^(?:ab)+$", instance["pairs"]]]
        script = ("const pairs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
                  "const bad = pairs.filter(([p, s]) => !new RegExp(p, 'u').test(s));"
                  "console.log(JSON.stringify(bad));")
        node = subprocess.run(["node", "-e", script], input=json.dumps(pairs), capture_output=True,
                              text=True, timeout=120)
        self.assertEqual(node.returncode, 0, node.stderr)
        self.assertEqual(json.loads(node.stdout), [])
        self.assertGreater(len(pairs), 1000)

    def test_instances_are_taken_exactly_when_valid(self):
        for name, (schema, strict, valid, invalid) in CASES.items():
            with self.subTest(schema=name):
                validator = jsonschema.Draft202012Validator(schema)
                for instance in valid:
                    self.assertTrue(validator.is_valid(instance), instance)
                for instance in invalid:
                    if name == "formats":
                        self.assertTrue(format_errors(instance) or not validator.is_valid(instance), instance)
                    elif name != "loose":
                        self.assertFalse(validator.is_valid(instance), instance)
                if name == "formats":
                    self.assertEqual([format_errors(i) for i in valid], [[] for _ in valid])
                lines = [json.dumps(i, ensure_ascii=False) for i in valid + invalid]
                lines += [json.dumps(i, ensure_ascii=False, separators=(",", ":")) for i in valid]
                result = run(schema, strict, "check", stdin="\n".join(lines) + "\n")
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                taken = result.stdout.split()
                expected = ["1"] * len(valid) + ["0"] * len(invalid) + ["1"] * len(valid)
                self.assertEqual(list(zip(lines, taken)), list(zip(lines, expected)))

    def test_schemas_that_would_exhaust_the_compiler_are_refused_or_quick(self):
        chain = {"$defs": {"a%d" % i: {"anyOf": [{"$ref": "#/$defs/a%d" % (i + 1)}, {"type": "null"}]}
                           for i in range(6000)},
                 "type": "object", "properties": {"a": {"$ref": "#/$defs/a0"}}, "required": ["a"]}
        chain["$defs"]["a6000"] = {"type": "null"}
        result = run(chain, True, "check", stdin="")
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("nest more than", result.stdout)
        huge = {"type": "object", "properties": {"a%d" % i: {"type": "array", "minItems": 4000000000}
                                                 for i in range(3)}}
        result = run(huge, True, "check", stdin='{}\n')
        self.assertEqual((result.returncode, result.stdout), (0, "1\n"), result.stderr)
        # Patterns each near the limit of one, together past the schema's budget: refused when
        # strict (by the budget shared by the schema's patterns), left free otherwise.
        costly = {"type": "object", "properties": {"s%d" % i: {"type": "string", "pattern": "a[ab]{12}$|^q%d" % i}
                                                   for i in range(200)}}
        # Each pattern past one's budget by the closures of a long chain of optional items.
        chains = {"type": "object", "properties": {"s%d" % i: {"type": "string",
                                                               "pattern": "x(?:(?:y?){1000}){4}|[ab]*a[ab]{13}$|q%d" % i}
                                                   for i in range(8)}}
        for schema, strict, refusal in [(costly, True, "patterns together take too long"), (costly, False, None),
                                        (chains, True, "too complex"), (chains, False, None)]:
            result = run(schema, strict, "check", stdin='{}\n')
            self.assertEqual(result.returncode, 2 if refusal else 0, result.stdout + result.stderr)
            if refusal:
                self.assertRegex(result.stdout, "^/properties/s[0-9]+/pattern: .*" + refusal)

    def test_schemas_not_enforced_are_refused_with_their_pointer(self):
        for schema, strict, pointer in REFUSED:
            with self.subTest(schema=json.dumps(schema)):
                result = run(schema, strict, "check", stdin="")
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertTrue(result.stdout.startswith(pointer + ": "), result.stdout)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
