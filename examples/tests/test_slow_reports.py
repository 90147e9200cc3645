import time

import pytest


@pytest.mark.slow
def test_monthly_report():
    time.sleep(1.0)


@pytest.mark.slow
def test_weekly_report():
    time.sleep(0.6)


@pytest.mark.slow
@pytest.mark.parametrize("region", ["north", "south"])
def test_regional_report(region):
    time.sleep(0.3)
    assert region
