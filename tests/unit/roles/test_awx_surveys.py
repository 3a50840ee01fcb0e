"""The AWX job templates' surveys (extensions/patterns) ask only for variables the roles declare, with the
type and the choices the roles accept, so a survey cannot drift from the role it feeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SURVEYS = sorted((ROOT / "extensions" / "patterns" / "kvm_migration" / "template_surveys").glob("*.yml"))
SURVEY_TYPES = {"text": "str", "integer": "int", "multiplechoice": None, "float": "float", "password": "str"}


def role_options():
    options = {}
    for spec in ROOT.glob("roles/*/meta/argument_specs.yml"):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            options.update(entry.get("options", {}))
    return options


@pytest.mark.parametrize("survey", SURVEYS, ids=lambda p: p.stem)
def test_every_survey_question_feeds_a_role_argument(survey):
    options = role_options()
    questions = yaml.safe_load(survey.read_text())["spec"]
    assert questions
    for question in questions:
        name = question["variable"]
        assert name in options, "%s asks for %s, which no role declares" % (survey.name, name)
        option = options[name]
        expected = SURVEY_TYPES[question["type"]]
        if expected:
            assert option.get("type", "str") == expected, (survey.name, name, option)
        if question["type"] == "multiplechoice" and option.get("type") == "bool":
            # AWX answers with strings; the role's argument spec turns "true"/"false" into booleans.
            assert set(question["choices"]) <= {"true", "false"}, (survey.name, name)
        elif question["type"] == "multiplechoice":
            assert set(question["choices"]) <= set(option["choices"]), (survey.name, name)
            assert question.get("default") in option["choices"], (survey.name, name)
        elif "default" in question and "default" in option:
            assert question["default"] == option["default"], (survey.name, name)
