"""Part of racefree's fork server (racefree_forkserver): pytest's fixture scan of the
plugins, worked out once per server instead of once per unit.

Every pytest session builds a FixtureManager, which looks at every attribute of every
registered plugin (some 40 plugins, 2,000 attributes) for fixtures: about 30 ms per unit,
the largest part of what a forked unit costs. Those plugins are the same objects in every
unit (modules, and instances of the same classes), so the server works out once which of
their attribute names the scan can act on at all (a fixture, or something wrapping one that
pytest warns about) and has the scan, in every child, look at those names only.

How: the scan is ``for name in dir(holder)`` in ``_pytest.fixtures``; ``install`` gives that
module a ``dir`` of its own which, for a holder it knows, returns the known names (a sorted
subset of what ``dir`` returns, so fixtures register in the same order) and otherwise is the
built-in ``dir``. What is left out is only what can never be a fixture nor wrap one: None,
numbers, strings, containers, classes, modules, built-in functions and slot descriptors,
properties, and plain functions without ``__wrapped__`` or a fixture marker (bare, bound,
or as a class's static or class method). A holder it does not know (a conftest module, a
test module or class, a plugin instance of another class) is scanned as pytest scans it.
"""

import builtins
import types

# Values the fixture scan passes over whatever pytest version it is.
_PLAIN = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    tuple,
    list,
    dict,
    set,
    frozenset,
    type,
    types.ModuleType,
    types.BuiltinFunctionType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.MethodWrapperType,
    types.MappingProxyType,
    property,
)
# Attributes that make a plain function a fixture (or a wrapper of one) in some pytest.
_FIXTURE_MARKS = ("__wrapped__", "_pytestfixturefunction", "_fixture_function_marker")

# id(module) -> (module, names): the module itself is kept so that its id stays its own.
_modules = {}
# class -> names, for plugins that are instances.
_classes = {}


def _plain(value):
    try:
        if isinstance(value, _PLAIN):
            return True
        if type(value) in (classmethod, staticmethod, types.MethodType):
            return _plain(value.__func__)
        if type(value) is types.FunctionType:
            return not any(hasattr(value, mark) for mark in _FIXTURE_MARKS)
    except Exception:  # noqa: BLE001 - an object that fights back is looked at by pytest
        pass
    return False


def _module_names(module):
    names = []
    for name in builtins.dir(module):
        raw = module.__dict__.get(name)
        try:
            value = getattr(module, name, None)
        except Exception:  # noqa: BLE001
            value = raw = object()  # not plain: left to pytest
        if not (_plain(raw) and _plain(value)):
            names.append(name)
    return names


def _class_names(cls):
    names = []
    for name in builtins.dir(cls):
        raw = None
        for base in cls.__mro__:
            if name in base.__dict__:
                raw = base.__dict__[name]
                break
        try:
            value = getattr(cls, name, None)
        except Exception:  # noqa: BLE001
            value = raw = object()
        if not (_plain(raw) and _plain(value)):
            names.append(name)
    return names


def learn(plugins):
    """Works out the names to scan for each plugin in `plugins`: modules by identity,
    instances by class. Call it in the server, before forking."""
    for plugin in plugins:
        try:
            if isinstance(plugin, types.ModuleType):
                if id(plugin) not in _modules:
                    _modules[id(plugin)] = (plugin, _module_names(plugin))
            elif not isinstance(plugin, type):
                cls = type(plugin)
                # An instance's own __dir__ could list other names than its class's.
                if cls not in _classes and cls.__dir__ is object.__dir__:
                    _classes[cls] = _class_names(cls)
        except Exception:  # noqa: BLE001 - leave that plugin to pytest's own scan
            pass


def _scan_names(*args):
    if len(args) == 1:
        holder = args[0]
        known = _modules.get(id(holder))
        if known is not None and known[0] is holder:
            return list(known[1])
        names = _classes.get(type(holder))
        if names is not None:
            # Older pytest scans an instance's own attributes too.
            own = [n for n, v in getattr(holder, "__dict__", {}).items() if not _plain(v)]
            return sorted(set(names).union(own)) if own else list(names)
    return builtins.dir(*args)


def install():
    """Makes ``_pytest.fixtures`` scan the learned names only. A pytest whose fixture
    scan does not call ``dir`` is simply not helped."""
    try:
        from _pytest import fixtures
    except ImportError:
        return
    if "dir" not in vars(fixtures):
        fixtures.dir = _scan_names
