//! Isolation: how much of its own world each unit gets (docs/run.md, "Isolation").
//!
//! - `none`: the environment of DESIGN §2.2 without the private temp root.
//! - `tmp`: the private temp root per worker slot (TMPDIR and friends). The floor.
//! - `namespace` (Linux): each unit also runs in fresh mount, PID and IPC namespaces (plus a
//!   user namespace when racefree is not root, plus a network namespace with
//!   `--private-network`), with private tmpfs on /tmp, /dev/shm and /var/tmp and racefree's
//!   own init as PID 1, which reports and kills every process the tests leave behind.
//! - `auto` (default): `namespace` where the kernel allows it, else `tmp`.
//!
//! The namespace work happens in a separate process, `racefree __unit-init -- <command>`,
//! which the executor starts instead of python: namespaces must be entered by a
//! single-threaded process, and the runner is not one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Error, Result};

#[cfg(target_os = "linux")]
mod linux;

/// The hidden CLI subcommand that runs a command inside fresh namespaces.
pub const INIT_SUBCOMMAND: &str = "__unit-init";
/// The hidden subcommand a namespaced fork server starts to make its units' inits.
pub const FACTORY_SUBCOMMAND: &str = "__init-factory";

/// Set (to anything but `0` or empty) to make the namespace probe fail, so the fallback of
/// `--isolate auto` can be tested on machines where namespaces work.
pub const FORCE_PROBE_FAILURE_ENV: &str = "RACEFREE_TEST_FAIL_NAMESPACE";

/// Exit status of `__unit-init` when it could not set the namespaces up (pytest's "internal
/// error"; the reason is on stderr).
pub const SETUP_FAILED: i32 = 3;

/// The isolation a user asks for (`--isolate`, `isolate` in `[tool.racefree]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    #[default]
    Auto,
    None,
    Tmp,
    Namespace,
}

impl FromStr for IsolationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IsolationMode::Auto),
            "none" => Ok(IsolationMode::None),
            "tmp" => Ok(IsolationMode::Tmp),
            "namespace" => Ok(IsolationMode::Namespace),
            other => Err(format!(
                "expected `auto`, `none`, `tmp` or `namespace`, got {other:?}"
            )),
        }
    }
}

/// The isolation a run actually uses, after probing the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    None,
    Tmp,
    Namespace {
        /// The racefree executable that provides `__unit-init`.
        init: PathBuf,
        private_network: bool,
    },
}

impl Isolation {
    /// Whether units get a private temp root (TMPDIR and friends) per worker slot.
    pub fn private_tmp(&self) -> bool {
        !matches!(self, Isolation::None)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Tmp => "tmp",
            Isolation::Namespace { .. } => "namespace",
        }
    }

    /// The program and leading arguments that run `command` with this isolation: the command
    /// itself, or `racefree __unit-init [...] -- command`. `keep` names paths the unit must
    /// still reach if they lie under a directory that gets a private tmpfs. `fork_server`: the
    /// command is a fork server, which makes each unit's namespaces itself (see
    /// `InitOptions::fork_server`).
    pub fn wrap(
        &self,
        command: &Path,
        keep: &[&Path],
        fork_server: bool,
    ) -> (PathBuf, Vec<OsString>) {
        match self {
            Isolation::None | Isolation::Tmp => (command.to_path_buf(), Vec::new()),
            Isolation::Namespace {
                init,
                private_network,
            } => {
                let mut args: Vec<OsString> = vec![INIT_SUBCOMMAND.into()];
                if *private_network {
                    args.push("--private-network".into());
                }
                if fork_server {
                    args.push("--fork-server".into());
                }
                for path in keep {
                    args.push("--keep".into());
                    args.push(path.as_os_str().to_owned());
                }
                args.push("--".into());
                args.push(command.as_os_str().to_owned());
                (init.clone(), args)
            }
        }
    }
}

/// What `resolve` decided, with the one line to tell the user. `fallback` lines are always
/// printed; the others only with `-v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub isolation: Isolation,
    pub note: String,
    pub fallback: bool,
}

/// Decides a run's isolation. `init` is the racefree executable (None when the runner is
/// used without one: then `namespace` is unavailable). Probes the kernel once, by running
/// `__unit-init --probe`, which sets up every namespace and mount a unit would get.
pub fn resolve(
    mode: IsolationMode,
    private_network: bool,
    init: Option<&Path>,
) -> Result<Resolved> {
    if private_network && matches!(mode, IsolationMode::None | IsolationMode::Tmp) {
        return Err(Error::Usage(format!(
            "--private-network needs --isolate namespace (or auto where namespaces work); \
             --isolate {} shares the host's network",
            if mode == IsolationMode::None {
                "none"
            } else {
                "tmp"
            }
        )));
    }
    match mode {
        IsolationMode::None => Ok(Resolved {
            isolation: Isolation::None,
            note: "racefree: isolation: none (tests share the normal temp dir)".into(),
            fallback: false,
        }),
        IsolationMode::Tmp => Ok(Resolved {
            isolation: Isolation::Tmp,
            note: "racefree: isolation: tmp (a private temp dir per worker)".into(),
            fallback: false,
        }),
        IsolationMode::Namespace | IsolationMode::Auto if !cfg!(target_os = "linux") => {
            if mode == IsolationMode::Auto && !private_network {
                // Not a fallback: on this system `auto` simply means `tmp`.
                return Ok(Resolved {
                    isolation: Isolation::Tmp,
                    note: "racefree: isolation: tmp (namespaces are Linux-only)".into(),
                    fallback: false,
                });
            }
            Err(Error::Usage(format!(
                "{} needs Linux namespaces; on this system use --isolate tmp",
                if private_network {
                    "--private-network"
                } else {
                    "--isolate namespace"
                }
            )))
        }
        IsolationMode::Namespace | IsolationMode::Auto => {
            let probed = match init {
                Some(init) => probe(init, private_network).map(|()| init.to_path_buf()),
                None => Err("this runner was started without the racefree executable".into()),
            };
            match (probed, mode) {
                (Ok(init), _) => Ok(Resolved {
                    note: format!(
                        "racefree: isolation: namespace (private mount, PID, IPC{} namespaces per unit)",
                        if private_network { ", network" } else { "" }
                    ),
                    isolation: Isolation::Namespace {
                        init,
                        private_network,
                    },
                    fallback: false,
                }),
                (Err(why), IsolationMode::Auto) if !private_network => Ok(Resolved {
                    isolation: Isolation::Tmp,
                    note: format!(
                        "racefree: isolation: tmp, because namespaces are unavailable: {why}"
                    ),
                    fallback: true,
                }),
                (Err(why), _) => Err(Error::Usage(format!(
                    "{} needs Linux namespaces, which are unavailable here: {why}\n  \
                     fix: use --isolate tmp{}, or allow user namespaces \
                     (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)",
                    if private_network {
                        "--private-network"
                    } else {
                        "--isolate namespace"
                    },
                    if private_network {
                        " without --private-network"
                    } else {
                        ""
                    }
                ))),
            }
        }
    }
}

/// Tries, in a child process, everything a unit's namespace set-up does. Err says why not.
pub fn probe(init: &Path, private_network: bool) -> std::result::Result<(), String> {
    if std::env::var_os(FORCE_PROBE_FAILURE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(format!("{FORCE_PROBE_FAILURE_ENV} is set"));
    }
    let mut cmd = Command::new(init);
    cmd.arg(INIT_SUBCOMMAND).arg("--probe");
    if private_network {
        cmd.arg("--private-network");
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", init.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("racefree: ").to_string())
        .unwrap_or_else(|| format!("the probe ended with {}", out.status));
    Err(why)
}

/// What `racefree __unit-init` was asked.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Paths that must stay reachable even if they lie under /tmp, /dev/shm or /var/tmp (the
    /// session root, the project, the interpreter's environment): bound back in at the same
    /// path after the private tmpfs is mounted.
    pub keep: Vec<PathBuf>,
    pub private_network: bool,
    /// Set up everything, run nothing, exit 0 if that worked.
    pub probe: bool,
    /// The command is a fork server, which gives each unit it forks PID, mount and IPC
    /// namespaces and an init of its own: it gets a descriptor on the host's /proc (opened
    /// with O_PATH before the fresh one covers it; its number in `RACEFREE_HOST_PROC_FD`) to
    /// name leaked processes by the pid racefree sees, one on racefree's executable (in
    /// `RACEFREE_INIT_FACTORY_EXE_FD`) to start its init factory, and keeps CAP_SYS_ADMIN in the user
    /// namespace across exec (an ambient capability), which a uid other than root loses.
    pub fork_server: bool,
}

/// Runs `opts.command` in fresh namespaces under racefree's init, and returns its exit
/// status; if the command died by a signal, this process dies by the same signal. Must be
/// called while the process is single-threaded (the CLI calls it first thing).
#[cfg(target_os = "linux")]
pub fn unit_init(opts: &InitOptions) -> i32 {
    linux::unit_init(opts)
}

#[cfg(not(target_os = "linux"))]
pub fn unit_init(_opts: &InitOptions) -> i32 {
    eprintln!("racefree: namespace isolation is Linux-only; use --isolate tmp");
    SETUP_FAILED
}

/// Runs the fork server's init factory (`racefree __init-factory`, started by the server
/// with the descriptors named): until the server closes `socket`, it answers each request
/// with a new PID namespace's init. Must be called while the process is single-threaded.
#[cfg(target_os = "linux")]
pub fn init_factory(socket: i32, host_proc: Option<i32>, parent: i32) -> Result<(), String> {
    linux::init_factory(socket, host_proc, parent)
}

#[cfg(not(target_os = "linux"))]
pub fn init_factory(_socket: i32, _host_proc: Option<i32>, _parent: i32) -> Result<(), String> {
    Err("namespace isolation is Linux-only".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse(), Ok(IsolationMode::Auto));
        assert_eq!("none".parse(), Ok(IsolationMode::None));
        assert_eq!("tmp".parse(), Ok(IsolationMode::Tmp));
        assert_eq!("namespace".parse(), Ok(IsolationMode::Namespace));
        assert!("ns".parse::<IsolationMode>().is_err());
    }

    #[test]
    fn private_network_needs_namespaces() {
        for mode in [IsolationMode::None, IsolationMode::Tmp] {
            let err = resolve(mode, true, None).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{err}");
            assert!(err.to_string().contains("--private-network"), "{err}");
        }
    }

    #[test]
    fn without_an_init_auto_is_tmp_and_namespace_is_an_error() {
        let r = resolve(IsolationMode::Auto, false, None).unwrap();
        assert_eq!(r.isolation, Isolation::Tmp);
        assert!(r.fallback && r.note.contains("unavailable"), "{}", r.note);
        assert!(resolve(IsolationMode::Namespace, false, None).is_err());
        assert!(resolve(IsolationMode::Auto, true, None).is_err());
    }

    #[test]
    fn wrap_puts_the_command_after_the_init() {
        let ns = Isolation::Namespace {
            init: "/bin/racefree".into(),
            private_network: true,
        };
        let (program, args) = ns.wrap(Path::new("/usr/bin/python3"), &[Path::new("/tmp/p")], true);
        assert_eq!(program, PathBuf::from("/bin/racefree"));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                INIT_SUBCOMMAND,
                "--private-network",
                "--fork-server",
                "--keep",
                "/tmp/p",
                "--",
                "/usr/bin/python3"
            ]
        );
        let (program, args) = Isolation::Tmp.wrap(Path::new("/usr/bin/python3"), &[], true);
        assert_eq!(program, PathBuf::from("/usr/bin/python3"));
        assert!(args.is_empty());
    }
}
