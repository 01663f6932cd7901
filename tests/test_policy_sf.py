"""RFC 8941 Dictionary parsing / item serialisation subset."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.policy import sf


def test_rfc8941_dictionary_examples():
    # RFC 8941 §3.2 examples
    assert sf.parse_dictionary('en="Applepie", da=:w4ZibGV0w6ZydGUK:') == {
        "en": ("Applepie", {}),
        "da": ("Æbletærte\n".encode(), {}),
    }
    assert sf.parse_dictionary("a=?0, b, c; foo=bar") == {
        "a": (False, {}),
        "b": (True, {}),
        "c": (True, {"foo": "bar"}),
    }
    parsed = sf.parse_dictionary("rating=1.5, feelings=(joy sadness)")
    assert parsed["rating"] == (1.5, {})
    assert parsed["feelings"] == ([("joy", {}), ("sadness", {})], {})
    assert isinstance(parsed["feelings"][0][0][0], sf.Token)


@pytest.mark.parametrize(
    "text",
    [
        "a=1,",  # trailing comma
        "A=1",  # keys are lowercase
        'a="\\x"',  # bad escape
        'a="é"',  # non-ASCII in a string
        "a=1.2345",  # > 3 fractional digits
        "a=1234567890123456",  # > 15 digits
        "a=1.",
        "a=(1 2",
        "a=?2",
        "a=1 b=2",
        "a=:!!:",
        "1a=1",
    ],
)
def test_invalid_dictionaries_raise_value_error(text):
    with pytest.raises(ValueError):
        sf.parse_dictionary(text)


def test_duplicate_key_last_wins_and_whitespace():
    assert sf.parse_dictionary("  a=1 ,\tb=2, a=3") == {"a": (3, {}), "b": (2, {})}


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (True, "?1"),
        (False, "?0"),
        (-12, "-12"),
        (sf.Token("uri-miss"), "uri-miss"),
        ('say "hi" \\', '"say \\"hi\\" \\\\"'),
    ],
)
def test_serialize_bare_item(value, wire):
    assert sf.serialize_bare_item(value) == wire


def test_serialize_errors():
    with pytest.raises(ValueError):
        sf.serialize_string("tab\there")
    with pytest.raises(ValueError):
        sf.serialize_token("1abc")
    with pytest.raises(ValueError):
        sf.serialize_bare_item(10**15)
    assert sf.is_key("fwd-status") and not sf.is_key("Fwd")


@given(st.text())
def test_parse_dictionary_only_raises_value_error(text):
    with contextlib.suppress(ValueError):
        sf.parse_dictionary(text)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_string_round_trip(text):
    parsed = sf.parse_dictionary("k=" + sf.serialize_string(text))
    assert parsed == {"k": (text, {})}
