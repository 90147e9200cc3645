import pytest


@pytest.mark.parametrize("word", ["racefree", "pytest", "level"])
def test_reverse_twice(word):
    assert word[::-1][::-1] == word


def test_palindrome():
    assert "level" == "level"[::-1]


def test_split_join():
    assert " ".join("a b c".split()) == "a b c"
