import json

import pytest


@pytest.mark.parametrize(
    "text, value",
    [("1", 1), ("[1, 2]", [1, 2]), ('{"a": null}', {"a": None}), ('"x y"', "x y")],
)
def test_json_roundtrip(text, value):
    assert json.loads(text) == value
    assert json.loads(json.dumps(value)) == value


def test_invalid_json():
    with pytest.raises(json.JSONDecodeError):
        json.loads("{")
