import time

import pytest


@pytest.mark.slow
def test_retry_with_backoff():
    time.sleep(0.5)


@pytest.mark.slow
def test_connection_pool_warmup():
    time.sleep(0.2)
