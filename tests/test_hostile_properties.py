"""Hostile input, generated: names, storage URIs and numbers drawn by hypothesis.

Each property states what must hold for EVERY input, not for a few chosen ones: a name is
accepted exactly when it is safe and then never leaves the storage root; a URI is accepted only
in the S3 shape; no non-finite number passes config validation.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metagan import storage
from metagan.config import ConfigError, build_config

from .conftest import tiny_data

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NASTY = st.sampled_from(list(";|&$`'\"\\ \n\t/*?<>(){}[]!#~%^=:,@") + ["..", "../", "\x00", "é"])
names = st.one_of(st.text(min_size=0, max_size=120),
                  st.lists(st.one_of(st.from_regex(SAFE, fullmatch=True), NASTY), max_size=6)
                  .map("".join))


@settings(max_examples=400, deadline=None)
@given(names)
def test_a_name_is_accepted_exactly_when_safe_and_stays_inside_the_root(name: str) -> None:
    local = storage.parse_storage("/srv/results")
    s3 = storage.parse_storage("s3://metagan/searches")
    safe = bool(SAFE.fullmatch(name)) and ".." not in name
    if not safe:
        with pytest.raises(ConfigError, match="experiment name"):
            storage.check_name(name)
        with pytest.raises(ConfigError):
            local.experiment_path(name)
        return
    assert storage.check_name(name) == name
    inside = Path(local.experiment_path(name)).resolve()
    assert inside.parent == Path("/srv/results").resolve()
    assert posixpath.dirname(s3.experiment_path(name)) == "metagan/searches"
    assert shlex.split(shlex.join(["--name", name])) == ["--name", name]  # one shell word


buckets = st.one_of(st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True),
                    st.text(max_size=70))
prefixes = st.lists(st.one_of(st.from_regex(r"[A-Za-z0-9._=+-]{1,12}", fullmatch=True),
                              NASTY), max_size=4).map("/".join)


@settings(max_examples=400, deadline=None)
@given(buckets, prefixes)
def test_an_accepted_s3_uri_has_a_valid_bucket_and_a_plain_prefix(bucket: str, prefix: str) -> None:
    uri = f"s3://{bucket}/{prefix}"
    try:
        parsed = storage.parse_storage(uri)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("storage ")
        return
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", parsed.bucket)
    assert ".." not in parsed.bucket
    for segment in filter(None, parsed.prefix.split("/")):
        assert re.fullmatch(r"[A-Za-z0-9._=+-]+", segment) and segment not in (".", "..")
    assert shlex.split(shlex.join([parsed.uri])) == [parsed.uri]


FLOAT_KEYS = ["optim.lr", "optim.weight_decay", "optim.grad_clip", "meta.inner_lr", "gan.ema",
              "gan.g_lr", "gan.d_lr", "gan.gp_weight", "gan.beta1"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FLOAT_KEYS), st.floats(allow_nan=True, allow_infinity=True))
def test_no_non_finite_number_passes_validation(key: str, value: float) -> None:
    data = tiny_data("maml")
    try:
        cfg = build_config(data, {key: value})
    except ConfigError as e:
        assert key in str(e) and "\n" not in str(e)
        return
    section, field = key.split(".")
    assert math.isfinite(getattr(getattr(cfg, section), field))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_address_text_is_accepted_or_one_clear_refusal(address: str) -> None:
    from metagan.tune.cluster import split_host_port

    try:
        host, port = split_host_port(address, "--address")
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("--address ")
        return
    assert host and 0 < port < 65536
