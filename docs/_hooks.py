"""MkDocs hooks for the masked_losses site (registered in mkdocs.yml, not a page).

An API page that documents a module which is not in the source tree (an adapter that has not
been written, or was removed) would make mkdocstrings abort the whole build. This hook turns
such a ``::: masked_losses.<module>`` directive into a visible notice instead, so the rest of
the site still builds; ``tests/test_docs.py`` separately checks that every module the API
pages name exists and that every public module is named.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.masked_losses")

_DIRECTIVE = re.compile(r"^::: (masked_losses(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$", re.MULTILINE)


def module_exists(root: Path, dotted: str) -> bool:
    """Whether ``dotted`` (e.g. ``masked_losses.torch``) is a module file or package under root."""
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root = Path(config["config_file_path"]).parent

    def replace(match: re.Match[str]) -> str:
        dotted = match.group(1)
        if module_exists(root, dotted):
            return match.group(0)
        log.info("%s: %s is not in the source tree; showing a notice", page.file.src_uri, dotted)
        return (
            f'!!! warning "`{dotted}` is not available in this build"\n'
            f"    The module `{dotted}` was not found in the source tree when this site was "
            "built, so its reference could not be generated.\n"
        )

    return _DIRECTIVE.sub(replace, markdown)


# Docstrings in the package use Sphinx roles (:func:`masked_mse`), which Markdown renders as
# ":func:" followed by code. Keep the code, drop the role.
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|exc|data|obj):(<code>)")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return _ROLE.sub(r"\1", html)
