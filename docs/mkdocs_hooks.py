"""MkDocs hook: the README and the top-level documents included in the site keep working links.

The README links files by their path in the repository (``docs/algorithm.md``, ``BENCHMARKS.md``); in the
site those are pages beside it.
"""
from __future__ import annotations

import re
from pathlib import Path

#: a repository path linked from an included document -> the site page that shows it
SITE_PAGES = {"docs/": "", "BENCHMARKS.md": "benchmarks.md", "REPRODUCTION.md": "reproduction.md",
              "examples/bring_your_own.py": "example.md", "examples/regression.py": "example-regression.md",
              "examples/autoencoder.py": "example-autoencoder.md",
              "examples/scheduler_over_the_run.py": "example-scheduler.md", "CHANGELOG.md": "changelog.md",
              "LICENSE": "license.md"}


#: a page's line that includes a repository file: ``--8<-- "README.md"``
INCLUDE = re.compile(r'^--8<-- "([^"]+)"$', re.M)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' hook signature)
    """Include the repository files a page names, with their repository links rewritten to site pages."""
    root = Path(config["config_file_path"]).resolve().parent

    def include(match: re.Match) -> str:
        text = (root / match.group(1)).read_text()
        return text if not match.group(1).endswith(".md") else re.sub(r"\]\((?!https?:|#)([^)]+)", rewrite, text)

    def rewrite(match: re.Match) -> str:
        target = match.group(1)
        for prefix, page_name in SITE_PAGES.items():
            if target.startswith(prefix):
                return f"]({page_name or target[len(prefix):]}"
        return match.group(0)

    return INCLUDE.sub(include, markdown)
