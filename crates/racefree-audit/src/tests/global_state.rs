use super::{assert_clean, assert_flags, findings_in};
use crate::RuleId::GlobalState as R;

#[test]
fn flags_environ_set_in_a_test() {
    assert_flags(
        R,
        r#"
        import os
        def test_env():
            os.environ["APP_MODE"] = "debug"  # <-
            assert run() == "debug"
    "#,
    );
}

#[test]
fn flags_chdir_and_sys_path_in_fixture_without_restore() {
    assert_flags(
        R,
        r#"
        import os, pytest
        @pytest.fixture
        def in_data_dir():
            os.chdir("data")  # <-
    "#,
    );
    assert_flags(
        R,
        r#"
        import sys
        def test_plugin():
            sys.path.insert(0, "plugins")  # <-
            import myplugin
    "#,
    );
}

#[test]
fn flags_module_attribute_assignment_and_environ_update() {
    assert_flags(
        R,
        r#"
        import mypkg.settings
        def test_debug():
            mypkg.settings.DEBUG = True  # <-
    "#,
    );
    assert_flags(
        R,
        r#"
        from os import environ
        def test_update():
            environ.update({"A": "1"})  # <-
    "#,
    );
}

#[test]
fn flags_import_time_change_in_a_test_module() {
    assert_flags(
        R,
        r#"
        import os
        os.environ["TZ"] = "UTC"  # <-
        def test_x():
            pass
    "#,
    );
}

#[test]
fn monkeypatch_is_fine() {
    assert_clean(
        R,
        r#"
        import os, sys
        def test_env(monkeypatch, tmp_path):
            monkeypatch.setenv("APP_MODE", "debug")
            monkeypatch.chdir(tmp_path)
            monkeypatch.syspath_prepend("plugins")
            monkeypatch.setattr(os, "sep", "/")
            env = os.environ.copy()
            env["APP_MODE"] = "x"
    "#,
    );
}

#[test]
fn restoring_fixture_and_try_finally_are_fine() {
    assert_clean(
        R,
        r#"
        import os, sys, pytest
        @pytest.fixture
        def in_data_dir():
            old = os.getcwd()
            os.chdir("data")
            yield
            os.chdir(old)

        def test_env():
            old = os.environ.get("APP_MODE")
            os.environ["APP_MODE"] = "debug"
            try:
                run()
            finally:
                if old is None:
                    del os.environ["APP_MODE"]
                else:
                    os.environ["APP_MODE"] = old

        def test_path():
            sys.path.insert(0, "plugins")
            try:
                import myplugin
            finally:
                sys.path.remove("plugins")
    "#,
    );
}

#[test]
fn cleanups_teardown_and_patch_dict_are_fine() {
    assert_clean(
        R,
        r#"
        import os, unittest
        from unittest import mock
        import mypkg

        class T(unittest.TestCase):
            def setUp(self):
                self.old = mypkg.LIMIT
                mypkg.LIMIT = 3
                os.environ["A"] = "1"
                self.addCleanup(os.environ.pop, "A")
            def tearDown(self):
                mypkg.LIMIT = self.old
            def test_x(self):
                cwd = os.getcwd()
                self.addCleanup(os.chdir, cwd)
                os.chdir("/")

        @mock.patch.dict(os.environ, {"B": "2"})
        def test_patched():
            os.environ["C"] = "3"

        def test_with_patch():
            with mock.patch.dict(os.environ, clear=True):
                os.environ["D"] = "4"

        def test_finalizer(request):
            old = mypkg.MODE
            def fin():
                mypkg.MODE = old
            request.addfinalizer(fin)
            mypkg.MODE = "fast"
    "#,
    );
}

#[test]
fn conftest_import_time_and_hooks_are_setup_not_leaks() {
    let src = r#"
        import os, sys
        sys.path.insert(0, os.path.dirname(__file__))
        os.environ["TZ"] = "UTC"
        def pytest_configure(config):
            os.environ["APP_ENV"] = "test"
    "#;
    assert!(findings_in("tests/conftest.py", src).is_empty());
    // The same import-time changes in a test module leak into other modules of the process.
    assert_eq!(findings_in("tests/test_a.py", src).len(), 2);
}

#[test]
fn local_objects_are_not_module_state() {
    assert_clean(
        R,
        r#"
        from mypkg import Config
        import mypkg
        def test_local(mypkg):
            cfg = Config()
            cfg.debug = True
            mypkg.x = 1
        class Obj:
            pass
        def test_obj():
            o = Obj()
            o.attr = 2
            Obj.attr = 3
    "#,
    );
}

#[test]
fn restoring_a_saved_value_is_not_a_change() {
    assert_clean(
        R,
        r#"
        import os, sys, locale
        def test_stdin():
            saved = sys.stdin
            try:
                run()
            finally:
                sys.stdin = saved
        def test_stdout():
            sys.stdout = sys.__stdout__
        def test_cwd_restore_only():
            old = os.getcwd()
            os.chdir(old)
        def test_locale():
            old = locale.setlocale(locale.LC_ALL)
            locale.setlocale(locale.LC_ALL, old)
    "#,
    );
    // Building a new value from the old one is still a change.
    assert_flags(
        R,
        r#"
        import os
        def test_path():
            os.environ["PATH"] = os.environ["PATH"] + ":/opt/bin"  # <-
    "#,
    );
}

#[test]
fn cleanups_of_modules_and_expected_failures_are_fine() {
    assert_clean(
        R,
        r#"
        import sys, array, subprocess, os, pytest
        def test_reimport():
            import foo
            del sys.modules["foo"]
            sys.modules.pop("bar", None)
        def test_immutable():
            with pytest.raises(TypeError):
                array.array.foo = 1
        def test_child():
            subprocess.run(["env"], preexec_fn=lambda: os.putenv("FRUIT", "apple"))
        def test_isolated():
            with isolated_modules():
                sys.modules["fake"] = object()
    "#,
    );
}

#[test]
fn variable_keys_match_any_restore() {
    assert_clean(
        R,
        r#"
        import os
        def test_keys():
            orig = {}
            try:
                for key in ("LC_ALL", "LANG"):
                    orig[key] = os.environ[key]
                    del os.environ[key]
            finally:
                for k in orig:
                    os.environ[k] = orig[k]
    "#,
    );
}

#[test]
fn class_wide_cleanups_and_finally_restores_are_fine() {
    assert_clean(
        R,
        r#"
        import logging, sys, shutil, unittest
        class T(unittest.TestCase):
            def setUp(self):
                old = logging.raiseExceptions
                self.addCleanup(setattr, logging, "raiseExceptions", old)
            def test_a(self):
                logging.raiseExceptions = False
        class U(unittest.TestCase):
            def setUp(self):
                self.enterContext(namespace_tree())
            def test_b(self):
                sys.path.append("portion2")
        def test_finally():
            try:
                run()
            finally:
                shutil._USE_CP_SENDFILE = True
        def test_saved_copy():
            orig = sys.path[:]
            run()
            sys.path[:] = orig[:]
    "#,
    );
}

#[test]
fn module_level_save_and_restore_is_fine() {
    assert_clean(
        R,
        r#"
        import sys
        import decimal as orig_decimal
        sys.modules["decimal"] = fake
        other = reload_fractions()
        sys.modules["decimal"] = orig_decimal
    "#,
    );
}

#[test]
fn setter_queries_saved_results_and_defaults_are_fine() {
    assert_clean(
        R,
        r#"
        import locale, signal, socket, logging
        def register(handler):
            old = signal.signal(signal.SIGUSR1, handler)
            return old
        def test_query():
            loc = locale.setlocale(locale.LC_CTYPE, None)
            socket.setdefaulttimeout(None)
            logging.disable(logging.NOTSET)
        @run_with_tz("UTC")
        def test_tz():
            os.environ["TZ"] = "EST"
    "#,
    );
    assert_flags(
        R,
        r#"
        import signal
        def test_handler(handler):
            signal.signal(signal.SIGALRM, handler)  # <-
    "#,
    );
}

#[test]
fn teardown_in_a_base_class_of_the_same_file_restores() {
    assert_clean(
        R,
        r#"
        import os, unittest
        class Base(unittest.TestCase):
            def tearDown(self):
                os.environ.pop("MODE", None)
        class T(Base):
            def test_a(self):
                os.environ["MODE"] = "x"
    "#,
    );
    // An unrelated class's teardown does not run for this test.
    assert_flags(
        R,
        r#"
        import os, unittest
        class Other(unittest.TestCase):
            def tearDown(self):
                os.environ.pop("MODE", None)
        class T(unittest.TestCase):
            def test_a(self):
                os.environ["MODE"] = "x"  # <-
    "#,
    );
}

#[test]
fn conftest_helpers_and_named_environment_markers_are_setup() {
    let src = r#"
        import builtins
        def inject():
            builtins.ip = object()
        inject()
    "#;
    assert!(super::findings_in("tests/conftest.py", src).is_empty());
    assert_eq!(super::findings_in("tests/test_x.py", src).len(), 1);
    assert_clean(
        R,
        r#"
        import os, pytest
        with_environment = pytest.mark.usefixtures("environment")
        @with_environment
        def test_home():
            os.environ["HOME"] = "/nowhere"
    "#,
    );
}

#[test]
fn helpers_restored_by_their_callers_are_fine() {
    assert_clean(
        R,
        r#"
        import sys, locale, unittest
        class T(unittest.TestCase):
            def _make_pkg(self, d):
                sys.path.insert(0, d)
            def test_pkg(self):
                self._make_pkg("x")
                del sys.path[0]
            def check_utf8(self):
                locale.setlocale(locale.LC_CTYPE, "en_US.utf8")
            def test_locale(self):
                old = locale.setlocale(locale.LC_CTYPE)
                self.addCleanup(locale.setlocale, locale.LC_CTYPE, old)
                self.check_utf8()
    "#,
    );
    // A helper nobody restores after is still reported.
    assert_flags(
        R,
        r#"
        import sys
        def add_plugins():
            sys.path.insert(0, "plugins")  # <-
        def test_plugins():
            add_plugins()
    "#,
    );
}

#[test]
fn restoring_decorators_by_name() {
    assert_clean(
        R,
        r#"
        import mpmath
        @conserve_mpmath_dps
        def test_precision():
            mpmath.mp.dps = 50
    "#,
    );
    assert_flags(
        R,
        r#"
        import mpmath
        def test_precision():
            mpmath.mp.dps = 50  # <-
    "#,
    );
}
