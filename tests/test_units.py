"""core/units parses every value a user types: each parser against known values and bad input, and
the places that use it (argparse types, plugin options, fault values, topology counts) keep their
location prefix and never leak Python's own messages ("invalid literal for int()")."""

import argparse
import re

import pytest

from llmcomm_tests.core import arguments, units
from llmcomm_tests.runtime.faults import parse_fault
from llmcomm_tests.spec import topology
from llmcomm_tests.suite import options


@pytest.mark.parametrize("text, minimum, value", [("0", 0, 0), ("4", 1, 4), (" 12 ", 0, 12), (3, 1, 3)])
def test_count(text, minimum, value):
    assert units.parse_count(text, minimum) == value


@pytest.mark.parametrize("text, minimum, words", [
    ("x", 0, "expected a whole number, got 'x'"), ("1.5", 0, "expected a whole number, got '1.5'"),
    ("", 0, "expected a whole number, got ''"), (True, 0, "expected a whole number, got true (a boolean)"),
    ("0", 1, "must be >= 1, got 0"), ("-3", 0, "must be >= 0, got -3"),
])
def test_count_refuses(text, minimum, words):
    with pytest.raises(ValueError) as info:
        units.parse_count(text, minimum)
    assert str(info.value) == words


def test_numbers_fractions_percentages_and_factors():
    assert units.parse_number("-0.5") == -0.5 and units.parse_positive_number("300") == 300.0
    assert units.parse_fraction("0.999") == 0.999
    assert units.parse_percent("10%") == pytest.approx(0.1) and units.parse_percent("150 %") == 1.5
    assert units.parse_factor("2") == 2.0 and units.parse_factor("1.5x") == 1.5
    for parse, text, words in [
        (units.parse_number, "nan", "expected a finite number, got 'nan'"),
        (units.parse_number, "two", "expected a number, got 'two'"),
        (units.parse_positive_number, "0", "must be a finite number > 0, got 0"),
        (units.parse_positive_number, "inf", "must be a finite number > 0, got inf"),
        (units.parse_fraction, "1", "must be between 0 and 1, got 1"),
        (units.parse_fraction, "0", "must be a finite number > 0, got 0"),
        (units.parse_percent, "10", "expected a percentage such as 10%, got '10'"),
        (units.parse_percent, "0%", "percentage must be positive, got '0%'"),
        (units.parse_factor, "big", "expected a factor such as 2 or 1.5x, got 'big'"),
        (units.parse_factor, "0x", "factor must be positive, got '0x'"),
    ]:
        with pytest.raises(ValueError) as info:
            parse(text)
        assert str(info.value) == words, (parse.__name__, text)


@pytest.mark.parametrize("text, seconds", [("2ms", 2e-3), ("300us", 300e-6), ("300µs", 300e-6), ("1.5s", 1.5),
                                           ("2 s", 2.0), ("30 ns", 30e-9), (".5s", 0.5), ("1e3ms", 1.0),
                                           ("200MS", 0.2), (0.25, 0.25), (2, 2.0)])
def test_duration(text, seconds):
    assert units.parse_duration(text) == pytest.approx(seconds)


def test_duration_refuses_and_takes_a_bare_number_only_when_told_its_unit():
    for bad in ["2", "2 seconds", "-1s", "ms", "1,5s", True, None]:
        with pytest.raises(ValueError):
            units.parse_duration(bad)
    with pytest.raises(ValueError, match="duration must be positive, got '0ms'"):
        units.parse_duration("0ms")
    with pytest.raises(ValueError, match=r"cannot parse duration '2 seconds': .* such as '200ms'"):
        units.parse_duration("2 seconds")
    assert units.parse_duration("0.2", unitless="s") == 0.2
    assert units.parse_duration("5", unitless="ms") == pytest.approx(5e-3)


@pytest.mark.parametrize("text, n", [("4096", 4096), (4096, 4096), ("64K", 65536), ("64k", 65536), ("64KiB", 65536),
                                     ("64 kib", 65536), ("16MiB", 16 * 2**20), ("16M", 16 * 2**20), ("1G", 2**30),
                                     ("64kB", 64000), ("64KB", 64000), ("1.5MB", 1.5e6), ("2GB", 2e9), ("100B", 100),
                                     ("0.5K", 512)])
def test_bytes(text, n):
    assert units.parse_bytes(text) == n


@pytest.mark.parametrize("text, words", [
    ("1Q", "bad size '1Q': a byte count such as 4096, 64K or 16MiB"), ("64 kibibytes", "bad size '64 kibibytes'"),
    ("0", "bad size '0': must be positive"), ("-4", "bad size '-4'"), (True, "expected a byte count"),
])
def test_bytes_refuses(text, words):
    with pytest.raises(ValueError, match=words):
        units.parse_bytes(text)


def test_whole_byte_counts_and_lists():
    assert units.parse_byte_count("1.5K") == 1536
    with pytest.raises(ValueError, match="bad size '0.5'"):
        units.parse_byte_count("0.5")
    assert units.parse_list("1024, 64K,16MiB,", units.parse_byte_count) == [1024, 65536, 16 * 2**20]
    assert units.split_list(" a, ,b ") == ["a", "b"]
    with pytest.raises(ValueError, match="expected one or more comma-separated values"):
        units.parse_list(" , ", units.parse_byte_count)


def test_rates_and_flags():
    assert units.rate_bytes_per_s("200mbit") == 25e6 and units.rate_bytes_per_s("1GBIT") == 125e6
    assert units.rate_bytes_per_s("10kbps") == 1e4
    for bad in ["fast", "200", "200mbits", "-1mbit"]:
        with pytest.raises(ValueError, match=f"bad link rate '{bad}': expected e.g. 200mbit"):
            units.rate_bytes_per_s(bad)
    assert [units.parse_flag(t) for t in ("1", "Yes", "on", "", "off", "false")] == [True] * 3 + [False] * 3
    with pytest.raises(ValueError, match="expected true or false, got 'maybe'"):
        units.parse_flag("maybe")


# -- the places that use the parsers -------------------------------------------------------------

@pytest.mark.parametrize("argument_type, text, words", [
    (arguments.positive_int, "x", "expected a whole number, got 'x'"),
    (arguments.positive_int, "0", "must be >= 1, got 0"),
    (arguments.non_negative_int, "-1", "must be >= 0, got -1"),
    (arguments.positive_float, "0", "must be a finite number > 0, got 0"),
    (arguments.fraction, "2", "must be between 0 and 1, got 2"),
    (arguments.byte_sizes, "1024,1Q", "bad size '1Q'"),
    (arguments.world_sizes, "2,x", "expected a whole number, got 'x'"),
    (arguments.world_sizes, "1", "1: a communication sweep needs at least 2 ranks"),
])
def test_argument_types_raise_argparse_errors(argument_type, text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        argument_type(text)


def test_argument_types_parse():
    assert arguments.byte_sizes("4096,64K") == [4096, 65536] and arguments.world_sizes("2,4") == [2, 4]
    assert arguments.positive_int("3") == 3 and arguments.fraction("0.5") == 0.5


class _Config:
    """The two pytest config calls options.resolve makes."""

    def __init__(self, given: dict, ini: dict | None = None):
        self.given, self.ini = given, ini or {}

    def getoption(self, dest):
        return self.given.get(dest, [] if dest == "llmcomm_inject" else None)

    def getini(self, name):
        return self.ini.get(name)


@pytest.mark.parametrize("given, ini, words", [
    ({"llmcomm_repeats": "x"}, None, "--llmcomm-repeats: expected a whole number, got 'x'"),
    ({"llmcomm_gpus": "0"}, None, "--gpus: must be >= 1, got 0"),
    ({"llmcomm_ab_seed": "-1"}, None, "--llmcomm-ab-seed: must be >= 0, got -1"),
    ({"llmcomm_timeout": "soon"}, None, "--llmcomm-timeout: expected a number, got 'soon'"),
    ({"llmcomm_backend": "mpi"}, None, "--llmcomm-backend: must be auto, gloo or nccl, got 'mpi'"),
    ({"llmcomm_inter_rate": "200mbit,fast"}, None, "--llmcomm-inter-rate: bad link rate 'fast'"),
    ({}, {"llmcomm_ab_pairs": "many"}, "ini llmcomm_ab_pairs: expected a whole number, got 'many'"),
    ({}, {"llmcomm_trace": "maybe"}, "ini llmcomm_trace: expected true or false, got 'maybe'"),
])
def test_plugin_options_name_the_option_and_the_value(given, ini, words, monkeypatch):
    for opt in options.OPTIONS:
        if opt.env:
            monkeypatch.delenv(opt.env, raising=False)
    with pytest.raises(ValueError) as info:
        options.resolve(_Config(given, ini))
    assert str(info.value).startswith(words), str(info.value)
    assert "invalid literal" not in str(info.value)


def test_plugin_options_parse():
    resolved = options.resolve(_Config({"llmcomm_repeats": "3", "llmcomm_timeout": "2.5",
                                        "llmcomm_inter_rate": "200mbit, 1gbit"}, {"llmcomm_trace": "yes"}))
    assert (resolved.repeats, resolved.timeout, resolved.inter_rate, resolved.trace) == \
        (3, 2.5, ("200mbit", "1gbit"), True)


@pytest.mark.parametrize("text, words", [
    ("all_reduce:delay=fast", "bad fault 'all_reduce:delay=fast': delay: expected a percentage such as 10% or a "
                              "duration such as 2ms, got 'fast'"),
    ("all_reduce:delay=0ms", "bad fault 'all_reduce:delay=0ms': delay: duration must be positive, got '0ms'"),
    ("all_reduce:delay=2x", "bad fault 'all_reduce:delay=2x': delay: cannot parse duration '2x'"),
    ("all_reduce:crash=1.5", "bad fault 'all_reduce:crash=1.5': crash: expected a whole number, got '1.5'"),
    ("all_reduce:extra=0", "bad fault 'all_reduce:extra=0': extra: must be >= 1, got 0"),
    ("all_reduce:size=big", "bad fault 'all_reduce:size=big': size: expected a factor such as 2 or 1.5x"),
    ("all_reduce:size=1", "size=N needs N > 1"),
    ("send:extra=1", "extra=N needs op all_reduce"),
    ("frobnicate:delay=1ms", "bad fault 'frobnicate:delay=1ms': expected OP[@SITE]:"),
])
def test_fault_values_refused(text, words):
    with pytest.raises(ValueError) as info:
        parse_fault(text)
    assert words in str(info.value) and str(info.value).startswith(f"bad fault {text!r}: "), str(info.value)


@pytest.mark.parametrize("text, kind, value, relative", [
    ("all_reduce:delay=10%", "delay", 0.1, True), ("send@pp.boundary:delay=2ms", "delay", 2e-3, False),
    ("send:delay=300us", "delay", 300e-6, False), ("send:delay=1.5s", "delay", 1.5, False),
    ("send:delay=2", "delay", 2.0, False), ("all_reduce@attn:extra=1", "extra", 1, False),
    ("all_reduce@mlp:size=2", "size", 2, False), ("broadcast:size=1.5x", "size", 1.5, False),
    ("all_reduce:crash=1", "crash", 1, False), ("send:hang=0", "hang", 0, False),
])
def test_fault_values_parse_and_print_back(text, kind, value, relative):
    fault = parse_fault(text)
    assert (fault.kind, fault.relative) == (kind, relative) and fault.value == pytest.approx(value)
    assert parse_fault(str(fault)) == fault


@pytest.mark.parametrize("section, words", [
    ({"nodes": "2", "ranks_per_node": 2, "emulate": True}, "x.yaml: topology.nodes must be an integer >= 1, "
                                                           "got '2' (a string)"),
    ({"nodes": True, "ranks_per_node": 2, "emulate": True}, "topology.nodes must be an integer >= 1, got true"),
    ({"nodes": 2, "ranks_per_node": 0, "emulate": True}, "topology.ranks_per_node must be an integer >= 1, got 0"),
    ({"nodes": 2, "ranks_per_node": 2, "emulate": True, "nics_per_node": 1.5}, "topology.nics_per_node must be "
                                                                               "an integer >= 1, got 1.5"),
    ({"nodes": 2, "ranks_per_node": 2, "emulate": True, "inter_rates": "1gbits"}, "x.yaml: topology.inter_rates: "
                                                                                  "bad link rate '1gbits'"),
])
def test_topology_counts_and_rates_refused(section, words):
    with pytest.raises(topology.TopologyError, match=re.escape(words)):
        topology.parse(section, "x.yaml")
