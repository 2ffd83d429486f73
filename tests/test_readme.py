"""The README is part of the product: its reason-code table and commands must be current."""

from pathlib import Path

from checks.reasons import markdown_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_lists_every_reason_code_as_the_table_says():
    assert markdown_table() in README, "regenerate with `python -m checks.reasons`"


def test_readme_gives_the_two_setup_commands():
    assert "make demo" in README and "make test" in README
