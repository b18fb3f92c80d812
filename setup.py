"""What pyproject.toml cannot say: the packages are found, and the top-level ``templates/`` folder
installs as the package ``generator.templates`` (package data, with the theme)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["generator", "generator.*"]) + ["generator.templates"],
    package_dir={"generator.templates": "templates"},
)
