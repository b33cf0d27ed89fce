"""The one check of the sampling settings and stop strings that the CLI and the page share: every rule accepts
its edge and refuses the nearest value beyond it, with the message a user reads."""
from __future__ import annotations

import dataclasses
import math

import pytest

from pychat_wasm.errors import InvalidSettingsError, PychatError
from pychat_wasm.chat.sampler import SETTING_RULES, SamplingSettings, settings_from_mapping
from pychat_wasm.chat.stop_strings import stop_strings_from_values

TINIEST = math.nextafter(0.0, 1.0)  # the smallest positive float
SEED_MAX = 2 ** 63 - 1


@pytest.mark.parametrize("name, value, expected", [
    ("temperature", 0, 0.0), ("temperature", 10, 10.0),
    ("top_k", 0, 0), ("top_k", 5.0, 5),  # JSON's 5.0 is the whole number 5
    ("top_p", TINIEST, TINIEST), ("top_p", 1, 1.0),
    ("min_p", 0, 0.0), ("min_p", 1.0, 1.0),
    ("repeat_penalty", TINIEST, TINIEST), ("repeat_penalty", 1e300, 1e300),
    ("repeat_last_n", 0, 0),
    ("max_tokens", 1, 1), ("max_tokens", 10 ** 9, 10 ** 9),
    ("seed", 0, 0), ("seed", SEED_MAX, SEED_MAX), ("seed", 42.0, 42),
])
def test_each_setting_accepts_its_edges(name, value, expected):
    got = getattr(settings_from_mapping({name: value}), name)
    assert got == expected
    assert type(got) is type(expected)  # whole settings come back as int, the others as float


@pytest.mark.parametrize("name, value, message", [
    ("temperature", math.nextafter(0.0, -1.0), "temperature must be a number from 0 to 10 (0 = greedy), not -5e-324"),
    ("temperature", math.nextafter(10.0, 11.0),
     "temperature must be a number from 0 to 10 (0 = greedy), not 10.000000000000002"),
    ("top_k", -1, "top-k must be a whole number of at least 0 (0 = off), not -1"),
    ("top_p", 0, "top-p must be a number above 0 and at most 1 (1 = off), not 0"),
    ("top_p", math.nextafter(1.0, 2.0),
     "top-p must be a number above 0 and at most 1 (1 = off), not 1.0000000000000002"),
    ("min_p", math.nextafter(0.0, -1.0), "min-p must be a number from 0 to 1 (0 = off), not -5e-324"),
    ("min_p", math.nextafter(1.0, 2.0), "min-p must be a number from 0 to 1 (0 = off), not 1.0000000000000002"),
    ("repeat_penalty", 0.0, "repeat penalty must be a number above 0 (1 = off), not 0.0"),
    ("repeat_last_n", -1, "repeat last n must be a whole number of at least 0 (0 = off), not -1"),
    ("max_tokens", 0, "max tokens must be a whole number of at least 1, not 0"),
    ("seed", -1, "seed must be a whole number from 0 to 9223372036854775807, not -1"),
    ("seed", SEED_MAX + 1, "seed must be a whole number from 0 to 9223372036854775807, not 9223372036854775808"),
])
def test_each_setting_refuses_the_value_just_beyond_its_edge(name, value, message):
    with pytest.raises(InvalidSettingsError) as raised:
        settings_from_mapping({name: value})
    assert str(raised.value) == message


WHOLE_SETTINGS = sorted(name for name, rule in SETTING_RULES.items() if rule.whole)
FLOAT_SETTINGS = sorted(name for name, rule in SETTING_RULES.items() if not rule.whole)


def assert_refused(name, value):
    with pytest.raises(InvalidSettingsError) as raised:
        settings_from_mapping({name: value})
    rule = SETTING_RULES[name]
    assert str(raised.value) == "%s must be %s, not %r" % (rule.label, rule.describe(), value)
    kind = "a whole number" if rule.whole else "a number"
    assert str(raised.value).startswith("%s must be %s " % (rule.label, kind))


@pytest.mark.parametrize("value", [True, False, "5", [5], math.nan, math.inf, -math.inf],
                         ids=["True", "False", "text", "list", "nan", "inf", "-inf"])
@pytest.mark.parametrize("name", sorted(SETTING_RULES))
def test_bools_texts_and_non_finite_numbers_are_refused(name, value):
    assert_refused(name, value)


@pytest.mark.parametrize("name", WHOLE_SETTINGS)
def test_whole_settings_refuse_fractions(name):
    assert_refused(name, 2.5)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_float_settings_refuse_integers_beyond_floats_range(name):
    assert_refused(name, 10 ** 400)


def test_every_field_has_a_rule_and_the_defaults_pass_them():
    assert set(SETTING_RULES) == {field.name for field in dataclasses.fields(SamplingSettings)}
    assert settings_from_mapping(dataclasses.asdict(SamplingSettings())) == SamplingSettings()


def test_none_keeps_the_base_value_and_unknown_keys_are_ignored():
    base = SamplingSettings(temperature=0.3, top_k=7, seed=11)
    got = settings_from_mapping({"temperature": None, "seed": None, "colour": "blue", "top_p": 0.5}, base=base)
    assert got == dataclasses.replace(base, top_p=0.5)
    assert settings_from_mapping({}) == SamplingSettings()


def test_settings_that_are_not_a_mapping_are_refused():
    with pytest.raises(InvalidSettingsError, match="the settings must map names to values, not be a list"):
        settings_from_mapping([("max_tokens", 5)])


def test_the_error_is_a_typed_pychat_error():
    assert issubclass(InvalidSettingsError, PychatError) and issubclass(InvalidSettingsError, ValueError)


# ---- stop strings -------------------------------------------------------------------------------------------


def test_stop_strings_up_to_the_limits_are_kept():
    assert stop_strings_from_values(None) == [] and stop_strings_from_values([]) == []
    many = ["stop %d" % i for i in range(16)]
    assert stop_strings_from_values(many) == many
    assert stop_strings_from_values(("x" * 200, "\n")) == ["x" * 200, "\n"]


@pytest.mark.parametrize("values, message", [
    (["stop %d" % i for i in range(17)], "there can be at most 16 stop strings, not 17"),
    (["x" * 201], "a stop string can be at most 200 characters long, not 201"),
    (["User:", ""], "a stop string must be a non-empty text, not ''"),
    (["User:", 5], "a stop string must be a non-empty text, not 5"),
    ("User:", "the stop strings must be a list of texts, not a str"),
])
def test_stop_strings_beyond_the_limits_are_refused(values, message):
    with pytest.raises(InvalidSettingsError) as raised:
        stop_strings_from_values(values)
    assert str(raised.value) == message
