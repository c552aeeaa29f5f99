"""pyproject.toml as setuptools reads it for `pip install -e .`: no deprecation on the way."""

from __future__ import annotations

import tomllib
import warnings

from packaging.licenses import canonicalize_license_expression

from service.settings import REPO


def test_pyproject_applies_without_deprecations():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # `project.license` as a table warned twice per install
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert dist.metadata.name == "vdis"
    license = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert isinstance(license, str)
    assert canonicalize_license_expression(license) == license  # a valid SPDX expression
