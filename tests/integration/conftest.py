"""The lab fixtures (shared with tests/faults, so that one lab start-up serves both suites)."""

from lab_fixtures import *  # noqa: F401,F403 pylint: disable=wildcard-import,unused-wildcard-import
