"""The shipped Xid catalogue loads and says what NVIDIA's catalogue says; a broken file is reported by
file, line, XID and field."""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path

import pytest

from supply_agent.policy import xids
from supply_agent.policy.xids import (
    BUCKETS,
    CATALOGUE_SOURCE,
    COLUMNS,
    IMMEDIATE_BUCKETS,
    INVESTIGATORY_BUCKETS,
    XidCatalogueError,
    bucket_of,
    check_catalogue,
    load_catalogue,
    lookup,
    read_catalogue,
)

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "supply_agent" / "policy" / "data"
HEADER = ",".join(COLUMNS)
ROW_48 = (
    "48,ROBUST_CHANNEL_GPU_ECC_DBE,Double Bit ECC Error,A100;H100;B100;GB200,WORKFLOW_XID_48,"
    f"WORKFLOW_XID_48,,,{CATALOGUE_SOURCE},"
)
ROW_79 = (
    "79,ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS,GPU has fallen off the bus,A100;H100;B100;GB200,"
    f"RESTART_BM,CONTACT_SUPPORT,,,{CATALOGUE_SOURCE},"
)


def _write(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "xid_catalogue.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(XidCatalogueError) as info:
        read_catalogue(path)
    return [str(e) for e in info.value.errors]


# --- the shipped file --------------------------------------------------------------------------------


def test_the_shipped_catalogue_loads_every_code_once() -> None:
    assert check_catalogue() == []
    cat = load_catalogue()
    assert len(cat) == 172
    assert cat.codes == tuple(range(1, 173))
    assert load_catalogue() is cat  # cached


def test_every_row_names_its_source() -> None:
    for entry in load_catalogue().entries:
        assert entry.source == CATALOGUE_SOURCE, entry.code


def test_the_vocabulary_is_the_datas() -> None:
    """The bucket names the schema accepts are exactly those the data uses, and each has a meaning."""
    cat = load_catalogue()
    assert {e.immediate_action for e in cat.entries} - {None} == set(IMMEDIATE_BUCKETS)
    assert {e.investigatory_action for e in cat.entries} - {None} == set(INVESTIGATORY_BUCKETS)
    assert set(cat.meanings) == BUCKETS


# What NVIDIA's catalogue states, row by row (analyzing-xid-catalog.html).
@pytest.mark.parametrize(
    ("code", "mnemonic", "immediate", "investigatory"),
    [
        (
            13,
            "ROBUST_CHANNEL_GR_EXCEPTION / ROBUST_CHANNEL_GR_ERROR_SW_NOTIFY",
            "RESTART_APP",
            "WORKFLOW_XID_13",
        ),
        (31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "RESTART_APP", "WORKFLOW_XID_31"),
        (43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "IGNORE", "CONTACT_SUPPORT"),
        (
            45,
            "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL",
            "WORKFLOW_XID_45",
            "Solo: RESTART_FM Not Solo: IGNORE (follow other Xid)",
        ),
        (48, "ROBUST_CHANNEL_GPU_ECC_DBE", "WORKFLOW_XID_48", "WORKFLOW_XID_48"),
        (63, "INFOROM_DRAM_RETIREMENT_EVENT", "IGNORE", "IGNORE"),
        (64, "INFOROM_DRAM_RETIREMENT_FAILURE", "RESET_GPU", "CONTACT_SUPPORT"),
        (74, "NVLINK_ERROR", "WORKFLOW_NVLINK_ERR", "CONTACT_SUPPORT"),
        (79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "RESTART_BM", "CONTACT_SUPPORT"),
        (94, "ROBUST_CHANNEL_CONTAINED_ERROR", "RESTART_APP", "IGNORE (sympathetic)"),
        (95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "RESET_GPU", "IGNORE (sympathetic)"),
        (119, "GSP_RPC_TIMEOUT", "RESET_GPU", "INVESTIGATE_SW"),
        (151, "ROBUST_CHANNEL_KEY_ROTATION_ERROR", "RESTART_VM", "CONTACT_SUPPORT"),
        (154, "GPU_RECOVERY_ACTION_CHANGED", "XID_154", "N/A Informational only regarding another Xid"),
    ],
)
def test_known_rows_say_what_the_catalogue_says(
    code: int, mnemonic: str, immediate: str, investigatory: str
) -> None:
    entry = lookup(code)
    assert entry is not None
    assert (entry.mnemonic, entry.immediate_action, entry.investigatory_action) == (
        mnemonic,
        immediate,
        investigatory,
    )
    assert bucket_of(code) == immediate


def test_the_issues_examples_have_the_catalogues_buckets() -> None:
    """Issue 14: reset-class XIDs, and XIDs NVIDIA says need nothing or an application restart."""
    assert {bucket_of(c) for c in (46, 62, 109, 136, 140, 143)} == {"RESET_GPU"}
    assert {c: bucket_of(c) for c in (8, 32, 38, 44, 69, 92)} == {
        8: "RESTART_APP",
        32: "RESTART_APP",
        38: "IGNORE",
        44: "IGNORE",
        69: "RESTART_APP",
        92: "IGNORE",
    }


def test_products_and_families() -> None:
    nvlink, c2c, nvlink5, dram = lookup(74), lookup(121), lookup(144), lookup(48)
    assert nvlink is not None and c2c is not None and nvlink5 is not None and dram is not None
    assert nvlink.applies_to == ("A100", "H100") and nvlink.families == ("Ampere", "Hopper")
    assert c2c.applies_to == ("GB200",) and c2c.families == ("Blackwell",)
    assert nvlink5.families == ("Blackwell",)
    assert dram.families == ("Ampere", "Hopper", "Blackwell")
    unused = lookup(1)
    assert unused is not None and unused.description == "Unused" and unused.applies_to == ()


def test_what_the_catalogue_leaves_open_stays_open() -> None:
    """No bucket where NVIDIA gives none; an uncatalogued code is None, left to the caller's default."""
    assert [c for c, e in ((c, lookup(c)) for c in range(162, 173)) if e and e.immediate_action] == []
    assert bucket_of(162) is None and lookup(162) is not None
    assert lookup(0) is None and lookup(999) is None and bucket_of(999) is None


def test_disagreements_with_nvsentinel_are_recorded_and_the_catalogue_wins() -> None:
    event = lookup(160)
    assert event is not None
    assert event.immediate_action == "IGNORE" and event.nvsentinel_action == "RESTART_BM"
    assert event.notes is not None and "NVSentinel" in event.notes
    for entry in load_catalogue().entries:
        differs = entry.nvsentinel_action not in (None, entry.immediate_action)
        assert not differs or (entry.notes and "NVSentinel" in entry.notes), entry.code


def test_the_buckets_by_code_count() -> None:
    counts = {b: len(c) for b, c in load_catalogue().by_bucket().items()}
    assert counts["RESTART_APP"] == 48 and counts["RESET_GPU"] == 14 and counts["IGNORE"] == 21
    assert counts[None] == 11 and sum(counts.values()) == 172


def test_the_data_files_are_packaged() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["supply_agent.policy"]
    for path in DATA.iterdir():
        assert any(path.match(p) for p in patterns), path.name


# --- broken files --------------------------------------------------------------------------------------


def test_a_small_valid_file_loads(tmp_path: Path) -> None:
    cat = read_catalogue(_write(tmp_path, ROW_48, ROW_79))
    assert cat.codes == (48, 79)
    assert cat.get(79) is not None and cat.get(13) is None


def test_an_unknown_bucket_names_file_line_xid_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, ROW_48, ROW_79.replace("RESTART_BM", "RESTART_BOX"))
    [error] = _errors(path)
    assert error.startswith(f"{path}:3: xid 79: immediate_action: unknown bucket 'RESTART_BOX'")
    assert "did you mean 'RESTART_BM'?" in error


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        ROW_48.replace("A100;H100", "A100;H200"),
        ROW_79.replace(CATALOGUE_SOURCE, ""),
        "80,PBDMA_PUSHBUFFER_CRC_MISMATCH,Corrupted data sent to GPU",
        ROW_79.replace("79,", "x9,", 1),
    )
    errors = _errors(path)
    assert f"{path}:2: xid 48: applies_to: unknown product 'H200'" in errors[0]
    assert errors[1] == f"{path}:3: xid 79: source: required field is missing"
    assert errors[2] == f"{path}:4: <row>: expected {len(COLUMNS)} fields, got 3"
    assert errors[3].startswith(f"{path}:5: code: ") and "'x9'" in errors[3]
    assert len(errors) == 4


def test_duplicate_codes_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, ROW_48, ROW_79, ROW_48.replace("Double Bit", "Twice"))
    assert _errors(path) == [f"{path}:4: xid 48: code: duplicate xid (first at line 2)"]


def test_a_wrong_header_or_stray_whitespace_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "xid_catalogue.csv"
    path.write_text("code,name\n48,X\n", encoding="utf-8")
    [error] = _errors(path)
    assert error.startswith(f"{path}:1: <header>: expected columns {HEADER}")
    path = _write(tmp_path, ROW_48.replace("WORKFLOW_XID_48,", "WORKFLOW_XID_48 ,", 1))
    assert _errors(path) == [
        f"{path}:2: immediate_action: leading or trailing whitespace in 'WORKFLOW_XID_48 '"
    ]


def test_a_bucket_without_a_meaning_is_an_error(tmp_path: Path) -> None:
    buckets = tmp_path / "xid_buckets.csv"
    with (DATA / "xid_buckets.csv").open(encoding="utf-8") as f:
        kept = [row for row in csv.reader(f) if row[0] != "RESTART_BM"]
    with buckets.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)
    path = _write(tmp_path, ROW_48, ROW_79)
    problems = [str(p) for p in check_catalogue(path, buckets)]
    assert problems == [f"{path}:3: xid 79: immediate_action: 'RESTART_BM' has no meaning in {buckets}"]


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    [error] = _errors(missing)
    assert error.startswith(f"{missing}:0: <file>: cannot read")


def test_the_module_states_why_it_exists() -> None:
    assert xids.__doc__ is not None and "It exists so that" in xids.__doc__
