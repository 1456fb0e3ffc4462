"""Pure parts of the server: lenient parameters, rounding, similarity, base64, settings, the CLI."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from faceatlas.api.collections import round_half_up
from faceatlas.api.errors import ApiError
from faceatlas.api.requests import decode_base64, parse_bool, parse_face_query, parse_int, parse_plugins
from faceatlas.api.settings import Settings
from faceatlas.api.state import is_uuid
from faceatlas.cli.services import services
from faceatlas.vectors import similarity_of_cosine

PLUGINS = ("landmarks", "age", "gender", "pose")


def code_of(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value.code


def test_booleans_and_ints_are_parsed_like_spring() -> None:
    assert parse_bool({"status": "True"}, "status", False) is True
    assert parse_bool({"status": "FALSE"}, "status", True) is False
    assert parse_bool({"status": ""}, "status", True) is True  # empty value = default
    assert parse_bool({}, "status", False) is False
    assert code_of(parse_bool, {"status": "maybe"}, "status", False) == 26
    assert parse_int({"limit": " 3 "}, "limit", 0) == 3
    assert parse_int({"limit": ""}, "limit", 7) == 7
    assert code_of(parse_int, {"limit": "-1"}, "limit", 0, minimum=0) == 26
    assert code_of(parse_int, {"limit": "x"}, "limit", 0) == 26


def test_face_plugins_drop_unknown_slugs() -> None:
    assert parse_plugins({"face_plugins": "undefined"}, PLUGINS) == ()
    assert parse_plugins({"face_plugins": "AGE, gender mask,,age"}, PLUGINS) == ("age", "gender")
    query = parse_face_query(
        {"face_plugins": "calculator,landmarks", "prediction_count": "-1", "threshold": ""}, PLUGINS
    )
    assert query.plugins == ("calculator", "landmarks") and query.prediction_count == -1
    assert query.detect_faces is True and query.status is False and query.limit == 0
    assert code_of(parse_face_query, {"det_prob_threshold": "1.5"}, PLUGINS) == 28
    assert code_of(parse_face_query, {"prediction_count": "0"}, PLUGINS) == 26
    assert code_of(parse_face_query, {"min_similarity": "2"}, PLUGINS) == 26


def test_similarity_formula_and_half_up_rounding() -> None:
    a = np.array([1.0, 0.0])
    b = np.array([0.6, 0.8])
    distance = np.linalg.norm(a - b)
    expected = (np.tanh((1.1817961 - distance) * 5.291995557) + 1) / 2
    assert similarity_of_cosine(np.array([a @ b]), 1.1817961, 5.291995557)[0] == pytest.approx(expected)
    # at d = c0 the curve crosses 0.5
    cosine_at_c0 = 1 - 1.1817961**2 / 2
    assert similarity_of_cosine(np.array([cosine_at_c0]), 1.1817961, 5.0)[0] == pytest.approx(0.5)
    assert round_half_up(0.123455) == 0.12346  # binary rounding would give 0.12345
    assert round_half_up(0.999994) == 0.99999
    assert round_half_up(0.999995) == 1.0


def test_base64_checks() -> None:
    raw = bytes(range(256))
    assert decode_base64(base64.b64encode(raw).decode(), 1000) == raw
    assert decode_base64(base64.b64encode(raw).decode().rstrip("="), 1000) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode(), 1000) == raw
    assert code_of(decode_base64, "data:image/jpeg;base64,AAAA", 1000) == 21
    assert code_of(decode_base64, "", 1000) == 21
    assert code_of(decode_base64, 12, 1000) == 21
    with pytest.raises(ApiError) as info:
        decode_base64(base64.b64encode(raw).decode(), 100)
    assert info.value.status == 413


def test_api_keys_must_be_uuids() -> None:
    assert is_uuid("00000000-0000-0000-0000-000000000002")
    assert not is_uuid("0000000000000000000000000000000")
    assert not is_uuid("zzzzzzzz-0000-0000-0000-000000000002")


def test_settings_round_trip_through_the_environment(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=9000, keep_images=False, database="postgresql://u:p@h/db")
    again = Settings.from_env(settings.to_env())
    assert again == settings
    assert Settings.from_env({}, data_dir=tmp_path).database_url.startswith("sqlite:///")
    token, path = Settings(data_dir=tmp_path).resolve_admin_token()
    assert path is not None and path.read_text().strip() == token and oct(path.stat().st_mode)[-3:] == "600"
    assert Settings(data_dir=tmp_path).resolve_admin_token()[0] == token  # stable across restarts
    assert Settings(data_dir=tmp_path, admin_token="t").resolve_admin_token() == ("t", None)


def test_services_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    db = ["--data-dir", str(tmp_path)]
    created = runner.invoke(services, ["create", "--name", "home", "--type", "recognition", *db])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert is_uuid(key)
    listed = json.loads(runner.invoke(services, ["list", "--json", *db]).output)
    # the key is shown once, at creation: the database keeps only its hash, a listing only its end
    assert [(s["name"], s["type"], s["key_hint"]) for s in listed] == [("home", "recognition", key[-4:])]
    assert "api_key" not in listed[0]
    duplicate = runner.invoke(services, ["create", "--name", "home", *db])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    rotated = runner.invoke(services, ["rotate-key", "home", *db]).output.strip()
    assert is_uuid(rotated) and rotated != key
    assert runner.invoke(services, ["delete", "home", "--yes", *db]).exit_code == 0
    assert json.loads(runner.invoke(services, ["list", "--json", *db]).output) == []
    missing = runner.invoke(services, ["delete", "home", "--yes", *db])
    assert missing.exit_code != 0 and "no service" in missing.output
