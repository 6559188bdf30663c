"""The row contract is declared once (bench/schema.py) and everything else follows it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from bench.probes.registry import BUILTIN
from bench.schema import (
    ARROW_SCHEMA,
    DECLARED,
    KINDS,
    SCHEMA_HISTORY,
    SCHEMA_VERSION,
    Row,
    markdown_table,
)
from bench.store_checks import MIGRATIONS

README = Path(__file__).resolve().parent.parent / "README.md"
RELEASED = Path(__file__).resolve().parent / "data" / "schema_versions.json"


def test_readme_column_table_is_the_generated_one() -> None:
    text = README.read_text()
    block = re.search(r"<!-- columns:.*?-->\n(.*?)<!-- /columns -->", text, re.S)
    assert block is not None, "README lost its generated column table markers"
    assert block.group(1) == markdown_table(), "regenerate it: python -m bench.schema"


def test_row_fields_and_arrow_schema_follow_the_declarations() -> None:
    names = [c.name for c in DECLARED]
    assert len(names) == len(set(names))
    fields = dataclasses.fields(Row)
    assert [f.name for f in fields] == [*names, "extra"]  # extra: probes outside the contract
    assert names == ARROW_SCHEMA.names
    for c, f in zip(DECLARED, fields[:-1], strict=True):
        assert f.type == KINDS[c.kind][0]
        assert ARROW_SCHEMA.field(c.name).type == c.arrow_type


def test_a_changed_contract_is_a_new_version_with_its_migration() -> None:
    """tests/data/schema_versions.json keeps each released version's columns. The declared
    columns must be the current version's entry: a column added, removed, renamed or given
    another kind without a new version (SCHEMA_VERSION, a SCHEMA_HISTORY line, an entry
    there, a migration) fails here."""
    released = {int(k): v for k, v in json.loads(RELEASED.read_text()).items() if k != "about"}
    assert [[c.name, c.kind] for c in DECLARED] == released.get(SCHEMA_VERSION), (
        "the row contract changed: bump bench.schema.SCHEMA_VERSION, say what changed in "
        "SCHEMA_HISTORY, add the migration to bench.store_checks.MIGRATIONS and the new "
        "version's columns to tests/data/schema_versions.json (leave older entries as they are)"
    )
    assert sorted(SCHEMA_HISTORY) == list(range(1, SCHEMA_VERSION + 1))
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))
    # a column is promised (``since``) from the version that added it; version 2 promised
    # every column it had, since version 1 had no fixed set
    before = {name for name, _ in released.get(SCHEMA_VERSION - 1, [])}
    for c in DECLARED:
        assert c.since == (SCHEMA_VERSION if c.name not in before else c.since), c.name
        assert 2 <= c.since <= SCHEMA_VERSION, c.name
    assert ARROW_SCHEMA.metadata[b"effbench_schema_version"] == str(SCHEMA_VERSION).encode()


def test_units_live_in_the_names() -> None:
    suffix = {"ms": "_ms", "bytes": "_bytes", "W": "_w", "J": "_j", "MHz": "_mhz", "°C": "_c"}
    for c in DECLARED:
        if c.unit in suffix:  # `bytes_per_image` (the name) says it first
            assert suffix[c.unit] in c.name or c.name.startswith(suffix[c.unit][1:] + "_"), c
        assert c.meaning and not c.meaning.endswith("."), c


def test_every_probe_column_is_declared_by_exactly_one_probe() -> None:
    declared = {c.name for c in DECLARED}
    owners: dict[str, str] = {}
    for probe in BUILTIN:
        for c in probe.columns:
            assert c.name in declared
            assert c.name not in owners, f"{c.name} declared by {owners.get(c.name)} too"
            owners[c.name] = probe.__name__
        assert probe.note_column in {c.name for c in probe.columns} | {"error"}


def test_readme_timing_table_is_the_generated_one() -> None:
    from bench.cli import timing_table

    text = README.read_text()
    block = re.search(r"<!-- timing:.*?-->\n(.*?)<!-- /timing -->", text, re.S)
    assert block is not None, "README lost its generated timing table markers"
    assert block.group(1) == timing_table(), "regenerate it from bench.cli.timing_table()"
