//! The facts the walker extracts from one file. Rules classify facts into findings; keeping the
//! two apart lets every rule share one traversal and one data-flow model.

use std::collections::HashSet;

use super::value::PathVal;

/// A byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// How a path reaches the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// The path is created, written, truncated, deleted, renamed or has its mode changed.
    Write,
    /// The path becomes a working directory (`cwd=`, `os.chdir`, `monkeypatch.chdir`).
    WorkDir,
    /// The path is handed to a callee as an output/root/cache directory keyword argument.
    RootArg,
}

#[derive(Debug, Clone)]
pub struct WriteFact {
    pub span: Span,
    pub kind: WriteKind,
    pub path: PathVal,
    /// What does the writing, for the message: `open(..., "w")`, `os.makedirs`, `cwd=`.
    pub sink: String,
    pub func: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct PortFact {
    pub span: Span,
    pub port: i64,
    pub sink: String,
}

/// Process-global state a statement changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One environment variable, by key text; `None` for the whole environment.
    Environ(Option<String>),
    Cwd,
    SysPath,
    /// One `sys.modules` entry by key text; `None` for the whole mapping.
    SysModules(Option<String>),
    /// An attribute of an imported module or object, as dotted text (`mod.attr`).
    Attr(String),
    /// A process-wide setter such as `os.umask` or `socket.setdefaulttimeout`, by name.
    Setter(String),
}

impl Target {
    /// Whether a change to `other` can be the restore of a change to `self`.
    pub fn restored_by(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Environ(a), Target::Environ(b))
            | (Target::SysModules(a), Target::SysModules(b)) => match (a, b) {
                (Some(a), Some(b)) => a == b || !is_literal_key(a) || !is_literal_key(b),
                _ => true,
            },
            (a, b) => a == b,
        }
    }

    /// The state kind, for messages and for `with` blocks that restore a whole kind.
    pub fn kind(&self) -> StateKind {
        match self {
            Target::Environ(_) => StateKind::Environ,
            Target::Cwd => StateKind::Cwd,
            Target::SysPath => StateKind::SysPath,
            Target::SysModules(_) => StateKind::SysModules,
            Target::Attr(_) => StateKind::Attr,
            Target::Setter(_) => StateKind::Setter,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Environ(Some(k)) => format!("os.environ[{k}]"),
            Target::Environ(None) => "os.environ".to_owned(),
            Target::Cwd => "the working directory".to_owned(),
            Target::SysPath => "sys.path".to_owned(),
            Target::SysModules(Some(k)) => format!("sys.modules[{k}]"),
            Target::SysModules(None) => "sys.modules".to_owned(),
            Target::Attr(a) => a.clone(),
            Target::Setter(s) => format!("the process-wide setting changed by {s}()"),
        }
    }
}

/// Keys are stored as `"NAME"` for literals and as source text for expressions: a variable key
/// may hold any name, so it matches any other key.
fn is_literal_key(key: &str) -> bool {
    key.starts_with('"')
}

impl Target {
    /// Text that a saved value of this state contains: `old = os.getcwd()` for the working
    /// directory, `saved = sys.path[:]`, `orig = mod.attr`, `old = locale.setlocale(cat)`.
    pub fn saved_marker(&self) -> String {
        match self {
            Target::Environ(_) => "environ".into(),
            Target::Cwd => "cwd".into(),
            Target::SysPath => "sys.path".into(),
            Target::SysModules(_) => "sys.modules".into(),
            Target::Attr(a) => a.clone(),
            Target::Setter(q) => {
                let name = q
                    .split('(')
                    .next()
                    .unwrap_or(q)
                    .rsplit('.')
                    .next()
                    .unwrap_or(q);
                name.strip_prefix("set").unwrap_or(name).to_owned()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    Environ,
    Cwd,
    SysPath,
    SysModules,
    Attr,
    Setter,
}

#[derive(Debug, Clone)]
pub struct MutationFact {
    pub span: Span,
    pub target: Target,
    /// The outermost function containing the change; `None` at module level.
    pub func: Option<usize>,
    /// Inside a nested def or lambda (typically a finalizer), so position says nothing of order.
    pub nested: bool,
    /// Made up from a cleanup registration such as `addCleanup(os.chdir, old)`: a restore only.
    pub synthetic: bool,
    /// Inside a `with` block that restores this kind of state on exit (`mock.patch.dict(os.environ)`).
    pub guarded: bool,
    /// Spelling, for the message: `os.environ[...] =`, `sys.path.insert`.
    pub how: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixtureScope {
    Function,
    Class,
    Module,
    Package,
    Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncKind {
    Test,
    Fixture {
        scope: FixtureScope,
        autouse: bool,
    },
    /// A pytest hook (`pytest_configure`, ...): runs once per process, like module-level code.
    Hook,
    Other,
}

/// One top-level function or method (nested defs belong to their outermost function).
#[derive(Debug, Clone)]
pub struct FuncInfo {
    pub name: String,
    pub kind: FuncKind,
    /// Index of the enclosing class among the file's classes, for teardown pairing.
    pub class: Option<usize>,
    /// A teardown/cleanup/restore/`__exit__`-like function: its changes are restores.
    pub restorer: bool,
    /// Registers a cleanup racefree cannot see into (`self.addCleanup(self.restore)`).
    pub opaque_cleanup: bool,
    /// Names mocked by `mock.patch("builtins.open")` and friends: sinks with these names are fake.
    pub mocked: HashSet<String>,
}

/// Everything extracted from one file.
#[derive(Debug, Default)]
pub struct Facts {
    pub funcs: Vec<FuncInfo>,
    pub writes: Vec<WriteFact>,
    pub ports: Vec<PortFact>,
    pub mutations: Vec<MutationFact>,
    /// The file is a conftest.py (module-level changes there are deliberate per-directory setup).
    pub is_conftest: bool,
    /// The file uses pyfakefs: its paths may live in a fake file system.
    pub fake_fs: bool,
    /// Per class index: the class and its same-file ancestors (their teardowns run for it too).
    pub lineages: Vec<Vec<usize>>,
}

impl Facts {
    pub fn func(&self, id: Option<usize>) -> Option<&FuncInfo> {
        id.and_then(|i| self.funcs.get(i))
    }

    /// Whether setup/teardown code of class `other` runs around the tests of class `class`:
    /// the same class, one of its same-file ancestors, or both at module level.
    pub fn shares_fixtures(&self, class: Option<usize>, other: Option<usize>) -> bool {
        match (class, other) {
            (Some(c), Some(o)) => self.lineages.get(c).is_some_and(|l| l.contains(&o)),
            (None, None) => true,
            _ => false,
        }
    }
}
