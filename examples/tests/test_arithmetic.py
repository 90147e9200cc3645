import pytest


@pytest.mark.parametrize("a, b, total", [(1, 2, 3), (0, 0, 0), (-1, 1, 0), (10, 5, 15)])
def test_add(a, b, total):
    assert a + b == total


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_square_is_positive(n):
    assert n * n > 0


def test_division_by_zero():
    with pytest.raises(ZeroDivisionError):
        1 / 0
