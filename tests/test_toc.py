"""styo.book.toc: the one reader of _toc.yml that the build, the tests, the timing and the browser check share."""

from __future__ import annotations

from styo.book import toc


def test_documents_follow_chapters_sections_and_parts_in_order(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\n"
        "parts:\n"
        "  - caption: One\n    chapters:\n      - file: a\n        sections:\n          - file: a1\n      - file: b\n"
        "  - caption: Two\n    chapters:\n      - file: c\n")
    for name in ("intro", "a1", "c"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    (tmp_path / "a.md").write_text("# a")
    assert toc.documents(tmp_path / "_toc.yml") == ["intro", "a", "a1", "b", "c"]
    # only the documents that are notebooks (b exists in no form, a is markdown)
    assert toc.notebooks(tmp_path / "_toc.yml") == ["intro.ipynb", "a1.ipynb", "c.ipynb"]


def test_the_book_starts_with_its_overview_and_ends_with_the_appendix():
    chapters = toc.notebooks()
    assert chapters[0] == "book/intro.ipynb" and chapters[-1] == "book/appendix.ipynb"
    assert len(chapters) == len(set(chapters)) == 11
