//! A small abstract interpreter for path-like values: where a path comes from (a shared root,
//! the temp dir, the source tree, pytest's private temp dirs, ...) and whether it is fixed, that
//! is, the same string in every process. Only fixed paths from shared origins become findings.

use rustpython_parser::ast::{self, Constant, Expr, Operator, Ranged};

use super::imports::Imports;
use super::scope::{Binding, ScopeId, Scopes};

/// Where a path value starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A literal under /tmp, /var/tmp, /dev/shm or a configured shared root.
    Shared,
    /// The system temp dir looked up at run time: `tempfile.gettempdir()`, `$TMPDIR`.
    TempDir,
    /// Next to the test file (`__file__`) or under pytest's rootdir.
    SourceTree,
    /// Relative to the working directory (a relative literal, `os.getcwd()`, `Path.cwd()`).
    Cwd,
    /// The user's home directory.
    Home,
    /// Some other absolute literal (`/etc/...`, `/dev/null`).
    OtherAbsolute,
    /// Private by construction: `tmp_path`, `tmpdir`, `mkdtemp()`, `TemporaryDirectory()`.
    Private,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathVal {
    pub origin: Origin,
    /// Every component is a constant: all processes compute the same path.
    pub fixed: bool,
    /// Nothing appended to the root yet (`"/tmp"`, `tempfile.gettempdir()`).
    pub bare: bool,
    /// A `pathlib` object (so `.replace()` / `.rename()` are file operations, not `str` methods).
    pub pathlib: bool,
    /// The path as shown in messages; dynamic parts appear as `{expr}`.
    pub text: String,
}

impl PathVal {
    pub fn unknown() -> Self {
        PathVal {
            origin: Origin::Unknown,
            fixed: false,
            bare: false,
            pathlib: false,
            text: String::new(),
        }
    }

    fn new(origin: Origin, text: impl Into<String>) -> Self {
        PathVal {
            origin,
            fixed: true,
            bare: true,
            pathlib: false,
            text: text.into(),
        }
    }

    fn private() -> Self {
        PathVal {
            fixed: false,
            ..PathVal::new(Origin::Private, "")
        }
    }

    fn is_known(&self) -> bool {
        self.origin != Origin::Unknown
    }

    /// Appends a component, as `os.path.join` and `/` do.
    fn join(mut self, part: PathVal) -> PathVal {
        if part.fixed && part.text.starts_with('/') {
            return PathVal {
                pathlib: self.pathlib || part.pathlib,
                ..part
            };
        }
        if !self.is_known() {
            return self;
        }
        let piece = part.text.trim_matches('/');
        if !piece.is_empty() || !part.fixed {
            if !self.text.ends_with('/') {
                self.text.push('/');
            }
            self.text
                .push_str(if part.fixed { piece } else { &part.text });
            self.bare = false;
        }
        self.fixed &= part.fixed;
        self
    }

    /// Appends text without a separator, as `+` and f-strings do.
    fn concat(mut self, part: PathVal) -> PathVal {
        if !self.is_known() {
            return self;
        }
        if !part.text.trim_matches('/').is_empty() || !part.fixed {
            self.bare = false;
        }
        self.text.push_str(&part.text);
        self.fixed &= part.fixed;
        self
    }

    fn dynamic(text: String) -> PathVal {
        PathVal {
            text,
            ..PathVal::unknown()
        }
    }
}

/// Environment variables that name the temp directory.
const TEMP_VARS: [&str; 3] = ["TMPDIR", "TEMP", "TMP"];
/// Fixture and parameter names pytest gives private temp paths through.
pub const PRIVATE_NAMES: [&str; 5] = [
    "tmp_path",
    "tmpdir",
    "tmp_path_factory",
    "tmpdir_factory",
    "testdir",
];
/// `x.attr` that are pytest's view of the checkout.
const ROOT_ATTRS: [&str; 4] = ["rootdir", "rootpath", "invocation_dir", "invocation_params"];

pub struct Evaluator<'s, 'a> {
    pub src: &'a str,
    pub imports: &'s Imports,
    pub scopes: &'s Scopes<'a>,
    pub shared_roots: &'s [String],
}

const MAX_DEPTH: u8 = 12;

impl<'a> Evaluator<'_, 'a> {
    pub fn text(&self, node: &impl Ranged) -> &'a str {
        let r = node.range();
        self.src
            .get(r.start().to_usize()..r.end().to_usize())
            .unwrap_or("")
    }

    /// The dotted name an expression refers to (`osp.join` -> `os.path.join`), or `None` for
    /// local variables and anything that is not a plain name or attribute chain.
    pub fn qualname(&self, expr: &Expr, scope: ScopeId) -> Option<String> {
        self.qualname_at(expr, scope, 0)
    }

    fn qualname_at(&self, expr: &Expr, scope: ScopeId, depth: u8) -> Option<String> {
        if depth > MAX_DEPTH {
            return None;
        }
        match expr {
            Expr::Name(n) => {
                let id = n.id.as_str();
                match self.scopes.lookup(scope, id) {
                    None | Some(Binding::Import) => {
                        let q = self.imports.resolve(id).unwrap_or(id);
                        Some(
                            q.strip_prefix("posixpath")
                                .map_or_else(|| q.to_owned(), |r| format!("os.path{r}")),
                        )
                    }
                    // `env = os.environ` makes `env` an alias worth following.
                    Some(Binding::Expr(e @ (Expr::Attribute(_) | Expr::Name(_)), s)) => {
                        self.qualname_at(e, s, depth + 1)
                    }
                    _ => None,
                }
            }
            Expr::Attribute(a) => {
                let base = self.qualname_at(&a.value, scope, depth + 1)?;
                Some(format!("{base}.{}", a.attr))
            }
            _ => None,
        }
    }

    /// A constant string, following names bound once to constants.
    pub fn string(&self, expr: &Expr, scope: ScopeId) -> Option<String> {
        let v = self.path(expr, scope);
        v.fixed.then_some(v.text)
    }

    /// A constant integer, following names bound once to constants.
    pub fn int(&self, expr: &Expr, scope: ScopeId) -> Option<i64> {
        self.int_at(expr, scope, 0)
    }

    fn int_at(&self, expr: &Expr, scope: ScopeId, depth: u8) -> Option<i64> {
        if depth > MAX_DEPTH {
            return None;
        }
        match expr {
            Expr::Constant(ast::ExprConstant {
                value: Constant::Int(i),
                ..
            }) => i.to_string().parse().ok(),
            Expr::Name(_) | Expr::Attribute(_) => {
                let (e, s) = self.bound(expr, scope)?;
                self.int_at(e, s, depth + 1)
            }
            _ => None,
        }
    }

    /// The expression a name or `self.attr` is bound to exactly once.
    pub fn bound(&self, expr: &Expr, scope: ScopeId) -> Option<(&'a Expr, ScopeId)> {
        match expr {
            Expr::Name(n) => match self.scopes.lookup(scope, n.id.as_str())? {
                Binding::Expr(e, s) => Some((e, s)),
                _ => None,
            },
            Expr::Attribute(a) => {
                let Expr::Name(n) = &*a.value else {
                    return None;
                };
                // Functions nested in a method still see that method's `self`.
                let (class, self_name) = self.method_context(scope)?;
                if n.id.as_str() != self_name {
                    return None;
                }
                match self.scopes.classes.get(class)?.attrs.get(a.attr.as_str())? {
                    Binding::Expr(e, s) => Some((e, *s)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn method_context(&self, mut scope: ScopeId) -> Option<(usize, &'a str)> {
        loop {
            let data = self.scopes.scopes.get(scope)?;
            if let (Some(c), Some(s)) = (data.class, data.self_name) {
                return Some((c, s));
            }
            scope = data.parent?;
        }
    }

    /// A `(host, port)` tuple, following a name bound once to one.
    pub fn tuple(&self, expr: &'a Expr, scope: ScopeId) -> Option<(&'a [Expr], ScopeId)> {
        match expr {
            Expr::Tuple(t) => Some((&t.elts, scope)),
            Expr::Name(_) | Expr::Attribute(_) => {
                let (e, s) = self.bound(expr, scope)?;
                match e {
                    Expr::Tuple(t) => Some((&t.elts, s)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    pub fn path(&self, expr: &Expr, scope: ScopeId) -> PathVal {
        self.path_at(expr, scope, 0)
    }

    fn literal(&self, s: &str) -> PathVal {
        if s.is_empty() || s == ":memory:" || s.contains('\n') {
            return PathVal::dynamic(s.to_owned());
        }
        let trimmed = s.trim_end_matches('/');
        for root in self.shared_roots {
            let root = root.trim_end_matches('/');
            if trimmed == root || s.starts_with(&format!("{root}/")) {
                return PathVal {
                    bare: trimmed == root,
                    ..PathVal::new(Origin::Shared, s)
                };
            }
        }
        let origin = if s.starts_with('/') {
            Origin::OtherAbsolute
        } else if s.starts_with('~') {
            Origin::Home
        } else {
            Origin::Cwd
        };
        PathVal {
            bare: false,
            ..PathVal::new(origin, s)
        }
    }

    fn path_at(&self, expr: &Expr, scope: ScopeId, depth: u8) -> PathVal {
        if depth > MAX_DEPTH {
            return PathVal::unknown();
        }
        let d = depth + 1;
        match expr {
            Expr::Constant(c) => match &c.value {
                Constant::Str(s) => self.literal(s),
                Constant::Bytes(b) => self.literal(&String::from_utf8_lossy(b)),
                Constant::Int(i) => PathVal {
                    origin: Origin::Unknown,
                    fixed: true,
                    text: i.to_string(),
                    ..PathVal::unknown()
                },
                _ => PathVal::unknown(),
            },
            Expr::JoinedStr(j) => self.fstring(&j.values, scope, d),
            Expr::FormattedValue(f) => self.path_at(&f.value, scope, d),
            Expr::BinOp(b) => match b.op {
                Operator::Add => self
                    .path_at(&b.left, scope, d)
                    .concat(self.path_at(&b.right, scope, d)),
                Operator::Div => {
                    let left = self.path_at(&b.left, scope, d);
                    let mut v = left.join(self.path_at(&b.right, scope, d));
                    v.pathlib = true;
                    v
                }
                Operator::Mod => self.format(&b.left, std::slice::from_ref(&*b.right), scope, d),
                _ => PathVal::unknown(),
            },
            Expr::Name(n) => {
                let id = n.id.as_str();
                match self.scopes.lookup(scope, id) {
                    Some(Binding::Expr(e, s)) => self.path_at(e, s, d),
                    Some(Binding::Param(p)) if PRIVATE_NAMES.contains(&p) => PathVal::private(),
                    None if id == "__file__" => PathVal {
                        bare: false,
                        ..PathVal::new(Origin::SourceTree, "__file__")
                    },
                    _ => PathVal::dynamic(format!("{{{id}}}")),
                }
            }
            Expr::Attribute(a) => self.attribute(expr, a, scope, d),
            Expr::Subscript(s) => {
                // os.environ["TMPDIR"]
                if self.qualname(&s.value, scope).as_deref() == Some("os.environ")
                    && let Some(key) = self.string(&s.slice, scope)
                {
                    return self.env_var(&key);
                }
                // Path(...).parents[0]
                if let Expr::Attribute(a) = &*s.value
                    && a.attr.as_str() == "parents"
                {
                    return self.path_at(&a.value, scope, d);
                }
                PathVal::dynamic(format!("{{{}}}", self.text(expr)))
            }
            Expr::Call(c) => self.call(expr, c, scope, d),
            Expr::IfExp(i) => {
                let (a, b) = (
                    self.path_at(&i.body, scope, d),
                    self.path_at(&i.orelse, scope, d),
                );
                if a.origin == b.origin && a.origin != Origin::Unknown {
                    PathVal {
                        fixed: a.fixed && b.fixed,
                        bare: a.bare && b.bare,
                        ..a
                    }
                } else {
                    PathVal::dynamic(format!("{{{}}}", self.text(expr)))
                }
            }
            Expr::BoolOp(b) => {
                // `os.environ.get("TMPDIR") or "/tmp"`: both sides are the temp dir.
                let vals: Vec<PathVal> =
                    b.values.iter().map(|v| self.path_at(v, scope, d)).collect();
                vals.into_iter()
                    .find(|v| v.origin == Origin::TempDir)
                    .unwrap_or_else(|| PathVal::dynamic(format!("{{{}}}", self.text(expr))))
            }
            _ => PathVal::dynamic(format!("{{{}}}", self.text(expr))),
        }
    }

    fn env_var(&self, key: &str) -> PathVal {
        if TEMP_VARS.contains(&key) {
            PathVal::new(Origin::TempDir, format!("${key}"))
        } else if key == "HOME" {
            PathVal::new(Origin::Home, "~")
        } else {
            PathVal::dynamic(format!("${key}"))
        }
    }

    fn fstring(&self, parts: &[Expr], scope: ScopeId, d: u8) -> PathVal {
        let mut acc: Option<PathVal> = None;
        for part in parts {
            let v = match part {
                Expr::Constant(ast::ExprConstant {
                    value: Constant::Str(s),
                    ..
                }) => PathVal {
                    origin: Origin::Unknown,
                    fixed: true,
                    bare: false,
                    pathlib: false,
                    text: s.clone(),
                },
                Expr::FormattedValue(f) if f.format_spec.is_none() => {
                    let v = self.path_at(&f.value, scope, d);
                    if v.fixed || v.is_known() {
                        v
                    } else {
                        PathVal::dynamic(format!("{{{}}}", self.text(&*f.value)))
                    }
                }
                other => PathVal::dynamic(format!("{{{}}}", self.text(other))),
            };
            acc = Some(match acc {
                None => v,
                Some(a) => {
                    // A literal prefix decides the origin once the string is known to start with it.
                    let a = if a.origin == Origin::Unknown && a.fixed {
                        self.literal_prefix(&a.text)
                    } else {
                        a
                    };
                    a.concat(v)
                }
            });
        }
        match acc {
            Some(a) if a.origin == Origin::Unknown && a.fixed => self.literal(&a.text),
            Some(a) => a,
            None => PathVal::unknown(),
        }
    }

    fn literal_prefix(&self, prefix: &str) -> PathVal {
        let v = self.literal(prefix);
        // A prefix like "/tmp/" with something after it is not bare.
        PathVal { bare: false, ..v }
    }

    /// `"/tmp/%s" % x` and `"/tmp/{}".format(x)`.
    fn format(&self, template: &Expr, args: &[Expr], scope: ScopeId, d: u8) -> PathVal {
        let Some(t) = self.string(template, scope) else {
            return PathVal::unknown();
        };
        let cut = t.find(['%', '{']).unwrap_or(t.len());
        let mut v = if cut == 0 {
            PathVal::dynamic(t.clone())
        } else {
            self.literal_prefix(&t[..cut])
        };
        if cut == t.len() {
            v.bare = self.literal(&t).bare;
        }
        v.text = t;
        let all_fixed = args.iter().all(|a| match a {
            Expr::Tuple(tuple) => tuple.elts.iter().all(|e| self.path_at(e, scope, d).fixed),
            other => self.path_at(other, scope, d).fixed,
        });
        v.fixed &= all_fixed;
        v
    }

    fn attribute(&self, expr: &Expr, a: &ast::ExprAttribute, scope: ScopeId, d: u8) -> PathVal {
        let attr = a.attr.as_str();
        if let Some((e, s)) = self.bound(expr, scope) {
            return self.path_at(e, s, d);
        }
        if self.qualname(expr, scope).as_deref() == Some("os.curdir") {
            return PathVal::new(Origin::Cwd, ".");
        }
        match attr {
            "parent" => {
                let mut v = self.path_at(&a.value, scope, d);
                v.text = parent_text(&v.text);
                v
            }
            _ if ROOT_ATTRS.contains(&attr) => {
                PathVal::new(Origin::SourceTree, format!("<{attr}>"))
            }
            "fspath" | "path" if is_request(&a.value) => PathVal {
                bare: false,
                ..PathVal::new(Origin::SourceTree, "<test file>")
            },
            "name" if self.path_at(&a.value, scope, d).origin == Origin::Private => {
                PathVal::private()
            }
            _ => PathVal::dynamic(format!("{{{}}}", self.text(expr))),
        }
    }

    fn call(&self, expr: &Expr, c: &ast::ExprCall, scope: ScopeId, d: u8) -> PathVal {
        let q = self.qualname(&c.func, scope);
        let arg0 = c.args.first();
        let join_all = |args: &[Expr]| -> PathVal {
            let mut it = args.iter();
            let first = it.next().map_or_else(
                || PathVal::new(Origin::Cwd, "."),
                |e| self.path_at(e, scope, d),
            );
            it.fold(first, |acc, e| {
                let part = if matches!(e, Expr::Starred(_)) {
                    PathVal::dynamic("{*}".into())
                } else {
                    self.path_at(e, scope, d)
                };
                acc.join(part)
            })
        };
        if let Some(q) = q.as_deref() {
            match q {
                "os.path.join" => return join_all(&c.args),
                "pathlib.Path"
                | "pathlib.PurePath"
                | "pathlib.PosixPath"
                | "pathlib.PurePosixPath"
                | "py.path.local" => {
                    let mut v = join_all(&c.args);
                    v.pathlib = true;
                    return v;
                }
                "os.path.dirname" => {
                    let mut v = arg0.map_or_else(PathVal::unknown, |e| self.path_at(e, scope, d));
                    v.text = parent_text(&v.text);
                    if v.origin == Origin::Shared {
                        v.bare = self.literal(&v.text).bare;
                    }
                    return v;
                }
                "os.path.abspath" | "os.path.realpath" | "os.path.normpath"
                | "os.path.expanduser" | "os.fspath" | "str" | "os.fsencode" | "os.fsdecode" => {
                    return arg0.map_or_else(PathVal::unknown, |e| self.path_at(e, scope, d));
                }
                "tempfile.gettempdir" | "tempfile.gettempdirb" => {
                    return PathVal::new(Origin::TempDir, "tempfile.gettempdir()");
                }
                "tempfile.mkdtemp"
                | "tempfile.mkstemp"
                | "tempfile.TemporaryDirectory"
                | "tempfile.NamedTemporaryFile"
                | "tempfile.TemporaryFile"
                | "tempfile.SpooledTemporaryFile"
                | "tempfile.mktemp" => {
                    return PathVal::private();
                }
                "os.getcwd" | "os.getcwdb" | "pathlib.Path.cwd" => {
                    return PathVal {
                        pathlib: q.starts_with("pathlib"),
                        ..PathVal::new(Origin::Cwd, ".")
                    };
                }
                "pathlib.Path.home" => {
                    return PathVal {
                        pathlib: true,
                        ..PathVal::new(Origin::Home, "~")
                    };
                }
                "os.environ.get" | "os.getenv" => {
                    return arg0
                        .and_then(|k| self.string(k, scope))
                        .map_or_else(PathVal::unknown, |k| self.env_var(&k));
                }
                _ => {}
            }
        }
        if let Expr::Attribute(m) = &*c.func {
            let method = m.attr.as_str();
            match method {
                "joinpath" | "join"
                    if method == "joinpath"
                        || self.path_at(&m.value, scope, d).origin == Origin::Private =>
                {
                    let mut v = self.path_at(&m.value, scope, d);
                    for e in &c.args {
                        v = v.join(self.path_at(e, scope, d));
                    }
                    v.pathlib = true;
                    return v;
                }
                "resolve" | "absolute" | "expanduser" | "strpath" | "__fspath__" => {
                    return self.path_at(&m.value, scope, d);
                }
                "with_suffix" | "with_name" | "with_stem" => {
                    let mut v = self.path_at(&m.value, scope, d);
                    v.fixed &= c.args.iter().all(|a| self.path_at(a, scope, d).fixed);
                    v.bare = false;
                    return v;
                }
                // tmp_path_factory.mktemp(...), tmpdir_factory.getbasetemp(), tempfile helpers on objects.
                "mktemp" | "getbasetemp" | "mkdtemp" => return PathVal::private(),
                "format"
                    if matches!(&*m.value, Expr::Constant(_))
                        || self.string(&m.value, scope).is_some() =>
                {
                    return self.format(&m.value, &c.args, scope, d);
                }
                "cwd" => {
                    return PathVal {
                        pathlib: true,
                        ..PathVal::new(Origin::Cwd, ".")
                    };
                }
                "home" => {
                    return PathVal {
                        pathlib: true,
                        ..PathVal::new(Origin::Home, "~")
                    };
                }
                _ => {}
            }
        }
        PathVal::dynamic(format!("{{{}}}", self.text(expr)))
    }
}

fn is_request(e: &Expr) -> bool {
    match e {
        Expr::Name(n) => n.id.as_str() == "request",
        Expr::Attribute(a) => a.attr.as_str() == "node",
        _ => false,
    }
}

fn parent_text(text: &str) -> String {
    match text.trim_end_matches('/').rfind('/') {
        Some(0) => "/".to_owned(),
        Some(i) => text[..i].to_owned(),
        None if text == "__file__" => "dirname(__file__)".to_owned(),
        None => text.to_owned(),
    }
}
