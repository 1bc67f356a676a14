"""The CO₂ model's rules (app/carbon.py), the GGUF header reader (workers/model_file.py) and
the checks on what a node claims about its model (app/catalog.py), without servers."""

from __future__ import annotations

import struct
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import carbon, catalog
from workers import model_file
from workers.tinymodel import build_tiny_model

CONFIG = {
    "CO2_WATTS_BY_HARDWARE_CLASS": {"raspberry-pi": "8", "laptop": 30, "desktop": "120"},
    "CO2_GRID_G_PER_KWH": "200",
    "CO2_CLOUD_G_PER_REQUEST": 500,
}
MODEL = carbon.assumptions(CONFIG)
PI = {"architecture": "aarch64", "cores": 4, "ram_bytes": 8 * 1024**3, "hardware_class": "raspberry-pi"}


def test_an_hour_of_a_laptop_at_30_w_on_a_200_g_grid_emits_6_grams():
    found = carbon.footprint({"laptop": 3_600_000}, MODEL)

    assert found.wh == Decimal(30)
    assert found.grams == Decimal(6)
    assert found.as_dict() == {"laptop": {"seconds": 3600.0, "energy_wh": 30.0, "co2_grams": 6.0}}


def test_work_of_several_classes_adds_up_each_at_its_own_power():
    found = carbon.footprint({"raspberry-pi": 1_800_000, "desktop": 36_000, carbon.UNKNOWN: 72_000}, MODEL)

    # 4 Wh + 1.2 Wh + 2.4 Wh (unknown: the table's highest power, 120 W) at 0.2 g per Wh
    assert found.wh == Decimal("7.6")
    assert found.grams == Decimal("1.52")


def test_savings_are_the_seed_s_cloud_figure_per_request_less_what_the_grid_emitted():
    assert carbon.saved_grams(3, Decimal("1.5"), MODEL) == Decimal("1498.5")
    assert carbon.saved_grams(0, Decimal("1.5"), MODEL) == Decimal("-1.5")  # honest when worse


def test_a_node_s_hardware_class_is_its_claim_only_when_the_table_has_it_and_its_machine_fits():
    known = MODEL.watts_by_class
    assert carbon.hardware_class({"machine": {"hardware_class": "laptop"}}, known) == "laptop"
    assert carbon.hardware_class({"machine": PI}, known) == "raspberry-pi"
    # A "Raspberry Pi" with 64 x86 cores is not one: counted at the highest power.
    big = {**PI, "architecture": "x86_64", "cores": 64}
    assert carbon.hardware_class({"machine": big}, known) == carbon.UNKNOWN
    assert carbon.hardware_class({"machine": {**PI, "ram_bytes": 2**40}}, known) == carbon.UNKNOWN
    assert carbon.hardware_class({"machine": {**PI, "cores": True}}, known) == carbon.UNKNOWN
    for claim in ("solar-abacus", "LAPTOP", "", None, 7, ["laptop"], {"laptop": 1}):
        assert carbon.hardware_class({"machine": {"hardware_class": claim}}, known) == carbon.UNKNOWN
    assert MODEL.watts(carbon.UNKNOWN) == Decimal(120)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(json_values, json_values)
def test_nothing_a_node_registers_breaks_the_class_it_is_counted_as(probe, machine):
    for value in (probe, {"machine": machine}, {"machine": {"hardware_class": machine}}):
        assert carbon.hardware_class(value, MODEL.watts_by_class) in {*MODEL.watts_by_class, carbon.UNKNOWN}


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6), json_values, json_values)
def test_a_machine_s_class_depends_only_on_the_fields_said_to_be_read(machine, cores, claim):
    # app.footprints sums metered time in SQL by carbon.MACHINE_FIELDS alone.
    for shown in (machine, {**PI, **machine}, {**machine, "cores": cores, "hardware_class": claim}):
        read = {field: shown.get(field) for field in carbon.MACHINE_FIELDS}
        assert carbon.hardware_class({"machine": shown}, MODEL.watts_by_class) == carbon.hardware_class(
            {"machine": read}, MODEL.watts_by_class
        )


@given(json_values)
def test_nothing_a_node_registers_about_its_model_breaks_the_listing(model):
    digest = "a" * 64
    for probe in (model, {"model": model}, {"model": {"sha256": digest, "bytes": model, "file_name": model}}):
        found = catalog.claim(probe)
        assert found is None or found["sha256"] == digest


@pytest.mark.parametrize(
    "key, value",
    [
        ("CO2_GRID_G_PER_KWH", "-1"),
        ("CO2_GRID_G_PER_KWH", "NaN"),
        ("CO2_GRID_G_PER_KWH", "lots"),
        ("CO2_CLOUD_G_PER_REQUEST", "1e9"),
        ("CO2_WATTS_BY_HARDWARE_CLASS", {}),
        ("CO2_WATTS_BY_HARDWARE_CLASS", {"laptop": "0"}),
        ("CO2_WATTS_BY_HARDWARE_CLASS", "laptop=30"),
    ],
)
def test_a_figure_out_of_range_is_a_configuration_error_not_a_number_shown(key, value):
    with pytest.raises(ValueError, match=key):
        carbon.assumptions({**CONFIG, key: value})


def test_the_assumptions_are_returned_with_the_figures_they_gave():
    shown = MODEL.as_dict()

    assert shown["watts_by_hardware_class"] == {"desktop": "120", "laptop": "30", "raspberry-pi": "8"}
    assert shown["unknown_hardware_watts"] == "120"
    assert (shown["grid_g_per_kwh"], shown["cloud_g_per_request"]) == ("200", "500")
    assert "seconds" in shown and "request" in shown and "formula" in shown


# --- what a model file says about itself ---------------------------------------------------------


def test_the_tiny_model_s_header_gives_its_architecture_context_parameters_and_quantisation(tmp_path: Path):
    import gguf

    path = build_tiny_model(tmp_path / "tiny.gguf", context_length=384)

    facts = model_file.read(path)

    expected = sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)  # llama.cpp's own reader
    assert facts == {
        "architecture": "llama",
        "name": "KoproGo tiny test model (random weights, seed 0)",
        "context_length": 384,
        "parameters": expected,
        "quantisation": "F32",
    }


def test_a_damaged_or_hostile_model_file_is_unreadable_not_a_crash(tmp_path: Path):
    good = build_tiny_model(tmp_path / "tiny.gguf").read_bytes()
    cases = {
        "truncated.gguf": good[:300],  # inside its metadata
        "not-gguf.bin": b"\x89PNG\r\n" + bytes(100),
        "old-version.gguf": b"GGUF" + struct.pack("<I", 1) + bytes(16),
        # 2**60 metadata entries announced: refused at once, nothing allocated.
        "huge-count.gguf": b"GGUF" + struct.pack("<IQQ", 3, 1, 2**60),
        # A key announcing a string of 2**40 bytes.
        "huge-string.gguf": b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**40),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(model_file.Unreadable):
            model_file.read(path)
        assert set(model_file.describe(path).values()) == {None}
    with pytest.raises(model_file.Unreadable):
        model_file.read(tmp_path / "missing.gguf")


def test_a_node_s_model_claim_is_checked_field_by_field():
    found = catalog.claim(
        {
            "model": {
                "sha256": "b" * 64,
                "path": "/home/alice/models/secret-folder/mistral.gguf",
                "bytes": True,  # not a number
                "parameters": 10**20,  # beyond any model
                "context_length": 8192,
                "quantisation": "Q4_K_M; DROP TABLE",
                "architecture": "llama",
                "name": "x" * 500,
                "exists": True,
                "fits_in_ram": "yes",
            }
        }
    )

    assert found["file_name"] == "mistral.gguf"  # never the node's folders
    assert found["bytes"] is None and found["parameters"] is None and found["quantisation"] is None
    assert (found["context_length"], found["architecture"]) == (8192, "llama")
    assert len(found["name"]) == catalog.MAX_TEXT
    assert found["usable"] is False  # "yes" is not True
    assert catalog.claim({"model": {"sha256": "B" * 64}}) is None
    assert catalog.claim({"model": {"sha256": "../" + "a" * 61}}) is None
