def test_counts(inventory):
    assert sum(inventory.values()) == 15


def test_out_of_stock(inventory):
    assert [k for k, v in inventory.items() if v == 0] == ["pears"]


class TestRestock:
    def test_restock_adds(self, inventory):
        inventory["pears"] += 5
        assert inventory["pears"] == 5

    def test_fixture_is_fresh(self, inventory):
        assert inventory["pears"] == 0
