//! Catalogues of calls that write paths, bind ports or change process-global state.
//! Each function looks at one call and says what it does; the walker supplies the context.

use rustpython_parser::ast::{self, Constant, Expr};

use super::facts::{Target, WriteKind};
use super::scope::ScopeId;
use super::value::{Evaluator, Origin, PathVal};

/// A path a call writes to (or works in), with a short description of the call.
pub struct Sink {
    pub kind: WriteKind,
    pub path: PathVal,
    pub what: String,
    /// The name `mock.patch` would use for this operation (`open`, `makedirs`), to skip mocked calls.
    pub name: String,
}

/// Keyword arguments that hand a directory or output file to the code under test.
const ROOT_KWARGS: &[&str] = &[
    "root",
    "root_dir",
    "rootdir",
    "base_dir",
    "basedir",
    "output_dir",
    "out_dir",
    "outdir",
    "output_directory",
    "dest",
    "dest_dir",
    "destdir",
    "destination",
    "target_dir",
    "cache_dir",
    "cachedir",
    "workdir",
    "work_dir",
    "working_dir",
    "working_directory",
    "tmpdir",
    "tmp_dir",
    "temp_dir",
    "tempdir",
    "log_dir",
    "logdir",
    "data_dir",
    "datadir",
    "build_dir",
    "install_dir",
    "home",
    "home_dir",
    "output_file",
    "outfile",
    "out_file",
    "log_file",
    "logfile",
    "pidfile",
    "pid_file",
    "db_path",
    "database_path",
    "socket_path",
];

/// `os.<name>(path, ...)` that change the file system at their first argument.
const OS_ARG0: &[&str] = &[
    "mkdir",
    "makedirs",
    "remove",
    "unlink",
    "rmdir",
    "removedirs",
    "chmod",
    "lchmod",
    "chown",
    "lchown",
    "mkfifo",
    "mknod",
    "truncate",
    "utime",
    "chflags",
    "lchflags",
];
/// Path methods that only exist on path objects and change the file system.
const PATH_METHODS: &[&str] = &[
    "write_text",
    "write_bytes",
    "touch",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink_to",
    "hardlink_to",
    "ensure",
    "ensure_dir",
];
/// Methods of common data libraries that save to their first argument.
const SAVE_METHODS: &[&str] = &[
    "save",
    "savefig",
    "savez",
    "to_csv",
    "to_json",
    "to_excel",
    "to_parquet",
    "to_pickle",
    "to_hdf",
    "to_feather",
];

fn kwarg<'e>(call: &'e ast::ExprCall, name: &str) -> Option<&'e Expr> {
    call.keywords
        .iter()
        .find(|k| k.arg.as_ref().is_some_and(|a| a.as_str() == name))
        .map(|k| &k.value)
}

/// Positional argument `i`, or the keyword `name`.
fn arg<'e>(call: &'e ast::ExprCall, i: usize, name: &str) -> Option<&'e Expr> {
    call.args
        .get(i)
        .filter(|e| !matches!(e, Expr::Starred(_)))
        .or_else(|| kwarg(call, name))
}

fn is_write_mode(mode: &str) -> bool {
    mode.contains(['w', 'a', 'x', '+'])
}

pub fn last_segment(q: &str) -> &str {
    q.rsplit('.').next().unwrap_or(q)
}

impl<'a> Evaluator<'_, 'a> {
    /// The mode of an `open`-like call: `Some(true)` writes, `Some(false)` reads, `None` unknown.
    fn writes_mode(&self, mode: Option<&Expr>, default_read: bool, scope: ScopeId) -> Option<bool> {
        match mode {
            None => Some(!default_read),
            Some(m) => self.string(m, scope).map(|m| is_write_mode(&m)),
        }
    }

    pub fn write_sinks(&self, call: &'a ast::ExprCall, scope: ScopeId) -> Vec<Sink> {
        let mut out = Vec::new();
        let q = self.qualname(&call.func, scope).unwrap_or_default();
        let method = match &*call.func {
            Expr::Attribute(a) => Some((a.attr.as_str(), &*a.value)),
            _ => None,
        };
        let mk = |kind: WriteKind, e: Option<&Expr>, what: &str, name: &str| {
            e.map(|e| Sink {
                kind,
                path: self.path(e, scope),
                what: what.to_owned(),
                name: name.to_owned(),
            })
        };
        macro_rules! push {
            ($($a:expr),*) => { out.extend(mk($($a),*)) };
        }
        let name = last_segment(&q);
        match q.as_str() {
            "open" | "io.open" | "builtins.open" | "codecs.open" | "gzip.open" | "bz2.open"
            | "lzma.open" | "gzip.GzipFile"
                if self.writes_mode(arg(call, 1, "mode"), true, scope) == Some(true) =>
            {
                push!(
                    WriteKind::Write,
                    arg(call, 0, "file").or_else(|| kwarg(call, "filename")),
                    "open(..., write mode)",
                    "open"
                );
            }
            "tarfile.open" | "zipfile.ZipFile" | "tarfile.TarFile"
                if self.writes_mode(arg(call, 1, "mode"), true, scope) == Some(true) =>
            {
                push!(
                    WriteKind::Write,
                    arg(call, 0, "name").or_else(|| kwarg(call, "file")),
                    &format!("{q}(..., write mode)"),
                    name
                );
            }
            "os.open" => {
                let flags = arg(call, 1, "flags").map(|f| self.text(f)).unwrap_or("");
                if ["O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"]
                    .iter()
                    .any(|f| flags.contains(f))
                {
                    push!(
                        WriteKind::Write,
                        arg(call, 0, "path"),
                        "os.open(..., write flags)",
                        "open"
                    );
                }
            }
            "os.symlink" | "os.link" => push!(WriteKind::Write, arg(call, 1, "dst"), &q, name),
            "os.rename" | "os.replace" | "os.renames" => {
                push!(WriteKind::Write, arg(call, 0, "src"), &q, name);
                push!(WriteKind::Write, arg(call, 1, "dst"), &q, name);
            }
            "shutil.rmtree" => push!(WriteKind::Write, arg(call, 0, "path"), &q, name),
            "shutil.copy" | "shutil.copy2" | "shutil.copyfile" | "shutil.copytree"
            | "shutil.copymode" | "shutil.copystat" => {
                push!(WriteKind::Write, arg(call, 1, "dst"), &q, name)
            }
            "shutil.move" => {
                push!(WriteKind::Write, arg(call, 0, "src"), &q, name);
                push!(WriteKind::Write, arg(call, 1, "dst"), &q, name);
            }
            "shutil.make_archive" => push!(WriteKind::Write, arg(call, 0, "base_name"), &q, name),
            "shutil.unpack_archive" => {
                push!(WriteKind::Write, arg(call, 1, "extract_dir"), &q, name)
            }
            "sqlite3.connect" | "shelve.open" => {
                push!(WriteKind::Write, arg(call, 0, "database"), &q, name)
            }
            "dbm.open" if self.writes_mode(arg(call, 1, "flag"), true, scope) == Some(true) => {
                push!(WriteKind::Write, arg(call, 0, "file"), &q, name)
            }
            "logging.FileHandler"
            | "logging.handlers.RotatingFileHandler"
            | "logging.handlers.TimedRotatingFileHandler"
            | "logging.handlers.WatchedFileHandler" => {
                push!(WriteKind::Write, arg(call, 0, "filename"), &q, name)
            }
            "logging.basicConfig" => push!(WriteKind::Write, kwarg(call, "filename"), &q, name),
            "urllib.request.urlretrieve" => {
                push!(WriteKind::Write, arg(call, 1, "filename"), &q, name)
            }
            "os.chdir" => push!(
                WriteKind::WorkDir,
                arg(call, 0, "path"),
                "os.chdir",
                "chdir"
            ),
            _ if q.starts_with("os.") && q.matches('.').count() == 1 && OS_ARG0.contains(&name) => {
                push!(
                    WriteKind::Write,
                    arg(call, 0, "path").or_else(|| kwarg(call, "name")),
                    &q,
                    name
                )
            }
            _ => {}
        }
        if let Some((m, receiver)) = method
            && !q.starts_with("os.")
            && !q.starts_with("shutil.")
        {
            let recv = || self.path(receiver, scope);
            match m {
                _ if PATH_METHODS.contains(&m) => {
                    let r = recv();
                    if r.pathlib
                        || matches!(
                            r.origin,
                            Origin::Shared | Origin::TempDir | Origin::SourceTree
                        )
                    {
                        out.push(Sink {
                            kind: WriteKind::Write,
                            what: format!(".{m}()"),
                            name: m.to_owned(),
                            path: r,
                        });
                    }
                }
                "open" | "rename" | "replace" | "chmod" | "write" => {
                    let r = recv();
                    let writes = match m {
                        "open" => self.writes_mode(arg(call, 0, "mode"), true, scope) == Some(true),
                        _ => true,
                    };
                    if r.pathlib && writes {
                        if matches!(m, "rename" | "replace") {
                            push!(
                                WriteKind::Write,
                                arg(call, 0, "target"),
                                &format!(".{m}()"),
                                m
                            );
                        }
                        let what = if m == "open" {
                            ".open(write mode)".to_owned()
                        } else {
                            format!(".{m}()")
                        };
                        out.push(Sink {
                            kind: WriteKind::Write,
                            what,
                            name: m.to_owned(),
                            path: r,
                        });
                    }
                }
                "chdir" | "as_cwd" => {
                    // monkeypatch.chdir(path), contextlib.chdir(path) via a module alias, path.as_cwd()
                    let target = if m == "as_cwd" {
                        recv()
                    } else {
                        arg(call, 0, "path").map_or_else(PathVal::unknown, |e| self.path(e, scope))
                    };
                    out.push(Sink {
                        kind: WriteKind::WorkDir,
                        what: format!(".{m}()"),
                        name: "chdir".into(),
                        path: target,
                    });
                }
                "bind" if call.args.len() == 1 => {
                    // A string address is an AF_UNIX socket path, created on bind.
                    let p = self.path(&call.args[0], scope);
                    if matches!(
                        p.origin,
                        Origin::Shared | Origin::TempDir | Origin::SourceTree
                    ) {
                        out.push(Sink {
                            kind: WriteKind::Write,
                            what: ".bind() of a Unix socket".into(),
                            name: "bind".into(),
                            path: p,
                        });
                    }
                }
                _ if SAVE_METHODS.contains(&m) => {
                    if let Some(e) = arg(call, 0, "path") {
                        let p = self.path(e, scope);
                        if matches!(
                            p.origin,
                            Origin::Shared | Origin::TempDir | Origin::SourceTree
                        ) {
                            out.push(Sink {
                                kind: WriteKind::Write,
                                what: format!(".{m}()"),
                                name: m.to_owned(),
                                path: p,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if q == "contextlib.chdir" {
            push!(
                WriteKind::WorkDir,
                arg(call, 0, "path"),
                "contextlib.chdir",
                "chdir"
            );
        }
        if let Some(cwd) = kwarg(call, "cwd") {
            out.push(Sink {
                kind: WriteKind::WorkDir,
                path: self.path(cwd, scope),
                what: "cwd=".into(),
                name: "cwd".into(),
            });
        }
        if !q.starts_with("tempfile.") {
            for k in &call.keywords {
                if let Some(a) = &k.arg
                    && ROOT_KWARGS.contains(&a.as_str())
                {
                    let p = self.path(&k.value, scope);
                    if matches!(p.origin, Origin::Shared | Origin::TempDir) {
                        out.push(Sink {
                            kind: WriteKind::RootArg,
                            path: p,
                            what: format!("{a}="),
                            name: a.to_string(),
                        });
                    }
                }
            }
        }
        out
    }

    /// A fixed, non-zero port this call binds or serves on.
    pub fn bound_port(&self, call: &'a ast::ExprCall, scope: ScopeId) -> Option<(i64, String)> {
        let q = self.qualname(&call.func, scope);
        let name = match (&q, &*call.func) {
            (Some(q), _) => last_segment(q).to_owned(),
            (None, Expr::Attribute(a)) => a.attr.to_string(),
            _ => return None,
        };
        let from_addr = |e: Option<&'a Expr>| -> Option<i64> {
            let (elts, s) = self.tuple(e?, scope)?;
            // (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6. Other shapes are
            // other families (AF_CAN, AF_TIPC), and a host that is a number or a socket constant
            // is AF_VSOCK or similar, where "port" means something else.
            if !matches!(elts.len(), 2 | 4) {
                return None;
            }
            let host = &elts[0];
            if matches!(
                host,
                Expr::Constant(ast::ExprConstant {
                    value: Constant::Int(_),
                    ..
                })
            ) || self
                .qualname(host, s)
                .is_some_and(|q| q.starts_with("socket."))
            {
                return None;
            }
            self.int(elts.get(1)?, s)
        };
        let from_int = |e: Option<&Expr>| e.and_then(|e| self.int(e, scope));
        let port = match name.as_str() {
            "bind" => from_addr(call.args.first()),
            "create_server" if q.as_deref() == Some("socket.create_server") => {
                from_addr(arg(call, 0, "address"))
            }
            "make_server" | "run_simple" => from_int(arg(call, 1, "port")),
            "start_server" | "create_server" | "TCPSite" => from_int(arg(call, 2, "port")),
            "create_datagram_endpoint" => from_addr(kwarg(call, "local_addr")),
            "run" | "run_app" | "serve" | "listen" => from_int(kwarg(call, "port")),
            n if n.ends_with("Server") => from_addr(
                call.args
                    .first()
                    .or_else(|| kwarg(call, "server_address"))
                    .or_else(|| kwarg(call, "address")),
            ),
            _ => None,
        }?;
        // Ports below 1024 need privileges no test run has: a test naming one is testing an
        // error path or talking to a mock, not binding it.
        (port >= 1024).then_some((port, name))
    }

    /// The global state a call changes, if it is one of the known mutators. `args` are the call's
    /// positional arguments (for a cleanup registration: the arguments after the function).
    pub fn call_mutation(
        &self,
        q: &str,
        args: &[Expr],
        scope: ScopeId,
    ) -> Option<(Target, String)> {
        let key = |i: usize| args.get(i).map(|e| self.key_text(e, scope));
        let (head, tail) = q.rsplit_once('.').unwrap_or(("", q));
        let target = match (head, tail) {
            ("os.environ", "update" | "clear" | "popitem" | "__enter__" | "__exit__") => {
                Target::Environ(None)
            }
            ("os.environ", "setdefault" | "pop" | "__setitem__" | "__delitem__") => {
                Target::Environ(key(0))
            }
            ("os", "putenv" | "unsetenv") => Target::Environ(key(0)),
            ("os", "chdir" | "fchdir") => Target::Cwd,
            (
                "sys.path",
                "insert" | "append" | "extend" | "remove" | "pop" | "clear" | "__setitem__"
                | "__delitem__",
            ) => Target::SysPath,
            ("sys.modules", "update" | "clear" | "popitem") => Target::SysModules(None),
            ("sys.modules", "pop" | "setdefault" | "__setitem__" | "__delitem__") => {
                Target::SysModules(key(0))
            }
            ("", "setattr" | "delattr") => {
                let obj = args.first()?;
                let attr = self.string(args.get(1)?, scope)?;
                if !self.is_imported(obj, scope) {
                    return None;
                }
                Target::Attr(format!("{}.{attr}", self.text(obj)))
            }
            // setlocale(category) and setlocale(category, None) only ask.
            ("locale", "setlocale")
                if args.len() < 2
                    || matches!(
                        &args[1],
                        Expr::Constant(ast::ExprConstant {
                            value: Constant::None,
                            ..
                        })
                    ) =>
            {
                return None;
            }
            ("os", "umask")
            | ("socket", "setdefaulttimeout")
            | ("locale", "setlocale")
            | ("sys", "setrecursionlimit")
            | ("logging", "disable") => Target::Setter(q.to_owned()),
            ("signal", "signal") => {
                Target::Setter(format!("signal.signal({})", key(0).unwrap_or_default()))
            }
            ("gc", "disable" | "enable") => Target::Setter("gc.disable".to_owned()),
            _ => return None,
        };
        Some((target, q.to_owned()))
    }

    /// Calls that put a process-wide setting back to Python's default, which is a restore:
    /// `socket.setdefaulttimeout(None)`, `logging.disable()` / `logging.disable(logging.NOTSET)`,
    /// `gc.enable()`.
    pub fn resets_to_default(&self, q: &str, args: &[Expr]) -> bool {
        let none = |e: Option<&Expr>| {
            matches!(
                e,
                Some(Expr::Constant(ast::ExprConstant {
                    value: Constant::None,
                    ..
                }))
            )
        };
        match q {
            "socket.setdefaulttimeout" => none(args.first()),
            "logging.disable" => args.first().is_none_or(|a| {
                self.text(a).ends_with("NOTSET")
                    || matches!(a, Expr::Constant(ast::ExprConstant { value: Constant::Int(i), .. }) if i.to_string() == "0")
            }),
            "gc.enable" => true,
            _ => false,
        }
    }

    /// A key as text: the string for constants, else the expression's source.
    pub fn key_text(&self, e: &Expr, scope: ScopeId) -> String {
        match e {
            Expr::Constant(ast::ExprConstant {
                value: Constant::Str(s),
                ..
            }) => format!("{s:?}"),
            _ => self
                .string(e, scope)
                .map_or_else(|| self.text(e).to_owned(), |s| format!("{s:?}")),
        }
    }

    /// Whether the root name of an attribute chain is bound by an import (a module or an object
    /// imported from one), not a local variable.
    pub fn is_imported(&self, e: &Expr, scope: ScopeId) -> bool {
        let mut e = e;
        while let Expr::Attribute(a) = e {
            e = &a.value;
        }
        let Expr::Name(n) = e else { return false };
        match self.scopes.lookup(scope, n.id.as_str()) {
            Some(super::scope::Binding::Import) => true,
            None => self.imports.resolve(n.id.as_str()).is_some(),
            _ => false,
        }
    }
}

impl<'a> Evaluator<'_, 'a> {
    /// Whether `value`, put back into `target`, is a saved copy of it: a name or attribute bound
    /// to something that read the same state (`old = os.getcwd()` then `os.chdir(old)`;
    /// `saved = sys.stdout` then `sys.stdout = saved`; `sys.stdout = sys.__stdout__`).
    /// Only plain names and attributes count: `os.environ["P"] = os.environ["P"] + ":x"` is a change.
    pub fn restores(&self, target: &Target, value: &Expr, scope: ScopeId) -> bool {
        // `sys.path[:] = saved[:]`: a copy of a saved value is still the saved value.
        let value = match value {
            Expr::Subscript(s) if matches!(&*s.slice, Expr::Slice(_)) => &*s.value,
            other => other,
        };
        if !matches!(value, Expr::Name(_) | Expr::Attribute(_)) {
            return false;
        }
        let marker = target.saved_marker();
        let text = match self.bound(value, scope) {
            Some((e, _)) => self.text(e),
            None => self.text(value),
        };
        if text.contains(&marker) {
            return true;
        }
        // sys.stdout = sys.__stdout__
        if let Target::Attr(a) = target
            && let Some((head, last)) = a.rsplit_once('.')
        {
            return text == format!("{head}.__{last}__");
        }
        false
    }
}
