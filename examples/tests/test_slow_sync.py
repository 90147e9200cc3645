import time

import pytest


@pytest.mark.slow
def test_full_sync():
    time.sleep(0.8)


@pytest.mark.slow
def test_incremental_sync():
    time.sleep(0.4)


def test_sync_plan_is_empty_by_default():
    assert [] == list()
