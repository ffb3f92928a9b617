"""Sphinx configuration of the dask_zcollection documentation.

Build with ``./run docs`` (warnings are errors, then the browser check), or
``PYTHONPATH=. sphinx-build -W -b html docs docs/_build/html``.

- A page: ``docs/<name>.md`` (MyST markdown), listed in a toctree of
  ``docs/index.md`` (a page in no toctree fails the build).
- An example: ``docs/examples/plot_<NN>_<name>.py`` (sphinx-gallery: a
  docstring title, ``# %%`` cells); it runs on every build, and an error in it
  fails the build. Reference it as ``{ref}`sphx_glr_auto_examples_plot_<NN>_<name>.py```.
- An API entry: a name in an ``autosummary`` list of ``docs/api.md``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout's package, not another installed copy
sys.path.insert(0, str(ROOT / "scripts"))

import dask_zcollection  # noqa: E402

project = "dask_zcollection"
author = "dask_zcollection developers"
copyright = "2026, dask_zcollection developers"
release = version = dask_zcollection.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "matplotlib.sphinxext.plot_directive",
    "docs_screenshots",  # scripts/docs_screenshots.py: the HTML repr, shot in Chromium
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples/GALLERY_HEADER.rst", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST: heading anchors so that `[x](format.md#commit-protocol)` links resolve.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: autosummary writes one page per object into api/generated/.
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # numpydoc sections carry the types
autodoc_member_order = "groupwise"
autodoc_default_options = {"show-inheritance": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

# The gallery: every docs/examples/plot_*.py runs at build time.
sphinx_gallery_conf = {
    "examples_dirs": ["examples"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "capture_repr": ("_repr_html_", "__repr__"),
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "plot_gallery": os.environ.get("DZC_DOCS_PLOT", "True"),
}

html_theme = "pydata_sphinx_theme"
html_title = "dask_zcollection"
html_static_path = ["_static"]
html_favicon = "_static/logo.svg"
html_logo = "_static/logo.svg"
# Without a default mode the theme's script logs an error on a first visit.
html_context = {"default_mode": "light"}
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "logo": {"text": "dask_zcollection"},
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": [], "migrating": [], "performance": []}
html_show_sourcelink = False
html_last_updated_fmt = None  # the same bytes for the same sources

suppress_warnings = [
    # A JSON block with "..." in it (docs/format.md) is highlighted in relaxed mode.
    "misc.highlighting_failure",
]

# matplotlib's plot directive (docs/performance.md): PNG only, no source links.
plot_formats = [("png", 100)]
plot_html_show_formats = False
plot_html_show_source_link = False
