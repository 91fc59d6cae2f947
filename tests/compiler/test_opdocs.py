"""The generated documents must match the registry (regenerate: python -m axonc.opdocs)."""

from pathlib import Path

from axonc.opdocs import TABLE_BEGIN, TABLE_END, op_table_markdown, ops_markdown
from axonc.registry import OPS

ROOT = Path(__file__).resolve().parents[2]


def test_spec_ops_md_is_up_to_date():
    assert (ROOT / "spec" / "ops.md").read_text() == ops_markdown(), (
        "spec/ops.md is stale: run python -m axonc.opdocs"
    )


def test_readme_op_table_is_up_to_date():
    readme = (ROOT / "README.md").read_text()
    table = readme.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == op_table_markdown(), "README's op table is stale: run python -m axonc.opdocs"


def test_op_table_lists_every_user_facing_op():
    table = op_table_markdown()
    for name in OPS:
        if name not in ("input", "argument"):
            assert f"| `{name}` |" in table
