"""Package data: the Jinja2 templates of the gallery's pages and the site's mkdocs theme (``mkdocs-theme.yml``).

Installed as ``generator.templates``; read through :mod:`generator.site.resources`.
"""
