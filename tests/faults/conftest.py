"""The lab fixtures of tests/integration: the fault suite runs in the same session, on the same lab."""

from lab_fixtures import *  # noqa: F401,F403 pylint: disable=wildcard-import,unused-wildcard-import
