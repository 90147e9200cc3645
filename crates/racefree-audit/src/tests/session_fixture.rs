use super::{assert_clean, assert_flags};
use crate::RuleId::SessionFixture as R;

#[test]
fn flags_session_fixture_writing_relative_file() {
    assert_flags(
        R,
        r#"
        import pytest, json
        @pytest.fixture(scope="session")
        def config_file():
            with open("test-config.json", "w") as f:  # <-
                json.dump({}, f)
            return "test-config.json"
    "#,
    );
}

#[test]
fn flags_session_fixture_making_fixed_dir() {
    assert_flags(
        R,
        r#"
        import os
        from pytest import fixture
        @fixture(scope="session", autouse=True)
        def build_dir():
            os.makedirs("build/test-output", exist_ok=True)  # <-
            yield
    "#,
    );
}

#[test]
fn flags_package_fixture_writing_absolute_path_via_variable() {
    assert_flags(
        R,
        r#"
        import pytest
        from pathlib import Path
        @pytest.fixture(scope="package")
        def db():
            path = Path("/srv/testdata/db.sqlite")
            path.write_bytes(b"")  # <-
            return path
    "#,
    );
}

#[test]
fn session_fixture_using_tmp_path_factory_is_fine() {
    assert_clean(
        R,
        r#"
        import pytest, json
        @pytest.fixture(scope="session")
        def config_file(tmp_path_factory):
            path = tmp_path_factory.mktemp("cfg") / "test-config.json"
            with open(path, "w") as f:
                json.dump({}, f)
            shared = tmp_path_factory.getbasetemp().parent / "data.json"
            shared.write_text("{}")
            return path
    "#,
    );
}

#[test]
fn function_scoped_fixture_is_not_this_rule() {
    assert_clean(
        R,
        r#"
        import pytest
        @pytest.fixture
        def config_file():
            with open("test-config.json", "w") as f:
                f.write("{}")
        @pytest.fixture(scope="module")
        def other():
            open("other.json", "w").close()
    "#,
    );
}

#[test]
fn session_fixture_reading_fixed_path_is_fine() {
    assert_clean(
        R,
        r#"
        import pytest
        @pytest.fixture(scope="session")
        def config():
            with open("test-config.json") as f:
                data = f.read()
            with open("/dev/null", "w") as sink:
                pass
            return data
    "#,
    );
}
