//! Calls that write paths: `open(..., "w")`, `os.makedirs`, `shutil.move`, path methods,
//! working-directory changes and output directories handed to code under test.

use rustpython_parser::ast::{self, Expr};

use super::facts::WriteKind;
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

pub fn kwarg<'e>(call: &'e ast::ExprCall, name: &str) -> Option<&'e Expr> {
    call.keywords
        .iter()
        .find(|k| k.arg.as_ref().is_some_and(|a| a.as_str() == name))
        .map(|k| &k.value)
}

/// Positional argument `i`, or the keyword `name`.
pub fn arg<'e>(call: &'e ast::ExprCall, i: usize, name: &str) -> Option<&'e Expr> {
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
}
