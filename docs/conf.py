"""Sphinx configuration of imcsim's documentation site.

Build:  pip install -e '.[docs]' && sphinx-build -W -b html docs docs/_build/html
(.ci/run builds it with warnings as errors, so a broken link or a stale API reference fails CI).
"""
import imcsim

project = "imcsim"
author = "the imcsim developers"
release = imcsim.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.autosummary",
              "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# table3-analysis.md is a part of results-table3.md (scripts/table3_results.py pastes it in)
exclude_patterns = ["_build", "results/**", "table3-analysis.md"]
# the pages link each other and the repository's files by relative path (readable on GitHub)
myst_heading_anchors = 4
# "ref.python": numpy-style type fields name shapes ("(rows, columns)") that Sphinx tries to
# resolve as cross-references, ambiguously; missing references still fail the build
suppress_warnings = ["ref.python"]
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "none"
autosummary_generate = True
napoleon_numpy_docstring = True
napoleon_google_docstring = False
# a dataclass's "Attributes" section as fields of the class, not second attribute entries
napoleon_use_ivar = True
html_theme = "alabaster"
html_static_path = []
