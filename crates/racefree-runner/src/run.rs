//! `racefree run` from request to exit code: configuration, interpreter, discovery,
//! planning, then the dispatcher with its event consumers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use crate::config::{self, FlakyResult, UnitMode, Workers};
use crate::discovery::{self, DiscoverOptions, TestFile};
use crate::dispatch::{Bus, Dispatcher, Reporter};
use crate::error::Result;
use crate::events::Event;
use crate::executor::{ExecContext, UnitConfig};
use crate::history::History;
use crate::import_names;
use crate::passthrough;
use crate::plan::{self, FileWork, PlanParams, Predictions};
use crate::pytest_argv::Resolved;
use crate::recorder::HistoryRecorder;
use crate::recovery::FaultPolicy;
use crate::report::{junit::Junit, ndjson::NdjsonLog, progress::Progress, summary::Summary};
use crate::session::Session;

/// How live progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    Plain,
}

/// Everything `racefree run` was asked, before `[tool.racefree]` fills the gaps.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub invocation_dir: PathBuf,
    /// Paths and node ids.
    pub args: Vec<String>,
    /// Arguments after `--`, for every pytest process.
    pub pytest_args: Vec<String>,
    pub workers: Option<Workers>,
    pub python: Option<PathBuf>,
    pub unit: Option<UnitMode>,
    pub keyword: Option<String>,
    pub markexpr: Option<String>,
    pub exitfirst: bool,
    pub maxfail: Option<u32>,
    pub last_failed: bool,
    pub failed_first: bool,
    pub junit_xml: Option<PathBuf>,
    pub events: Option<PathBuf>,
    /// -q is -1, -v is +1.
    pub verbosity: i32,
    pub durations: Option<usize>,
    pub no_history: bool,
    pub progress: ProgressMode,
    /// Print the discovered files with their estimated test counts and stop.
    pub list_files: bool,
    /// Spawn a fresh interpreter per unit instead of forking it from a warm server.
    pub no_fork: bool,
    /// Never split a file over several units (`--no-split`).
    pub no_split: bool,
    /// CI sharding and committed durations (`--shard`, `--durations-file`): see `sharding`.
    pub sharding: crate::sharding::ShardOptions,
    /// `--timeout SECS` (per test).
    pub timeout: Option<f64>,
    /// `--kill-grace SECS` between SIGTERM and SIGKILL.
    pub kill_grace: Option<f64>,
    /// `--run-timeout SECS` for the whole run.
    pub run_timeout: Option<f64>,
    /// `--retries N` for failed tests.
    pub retries: Option<u32>,
    pub flaky_result: Option<FlakyResult>,
    /// `--infra-retries N`: for pytest processes that exit 3 or 4 before any test.
    pub infra_retries: Option<u32>,
    /// Counts SIGINT/SIGTERM; the caller's signal handler increments it.
    pub interrupts: Option<Arc<AtomicUsize>>,
    /// `--isolate`; `[tool.racefree] isolate` fills the gap, then `auto`.
    pub isolate: Option<crate::isolation::IsolationMode>,
    /// `--private-network` (or `private-network = true` in `[tool.racefree]`).
    pub private_network: bool,
    /// The racefree executable, which provides `__unit-init` for namespace isolation.
    pub init_program: Option<PathBuf>,
}

/// A number of seconds from the command line's `--FLAG` or else `[tool.racefree]`'s `FLAG`
/// key, checked: an error names where the bad value came from.
fn seconds(
    flag: &str,
    from_cli: Option<f64>,
    from_config: Option<f64>,
    config_path: Option<&Path>,
) -> Result<Option<Duration>> {
    let (value, source) = match (from_cli, from_config) {
        (Some(v), _) => (v, format!("--{flag}")),
        (None, Some(v)) => (
            v,
            format!(
                "`{flag}` in [tool.racefree] of {}",
                config_path.map_or("pyproject.toml".into(), |p| p.display().to_string())
            ),
        ),
        (None, None) => return Ok(None),
    };
    if !(value.is_finite() && value >= 0.0) {
        return Err(crate::error::Error::Usage(format!(
            "{source} must be a non-negative number of seconds, got {value}"
        )));
    }
    // Finite but beyond what a Duration holds (1e30): as good as no limit, and refused as
    // such rather than wrapped or panicked on.
    Duration::try_from_secs_f64(value).map(Some).map_err(|_| {
        crate::error::Error::Usage(format!(
            "{source}: {value} seconds is more than racefree can wait; use 0 for no limit"
        ))
    })
}

/// The fault policy from the request, then `[tool.racefree]` (read from `config_path`),
/// then the defaults.
fn fault_policy(
    req: &RunRequest,
    rf: &config::RacefreeConfig,
    config_path: Option<&Path>,
) -> Result<FaultPolicy> {
    let defaults = FaultPolicy::default();
    let timeout = seconds("timeout", req.timeout, rf.timeout, config_path)?;
    Ok(FaultPolicy {
        timeout: timeout.map(|d| d.as_secs_f64()).filter(|s| *s > 0.0),
        kill_grace: seconds("kill-grace", req.kill_grace, rf.kill_grace, config_path)?
            .unwrap_or(defaults.kill_grace),
        run_timeout: seconds("run-timeout", req.run_timeout, rf.run_timeout, config_path)?
            .filter(|d| !d.is_zero()),
        retries: req.retries.or(rf.retries).unwrap_or(defaults.retries),
        flaky_fails: req.flaky_result.or(rf.flaky_result).unwrap_or_default() == FlakyResult::Fail,
        infra_retries: req
            .infra_retries
            .or(rf.infra_retries)
            .unwrap_or(defaults.infra_retries),
        units_exit_7_on_flaky: false,
    })
}

/// Whether node id `given` selects the test `id`, as pytest's node-id arguments do: itself,
/// what lies under it (`file::Class` selects `file::Class::test`), or its parametrized cases
/// (`file::test` selects `file::test[1]`).
fn selects(given: &str, id: &str) -> bool {
    id.strip_prefix(given)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('['))
}

/// Runs the tests; returns pytest's exit code for the run.
pub fn run(mut req: RunRequest) -> Result<u8> {
    let started = Instant::now();
    // Paths given to pytest after `--` are the run's paths: each unit's pytest would
    // otherwise collect them all over again.
    let resolved = Resolved::new(&req.invocation_dir, &req.args, &req.pytest_args)?;
    req.args = resolved.args.clone();
    req.pytest_args = resolved.command_line.given.options.clone();
    let cwd = &req.invocation_dir;
    let pytest_cfg = resolved.pytest.clone();
    let project_dir = resolved.project_dir.clone();
    let (rf_path, rf) = config::load_racefree_config(&project_dir)?;
    let mut policy = fault_policy(&req, &rf, rf_path.as_deref())?;
    let workers = req
        .workers
        .or(rf.workers)
        .unwrap_or(Workers::Auto)
        .resolve();
    let fork = !req.no_fork && rf.fork.unwrap_or(FORK_BY_DEFAULT);
    // A fork costs little, so each file gets its own fresh process unless asked otherwise.
    let unit_mode =
        req.unit
            .or(rf.unit)
            .unwrap_or(if fork { UnitMode::File } else { UnitMode::Pack });
    let junit_xml = req
        .junit_xml
        .clone()
        .or(rf.junit_xml.as_ref().map(|p| project_dir.join(p)));
    let events_path = req
        .events
        .clone()
        .or(rf.events.as_ref().map(|p| project_dir.join(p)));
    // pytest's own --durations N (after `--`, in addopts): racefree's report, as its own.
    let pytest_durations =
        pytest_number(&resolved, "--durations", "a number of tests (0 for all)")?;
    let durations = req.durations.or(rf.durations).or(pytest_durations);
    let durations_min = pytest_number(&resolved, "--durations-min", "a number of seconds")?;
    // pytest's --tb=no: no tracebacks in the report; --tb=line: a line per failure.
    let tb_style = resolved.last_value(&["--tb"]);
    // pytest's --show-capture: which captured output failures show (pytest's default all).
    let show_capture = resolved
        .last_value(&["--show-capture"])
        .unwrap_or_else(|| "all".to_string());
    if !["no", "stdout", "stderr", "log", "all"].contains(&show_capture.as_str()) {
        return Err(crate::error::Error::Usage(format!(
            "pytest option `--show-capture={show_capture}`: choose from no, stdout, stderr, log, all"
        )));
    }
    // pytest's -r characters: what the short test summary lists (pytest's default "fE").
    let report_chars = resolved
        .last_value(&["-r", "--report-chars"])
        .unwrap_or_else(|| "fE".to_string());
    // pytest's own options, in the order pytest reads them: the configuration's addopts,
    // then $PYTEST_ADDOPTS, then the command line's (after `--`).
    let ini_addopts = resolved.addopts.clone();
    let command_line = resolved.command_line.options();
    let pytest_flags = resolved.pytest_flags();
    passthrough::refuse_unworkable(&pytest_flags)?;
    for line in passthrough::single_session_reports(&pytest_flags) {
        eprintln!("racefree: warning: {line}");
    }
    if passthrough::fails_on_flaky(&pytest_flags) {
        // pytest-rerunfailures's own way to fail a run with flaky tests: racefree's, unless
        // racefree was told otherwise (--flaky-result, flaky-result).
        policy.units_exit_7_on_flaky = true;
        if req.flaky_result.or(rf.flaky_result).is_none() {
            policy.flaky_fails = true;
        }
    }
    // racefree's own flags, then pytest's given for this run, then [tool.racefree], then
    // the project's addopts.
    // pytest's --junitxml (after `--`, in PYTEST_ADDOPTS or in addopts) is racefree's
    // report, unless racefree was given one: every unit writing it would leave the last
    // unit's tests only. Relative to the directory pytest was started in, as pytest takes it.
    let junit_xml = junit_xml.or_else(|| {
        passthrough::junit_xml(&pytest_flags)
            .filter(|p| !p.is_empty())
            .map(|p| config::absolute(cwd, Path::new(&passthrough::expand_path(&p))))
    });
    if pytest_flags
        .iter()
        .any(|f| f.starts_with("--junitprefix") || f.starts_with("--junit-prefix"))
    {
        eprintln!(
            "racefree: warning: pytest's --junit-prefix is not applied: racefree writes the JUnit report, with pytest's class names"
        );
    }
    let maxfail = if req.exitfirst {
        Some(1)
    } else {
        req.maxfail
            .or(passthrough::maxfail(&command_line))
            .or(rf.maxfail)
            .or(passthrough::maxfail(&ini_addopts))
            .filter(|&n| n > 0)
    };
    let discover = || {
        discovery::discover_all(
            &pytest_cfg,
            cwd,
            &req.args,
            DiscoverOptions::from_pytest_args(cwd, &pytest_flags),
        )
    };
    if req.list_files {
        for f in &discover()?.files {
            println!("{}\t{}", f.estimate, f.rel);
        }
        return Ok(crate::error::exit::OK);
    }
    let run_params = RunParams {
        req: &req,
        rf: &rf,
        rf_path: rf_path.as_deref(),
        rootdir: &pytest_cfg.rootdir,
        project_dir: &project_dir,
        unit_config: unit_config(
            pytest_cfg.inifile.as_deref(),
            &resolved.command_line.setup(),
            resolved.last_value(&["--confcutdir"]).is_some(),
        ),
        pytest_flags: &pytest_flags,
        workers,
        junit: junit_xml.is_some(),
    };
    // Fork servers take the longest to get ready (an interpreter start-up, pytest, the
    // preloaded modules) and need neither discovery nor the plan: they start while discovery
    // runs. Discovery's errors (a path that does not exist, say) still come first, and alone.
    let (discovered, early) = std::thread::scope(|scope| {
        let discovering = scope.spawn(discover);
        // On this thread, not the scoped one: a server's parent-death signal (Linux) comes
        // when the thread that started it ends.
        let early = start_early(&run_params, fork);
        let files = discovering.join().map_err(|_| {
            crate::error::Error::io(
                "discovering test files",
                std::io::Error::other("it panicked"),
            )
        })??;
        Ok::<_, crate::error::Error>((files, early?))
    })?;
    let discovery::Discovery {
        mut files,
        custom_collectors,
        walked_roots,
    } = discovered;
    let Early {
        python,
        mut pytest_check,
        history,
        launched,
    } = early;
    crate::pytest_argv::refuse_files_outside_rootdir(
        &pytest_cfg.rootdir,
        files.iter().map(|f| f.path.as_path()),
    )?;
    let roots = discovery::collection_roots(&pytest_cfg, cwd, &req.args)?;
    // Where plain pytest would start collecting (see Dispatcher::initial_dirs).
    let initial_dirs: Vec<PathBuf> = roots
        .iter()
        .map(|(path, _)| match path.parent() {
            Some(parent) if !path.is_dir() => parent.to_path_buf(),
            _ => path.clone(),
        })
        .collect();
    // pytest's collection order, which its report follows: the paths in the order given,
    // each one's files by path (discovery keeps them by path).
    let mut collection_order: Vec<String> = files.iter().map(|f| f.rel.clone()).collect();
    collection_order.sort_by_key(|rel| {
        let path = pytest_cfg.rootdir.join(rel);
        roots
            .iter()
            .position(|(root, _)| path.starts_with(root))
            .unwrap_or(usize::MAX)
    });
    // The node ids the command line gave (before --lf replaces selections with its own).
    let given_ids: HashSet<String> = files
        .iter()
        .filter_map(|f| f.selection.as_ref())
        .flatten()
        .cloned()
        .collect();
    let predictions = match &history {
        Some(h) => or_without_history(h.predictions()),
        None => Predictions::default(),
    };
    // CI sharding: keep this machine's share of the files (docs/ci.md).
    // Every file discovery found, before sharding and --lf narrow them: a unit that walks
    // directories for what discovery cannot see leaves all of them out (see remainder_unit).
    let discovered_paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let discovered_rels: HashSet<String> = files.iter().map(|f| f.rel.clone()).collect();
    let predictions = crate::sharding::prepare(&req.sharding, cwd, predictions, &mut files)?;
    let failed_before: Vec<String> = match &history {
        Some(h) if req.last_failed || req.failed_first => or_without_history(h.last_failed()),
        _ => Vec::new(),
    };
    let failed_files: HashSet<String> = failed_before
        .iter()
        .map(|id| id.split("::").next().unwrap_or(id).to_string())
        .collect();
    let mut selective = req.args.iter().any(|a| a.contains("::"))
        || req.keyword.is_some()
        || req.markexpr.is_some();
    if req.last_failed {
        // As pytest's --lf: of what the run was given, only what failed last time, or all of
        // it if none of it failed. A file given with node ids keeps to the tests they select.
        let present: Vec<&String> = failed_before
            .iter()
            .filter(|id| {
                files.iter().any(|f| {
                    id.split("::").next() == Some(f.rel.as_str())
                        && f.selection
                            .as_ref()
                            .is_none_or(|given| given.iter().any(|g| selects(g, id)))
                })
            })
            .collect();
        if present.is_empty() {
            if req.verbosity >= 0 {
                println!("racefree: --lf: no previously failed tests, running all");
            }
        } else {
            let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for id in present {
                by_file
                    .entry(id.split("::").next().unwrap_or(id).to_string())
                    .or_default()
                    .push(id.clone());
            }
            files.retain(|f| by_file.contains_key(&f.rel));
            for f in &mut files {
                let ids = by_file.remove(&f.rel).unwrap_or_default();
                f.estimate = ids.len() as u64;
                f.selection = Some(ids);
            }
            selective = true;
        }
    }

    let mut predictions = predictions;
    let mut python_info: Option<crate::python::PythonInfo> = None;
    if fork {
        predictions.startup = Some(
            predictions
                .fork_startup
                .unwrap_or(crate::plan::DEFAULT_FORK_STARTUP_SECS),
        );
    }
    if predictions.startup.is_none() {
        // No history: time the pytest import now (it runs anyway) and take twice that as the
        // start-up estimate; plugins and conftests come on top of the bare import.
        let info = join_check(pytest_check)?;
        predictions.measured_startup = Some(2.0 * info.import_secs);
        python_info = Some(info);
        pytest_check = None;
    }
    // pytest-xdist's `--dist loadfile` and `--dist loadscope` keep each file's (each
    // module's or class's) tests in one worker: racefree then never splits a file.
    let dist = resolved.last_value(&["--dist"]);
    let keeps_files_whole = matches!(dist.as_deref(), Some("loadfile" | "loadscope"));
    let split = !req.no_split && rf.split.unwrap_or(true) && !keeps_files_whole;
    let mut known_tests = if split {
        predictions.tests_by_file()
    } else {
        Default::default()
    };
    let work: Vec<FileWork> = files
        .iter()
        .enumerate()
        .map(|(index, f)| FileWork {
            index,
            predicted: predictions.file(&f.rel, f.estimate, f.selection.as_deref()),
            first: req.failed_first && failed_files.contains(&f.rel),
            // A file the user selected node ids in (or --lf did) keeps that selection whole.
            tests: match f.selection {
                None => known_tests.remove(f.rel.as_str()).unwrap_or_default(),
                Some(_) => Vec::new(),
            },
            collect: predictions.collect.get(&f.rel).copied(),
        })
        .collect();
    let params = PlanParams {
        workers,
        startup: predictions.startup(),
        mode: unit_mode,
        split,
    };
    let import_mode = resolved.last_value(&["--import-mode"]);
    let (xdist_grouped, groups) = shared_process_groups(
        &files,
        &collection_order,
        dist.as_deref(),
        import_mode.as_deref(),
    );
    let mut units = plan_with_groups(work, groups, params);
    // What racefree's discovery cannot see (a conftest's own collector, a plugin's), pytest
    // finds in a unit that walks the directories itself; on one shard only. Under --lf it
    // runs whole: racefree cannot select within it.
    let one_shard = req.sharding.shard.is_none_or(|s| s.index == 1);
    if one_shard
        && let Some(unit) = remainder_unit(
            &custom_collectors,
            &walked_roots,
            &pytest_flags,
            &pytest_cfg.rootdir,
            &discovered_rels,
            &mut files,
            &predictions,
        )
    {
        // After the failed-first units (--ff), before the others.
        let at = units.iter().take_while(|u| u.first).count();
        units.insert(at, unit);
        for (i, u) in units.iter_mut().enumerate() {
            u.id = i;
        }
    }
    let predicted_total: f64 = units.iter().map(|u| u.predicted).sum();

    let launched = match launched {
        Some(launched) => launched,
        None => {
            let paths = match python_info {
                Some(info) => info.paths,
                // No pytest there: say so before any unit starts.
                None => join_check(pytest_check.take())?.paths,
            };
            let launched = launch(&run_params, &python, history.as_ref(), || Ok(paths), false)?;
            launched.print_notes();
            launched
        }
    };
    let (session, ctx) = (&launched.session, &launched.ctx);
    if let Some(pool) = &ctx.fork {
        // Fork servers: racefree only looked for pytest (see `interpreter_paths`). If no
        // server could import it, a fresh interpreter says why, as in spawn mode.
        if !pool.wait_for_pytest_import() {
            crate::python::check_pytest(&python)?;
        }
        launched.print_notes();
        pool.say_held();
    }

    let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
    let tty = std::io::stderr().is_terminal() && req.progress == ProgressMode::Auto;
    if tty {
        reporters.push(Box::new(Progress::tty(req.verbosity)));
    } else {
        reporters.push(Box::new(Progress::plain(
            Box::new(std::io::stdout()),
            req.verbosity,
        )));
    }
    let width = terminal_width();
    reporters.push(Box::new(
        Summary::new(Box::new(std::io::stdout()), width, req.verbosity, durations)
            .with_tb_style(tb_style.as_deref())
            .with_durations_min(durations_min)
            .with_report_chars(&report_chars)
            .with_show_capture(&show_capture)
            .with_file_order(collection_order.iter().map(String::as_str))
            .with_no_summary(pytest_flags.iter().any(|f| f == "--no-summary"))
            .with_warnings_summary(
                !pytest_flags
                    .iter()
                    .any(|f| f == "--disable-warnings" || f == "--disable-pytest-warnings"),
            ),
    ));
    if let Some(path) = &junit_xml {
        let suite_name = match pytest_cfg.values.get("junit_suite_name") {
            Some(config::IniValue::Str(name)) if !name.trim().is_empty() => name.trim().to_string(),
            _ => "pytest".to_string(),
        };
        reporters.push(Box::new(
            Junit::new(&crate::config::absolute(cwd, path)).with_suite_name(&suite_name),
        ));
    }
    if let Some(path) = &events_path {
        reporters.push(Box::new(NdjsonLog::create(
            &crate::config::absolute(cwd, path),
            started,
        )?));
    }
    if let Some(h) = history {
        reporters.push(Box::new(
            HistoryRecorder::new(h, session.run_id.clone(), workers, !selective)
                .forked(ctx.fork.is_some()),
        ));
    }
    let mut bus = Bus::new(reporters);
    bus.emit(Event::RunStarted {
        run_id: session.run_id.clone(),
        rootdir: pytest_cfg.rootdir.display().to_string(),
        python: python.display().to_string(),
        workers,
        files: files.len(),
        units: units.len(),
        // A chunk of a split file counts the tests history knows in it; the progress bar
        // swaps each unit's estimate for what it collects, so the two must agree.
        estimated_tests: units
            .iter()
            .map(|u| match &u.chunk {
                Some(c) => c.known_tests as u64,
                None => u.files.iter().map(|&i| files[i].estimate).sum(),
            })
            .sum(),
        predicted_secs: predicted_total,
    });
    let python_dir = session.plugin_dir();
    let mut dispatcher = Dispatcher {
        ctx,
        session,
        files: &files,
        maxfail,
        bus: &mut bus,
        policy: &policy,
        given_ids: &given_ids,
        initial_dirs: &initial_dirs,
        interrupts: req.interrupts.clone(),
        remainder_skip: &discovered_paths,
        continue_on_collection_errors: pytest_flags
            .iter()
            .any(|f| f == "--continue-on-collection-errors"),
        xdist_grouped: &xdist_grouped,
        coverage: ctx.coverage.then(|| crate::coverage::Step {
            python: &ctx.python,
            python_dir: &python_dir,
            cwd: &ctx.invocation_dir,
            session_root: &session.root,
            width,
        }),
    };
    let outcome = dispatcher.run(units, started);
    let errors = bus.finish();
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    if let Some(pool) = &ctx.fork {
        learn_preload(&project_dir, req.no_history, &outcome.imports, pool);
    }
    Ok(outcome.exit_code)
}

/// The run's units, each of `groups` (indices into the run's files, in the order pytest is
/// to get them) one unit of its own, whole: files that must share one pytest process.
fn plan_with_groups(
    work: Vec<FileWork>,
    groups: Vec<Vec<usize>>,
    params: PlanParams,
) -> Vec<plan::UnitPlan> {
    let group_of: HashMap<usize, usize> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, files)| files.iter().map(move |&f| (f, g)))
        .collect();
    let (grouped, work): (Vec<FileWork>, Vec<FileWork>) = work
        .into_iter()
        .partition(|w| group_of.contains_key(&w.index));
    let mut units = plan::plan(&work, params);
    let mut members: Vec<Vec<FileWork>> = groups.iter().map(|_| Vec::new()).collect();
    for w in grouped {
        members[group_of[&w.index]].push(w);
    }
    for (files, members) in groups.into_iter().zip(members) {
        if members.is_empty() {
            continue;
        }
        let unit = plan::UnitPlan {
            id: 0,
            files,
            predicted: members.iter().map(|w| w.predicted).sum::<f64>() + params.startup,
            first: members.iter().any(|w| w.first),
            chunk: None,
        };
        // Where the planner would have put it: longest first, failed-first units ahead.
        let at = units
            .iter()
            .position(|u| {
                (unit.first && !u.first) || (u.first == unit.first && u.predicted < unit.predicted)
            })
            .unwrap_or(units.len());
        units.insert(at, unit);
    }
    for (i, u) in units.iter_mut().enumerate() {
        u.id = i;
    }
    units
}

/// The files (indices into `files`) that must share one pytest process, each group in
/// pytest's collection order (`collection_order`, by rootdir-relative path): the one
/// pytest imports first is the one that works. Under `--dist loadgroup` the files that name
/// an `xdist_group` run together, whole: all groups in one unit, since racefree does not
/// read which group each test is in, and one process keeps every group's promise (tests
/// that share a database, a port, a file run one after another); those files are also
/// returned apart, as a retry of one of their tests waits for the group. Under pytest's
/// default import modes, files it cannot import side by side (see `import_names`).
fn shared_process_groups(
    files: &[TestFile],
    collection_order: &[String],
    dist: Option<&str>,
    import_mode: Option<&str>,
) -> (HashSet<usize>, Vec<Vec<usize>>) {
    let xdist_grouped: HashSet<usize> = if dist == Some("loadgroup") {
        (0..files.len())
            .filter(|&i| names_an_xdist_group(&files[i].path))
            .collect()
    } else {
        HashSet::new()
    };
    let mut groups = vec![xdist_grouped.iter().copied().collect::<Vec<_>>()];
    if !import_names::mode_names_files_apart(import_mode) {
        let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
        groups.extend(import_names::colliding(&paths));
    }
    let rank: HashMap<&str, usize> = collection_order
        .iter()
        .enumerate()
        .map(|(i, rel)| (rel.as_str(), i))
        .collect();
    let groups = merged_groups(groups, |i| {
        rank.get(files[i].rel.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });
    (xdist_grouped, groups)
}

/// `groups` with every two that share a file made one, each ordered by `order`, empty
/// ones dropped.
fn merged_groups(groups: Vec<Vec<usize>>, order: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut merged: Vec<Vec<usize>> = Vec::new();
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let mut group = group;
        let (overlapping, apart): (Vec<_>, Vec<_>) = merged
            .into_iter()
            .partition(|m| m.iter().any(|f| group.contains(f)));
        for m in overlapping {
            group.extend(m);
        }
        group.sort_unstable();
        group.dedup();
        merged = apart;
        merged.push(group);
    }
    for group in &mut merged {
        group.sort_by_key(|&i| order(i));
    }
    merged
}

/// Whether a test file names a pytest-xdist group (`@pytest.mark.xdist_group(...)`, or a
/// `pytestmark` of one): read as text, as pytest would import it. A file that cannot be read
/// is pytest's to report.
fn names_an_xdist_group(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains("xdist_group"))
}

/// pytest plugins that, when their flag is given, collect tests from files racefree's
/// discovery does not look at (type checkers, linters, notebooks).
const COLLECTING_PLUGIN_FLAGS: &[&str] = &[
    "--mypy",
    "--ruff",
    "--ruff-format",
    "--flake8",
    "--pylint",
    "--pycodestyle",
    "--pydocstyle",
    "--black",
    "--isort",
    "--nbval",
    "--nbval-lax",
    "--doctest-cython",
];

/// The unit in which pytest walks the run's directories itself and collects what racefree's
/// discovery did not (see `discovery::Discovery::custom_collectors`), leaving out every
/// file racefree runs elsewhere; None when nothing but pytest's own rules collects. Its
/// directories are added to `files`, marked `remainder`.
fn remainder_unit(
    custom_collectors: &[PathBuf],
    walked_roots: &[PathBuf],
    pytest_flags: &[String],
    rootdir: &Path,
    discovered: &HashSet<String>,
    files: &mut Vec<TestFile>,
    predictions: &Predictions,
) -> Option<plan::UnitPlan> {
    let by_plugin = pytest_flags
        .iter()
        .any(|f| COLLECTING_PLUGIN_FLAGS.contains(&passthrough::option_name(f)));
    if walked_roots.is_empty() || (custom_collectors.is_empty() && !by_plugin) {
        return None;
    }
    // What it ran before: the files under its directories that history knows and
    // discovery did not find (and that still exist).
    let predicted: f64 = predictions
        .files
        .iter()
        .filter(|(rel, _)| !discovered.contains(rel.as_str()))
        .filter(|(rel, _)| {
            let path = rootdir.join(rel);
            path.is_file() && walked_roots.iter().any(|root| path.starts_with(root))
        })
        .map(|(_, secs)| secs)
        .sum();
    let first = files.len();
    files.extend(walked_roots.iter().map(|dir| {
        TestFile {
            path: dir.clone(),
            rel: Some(discovery::rel_path(rootdir, dir))
                .filter(|rel| !rel.is_empty())
                .unwrap_or_else(|| ".".to_string()),
            estimate: 0,
            selection: None,
            walk_root: None,
            remainder: true,
        }
    }));
    Some(plan::UnitPlan {
        id: 0,
        files: (first..files.len()).collect(),
        predicted: predicted + predictions.startup(),
        first: false,
        chunk: None,
    })
}

/// Fork by default where fork-without-exec is well trodden (macOS frameworks may abort in a
/// forked child, so there it is opt-in with `fork = true`).
const FORK_BY_DEFAULT: bool = cfg!(target_os = "linux");

/// Teaches history what the fork servers should preload next time, and what not.
fn learn_preload(
    rootdir: &Path,
    no_history: bool,
    imports: &std::collections::BTreeSet<String>,
    pool: &crate::forkserver::ForkPool,
) {
    if no_history {
        return;
    }
    let refusal = pool.refusal();
    let blamed = refusal
        .as_ref()
        .and_then(|r| r.module.as_deref().map(|m| (m, r.reason.as_str())));
    if imports.is_empty() && blamed.is_none() {
        return;
    }
    // A read-only store was already named once, by the run's own record.
    let result = History::open(rootdir).and_then(|mut h| {
        if h.is_read_only() {
            return Ok(());
        }
        h.record_imports(imports, blamed)
    });
    if let Err(e) = result {
        eprintln!("racefree: warning: could not record modules to preload: {e}");
    }
}

/// What a run sets up before it knows its files.
struct Early {
    python: PathBuf,
    /// Spawned units only: `python -c "import pytest"`, running.
    pytest_check: Option<PytestCheck>,
    history: Option<History>,
    /// With fork servers: their launch, started.
    launched: Option<Launch>,
}

/// What history says, or, if it cannot be read (a damaged store), nothing, with one line
/// that says why and how to start afresh: history only makes runs faster, and a run must
/// not fail for it.
fn or_without_history<T: Default>(read: Result<T>) -> T {
    read.unwrap_or_else(|e| {
        eprintln!("racefree: warning: running without history: {e}");
        T::default()
    })
}

/// The interpreter, the pytest check or the fork servers, and history: what needs no files.
fn start_early(p: &RunParams, fork: bool) -> Result<Early> {
    let (req, rf) = (p.req, p.rf);
    // A `python` key came from the pyproject.toml `rf_path` names (never from nowhere).
    let named = match (&req.python, &rf.python) {
        (Some(path), _) => Some(crate::python::Named::Flag(path)),
        (None, Some(path)) => p
            .rf_path
            .map(|file| crate::python::Named::Config { path, file }),
        (None, None) => None,
    };
    let python = crate::python::resolve(named, &req.invocation_dir)?;
    // Importing pytest takes an interpreter start-up: overlap it with discovery and planning.
    // Fork servers import pytest themselves; for them `interpreter_paths` only looks for it,
    // and that interpreter's start-up overlaps opening history and probing the isolation.
    let pytest_check = (!fork).then(|| {
        let python = python.clone();
        std::thread::spawn(move || crate::python::check_pytest(&python))
    });
    let paths_probe = fork.then(|| {
        let python = python.clone();
        std::thread::spawn(move || crate::python::interpreter_paths(&python))
    });
    let history = if req.no_history {
        None
    } else {
        match History::open(p.project_dir) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("racefree: warning: running without history: {e}");
                None
            }
        }
    };
    let launched = match paths_probe {
        Some(probe) => Some(launch(
            p,
            &python,
            history.as_ref(),
            || joined(probe, "asking the interpreter where it lives"),
            true,
        )?),
        None => None,
    };
    Ok(Early {
        python,
        pytest_check,
        history,
        launched,
    })
}

/// What the run was asked, resolved as far as starting it needs.
struct RunParams<'a> {
    req: &'a RunRequest,
    rf: &'a config::RacefreeConfig,
    /// The pyproject.toml `rf` came from, if any.
    rf_path: Option<&'a Path>,
    rootdir: &'a Path,
    /// Where racefree keeps its history (see `Resolved::project_dir`).
    project_dir: &'a Path,
    /// What every unit is told of pytest's configuration file.
    unit_config: UnitConfig,
    /// addopts, then the arguments after `--`.
    pytest_flags: &'a [String],
    workers: usize,
    /// racefree writes JUnit XML (see `ExecContext::junit`).
    junit: bool,
}

/// Where a run's units start: its session directory and the context every unit gets, with
/// the slots' fork servers started when units are forked. Dropping it lets go of the servers
/// (on Linux those still warming up end with racefree, by their parent-death signal; on macOS,
/// where forking is opt-in, they finish warming up and then exit), then removes the
/// session directory, however the run ends; what a server still warming up writes there
/// meanwhile is left to the next run's sweep, which sees this run dead.
struct Launch {
    ctx: ExecContext,
    session: Session,
    /// Lines for stderr (the isolation chosen, dead runs swept), said once the run's files
    /// are known to be there.
    notes: Vec<String>,
}

impl Launch {
    fn print_notes(&self) {
        for note in &self.notes {
            eprintln!("{note}");
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // The servers work in the session directory: they go first.
        self.ctx.fork = None;
        if let Err(e) = self.session.remove() {
            eprintln!("racefree: warning: {e}");
        }
    }
}

/// Resolves the isolation, creates the session directory (sweeping those of dead runs) and,
/// if `fork`, starts the fork servers (preloading what `history` learned); `python_paths`
/// gives the interpreter's directories (see `python::PythonInfo::paths`), asked for once the
/// isolation is resolved, so that a probe still running meanwhile overlaps that.
fn launch(
    p: &RunParams,
    python: &Path,
    history: Option<&History>,
    python_paths: impl FnOnce() -> Result<Vec<PathBuf>>,
    fork: bool,
) -> Result<Launch> {
    let req = p.req;
    let isolation = crate::isolation::resolve(
        req.isolate.or(p.rf.isolate).unwrap_or_default(),
        req.private_network || p.rf.private_network.unwrap_or(false),
        req.init_program.as_deref(),
    )?;
    // Before the session directory exists: an interpreter without pytest leaves nothing.
    let python_paths = python_paths()?;
    let mut notes = Vec::new();
    if isolation.fallback || req.verbosity > 0 {
        notes.push(isolation.note.clone());
    }
    let session = Session::create()?;
    // Remove what dead runs left behind (judged by their liveness locks, never by age).
    match crate::session::sweep(&crate::session::base_dir(), Some(&session.run_id), false) {
        Ok(swept) if !swept.dead.is_empty() => notes.push(format!(
            "racefree: removed {} session director{} of dead runs under {}",
            swept.dead.len(),
            if swept.dead.len() == 1 { "y" } else { "ies" },
            crate::session::base_dir().display()
        )),
        Ok(_) => {}
        Err(e) => notes.push(format!(
            "racefree: warning: could not clean up after dead runs: {e}"
        )),
    }
    let mut child_args = Vec::new();
    if let Some(k) = &req.keyword {
        child_args.extend(["-k".to_string(), k.clone()]);
    }
    if let Some(m) = &req.markexpr {
        child_args.extend(["-m".to_string(), m.clone()]);
    }
    // pytest counts subtests differently at each verbosity: mirror racefree's in the children.
    let flag = if req.verbosity < 0 { "-q" } else { "-v" };
    child_args.extend(std::iter::repeat_n(
        flag.to_string(),
        req.verbosity.unsigned_abs() as usize,
    ));
    child_args.extend(req.pytest_args.iter().cloned());
    if passthrough::junit_xml(p.pytest_flags).is_some() {
        // racefree writes the run's report (see `junit_xml` in `run`); no unit writes its own.
        child_args.push("--junitxml=".to_string());
    }
    if passthrough::asks_for_xdist(p.pytest_flags) {
        // racefree is the parallel runner: a suite whose addopts say `-n auto` must not make
        // every unit start its own xdist workers. Later options win in pytest's parser.
        child_args.extend(["-n".to_string(), "0".to_string()]);
    }
    let ctx = ExecContext {
        python: python.to_path_buf(),
        invocation_dir: req.invocation_dir.clone(),
        rootdir: p.rootdir.to_path_buf(),
        config: p.unit_config.clone(),
        workers: p.workers,
        run_id: session.run_id.clone(),
        pytest_args: child_args,
        anchors: req.args.clone(),
        fork: None,
        python_paths,
        isolation: isolation.isolation,
        show_output: passthrough::capture_off(p.pytest_flags),
        coverage: crate::coverage::requested(p.pytest_flags),
        junit: p.junit,
    };
    // From here on, an error removes the session directory.
    let mut launched = Launch {
        ctx,
        session,
        notes,
    };
    if fork {
        let mut preload = match history {
            Some(h) => or_without_history(h.preload_modules()),
            None => Vec::new(),
        };
        preload.extend(p.rf.preload.iter().flatten().cloned());
        if launched.ctx.coverage {
            // What a server imported, a unit does not import again: coverage would miss
            // the module-level lines of the code it measures (see `coverage`).
            preload.clear();
        }
        let preload_file = launched.session.root.join("preload.json");
        let json = serde_json::to_vec(&preload).map_err(|e| {
            crate::error::Error::io("encoding the preload list", std::io::Error::other(e))
        })?;
        std::fs::write(&preload_file, json).map_err(|e| {
            crate::error::Error::io(format!("writing {}", preload_file.display()), e)
        })?;
        let pool = crate::forkserver::ForkPool::start(
            p.workers,
            |slot| crate::executor::fork_server_command(&launched.ctx, &launched.session, slot),
            &preload_file,
            &launched.session.root,
            req.verbosity > 0,
        );
        launched.ctx.fork = Some(pool);
    }
    Ok(launched)
}

type PytestCheck = std::thread::JoinHandle<Result<crate::python::PythonInfo>>;

/// The value of pytest's option `name` (the last given, after `--` or in addopts), read as
/// a number; a usage error naming it and what it should be (`what`) if it is not one.
fn pytest_number<T: std::str::FromStr>(
    resolved: &Resolved,
    name: &str,
    what: &str,
) -> Result<Option<T>> {
    resolved
        .last_value(&[name])
        .map(|value| {
            value.parse::<T>().map_err(|_| {
                crate::error::Error::Usage(format!("pytest option `{name} {value}`: not {what}"))
            })
        })
        .transpose()
}

/// Ini options whose values pytest resolves as paths against the configuration file's
/// directory: pytest's own and pytest-xdist's. An `-o` of one of them would point at /dev
/// under `-c /dev/null`; other plugins' options are taken as no paths.
const PATH_INI_OPTIONS: &[&str] = &["pythonpath", "rsyncdirs", "rsyncignore", "looponfailroots"];

/// What every unit is told of pytest's configuration file (see `UnitConfig`): `setup` is
/// what `$PYTEST_ADDOPTS` and the arguments after `--` say of it, `confcutdir_given`
/// whether they name pytest's `--confcutdir`.
fn unit_config(
    inifile: Option<&Path>,
    setup: &config::SetupArgs,
    confcutdir_given: bool,
) -> UnitConfig {
    if setup.config_file.is_some() {
        return UnitConfig::AsPytestFinds;
    }
    let path_override = setup.overrides.iter().any(|o| {
        let name = o
            .split_once('=')
            .map_or(o.as_str(), |(name, _)| name)
            .trim();
        PATH_INI_OPTIONS.contains(&name)
    });
    match inifile {
        Some(file) => UnitConfig::File(file.to_path_buf()),
        None if path_override => UnitConfig::AsPytestFinds,
        None => UnitConfig::Nothing {
            cut_conftests: !confcutdir_given,
        },
    }
}

/// The answer of a check run on a thread of its own (`doing` names it, should it panic).
fn joined<T>(handle: std::thread::JoinHandle<Result<T>>, doing: &str) -> Result<T> {
    handle.join().map_err(|_| {
        crate::error::Error::io(doing.to_string(), std::io::Error::other("it panicked"))
    })?
}

fn join_check(check: Option<PytestCheck>) -> Result<crate::python::PythonInfo> {
    match check {
        Some(handle) => joined(handle, "checking pytest"),
        None => Ok(crate::python::PythonInfo::default()),
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&w| w >= 40)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_selects_itself_what_lies_under_it_and_its_cases() {
        assert!(selects("t.py::test_a", "t.py::test_a"));
        assert!(selects("t.py::C", "t.py::C::test_m"));
        assert!(selects("t.py::test_p", "t.py::test_p[1-x]"));
        assert!(!selects("t.py::test_a", "t.py::test_ab"));
        assert!(!selects("t.py::C::test_m", "t.py::C"));
    }

    #[test]
    fn groups_that_share_a_file_become_one() {
        assert_eq!(
            merged_groups(
                vec![vec![], vec![5, 1], vec![2, 3], vec![3, 9], vec![7, 5]],
                |i| i
            ),
            vec![vec![2, 3, 9], vec![1, 5, 7]]
        );
        assert!(merged_groups(vec![vec![]], |i| i).is_empty());
        // Each in the order asked for (here: the indices backwards).
        assert_eq!(
            merged_groups(vec![vec![1, 4], vec![4, 2]], |i| 10 - i),
            vec![vec![4, 2, 1]]
        );
    }

    #[test]
    fn units_are_told_the_runs_configuration_file_or_that_there_is_none() {
        let setup = |c: Option<&str>, o: &[&str]| config::SetupArgs {
            config_file: c.map(str::to_string),
            rootdir: None,
            overrides: o.iter().map(|s| s.to_string()).collect(),
        };
        let top = Path::new("/p/pytest.ini");
        let file = UnitConfig::File(top.to_path_buf());
        let nothing = UnitConfig::Nothing {
            cut_conftests: true,
        };
        assert_eq!(unit_config(Some(top), &setup(None, &[]), false), file);
        assert_eq!(
            unit_config(Some(top), &setup(None, &["pythonpath=x"]), false),
            file
        );
        assert_eq!(unit_config(None, &setup(None, &[]), false), nothing);
        let kept = UnitConfig::Nothing {
            cut_conftests: false,
        };
        assert_eq!(unit_config(None, &setup(None, &[]), true), kept);
        let named = setup(Some("ci.ini"), &[]);
        assert_eq!(
            unit_config(Some(top), &named, false),
            UnitConfig::AsPytestFinds
        );
        assert_eq!(unit_config(None, &named, false), UnitConfig::AsPytestFinds);
        // An option pytest resolves as a path is left to pytest; any other is not.
        for o in ["pythonpath=src", "rsyncdirs=a"] {
            assert_eq!(
                unit_config(None, &setup(None, &[o]), false),
                UnitConfig::AsPytestFinds,
                "{o}"
            );
        }
        let classic = setup(
            None,
            &["console_output_style=classic", "xfail_strict = true"],
        );
        assert_eq!(unit_config(None, &classic, false), nothing);
    }

    #[test]
    fn fault_policy_from_flags_then_config_then_defaults() {
        let rf: config::RacefreeConfig = toml::from_str(
            "timeout = 30\nkill-grace = 0.5\nretries = 2\nflaky-result = \"fail\"\ninfra-retries = 1\nrun-timeout = 600\n",
        )
        .unwrap();
        let req = RunRequest {
            timeout: Some(5.0),
            ..RunRequest::default()
        };
        let p = fault_policy(&req, &rf, None).unwrap();
        assert_eq!(p.timeout, Some(5.0));
        assert_eq!(p.kill_grace, Duration::from_millis(500));
        assert_eq!(p.run_timeout, Some(Duration::from_secs(600)));
        assert_eq!((p.retries, p.flaky_fails, p.infra_retries), (2, true, 1));
        let p = fault_policy(
            &RunRequest::default(),
            &config::RacefreeConfig::default(),
            None,
        )
        .unwrap();
        assert_eq!(p, FaultPolicy::default());
        // 0 means no limit.
        let req = RunRequest {
            timeout: Some(0.0),
            ..RunRequest::default()
        };
        assert_eq!(fault_policy(&req, &rf, None).unwrap().timeout, None);
        let req = RunRequest {
            kill_grace: Some(-1.0),
            ..RunRequest::default()
        };
        let err = fault_policy(&req, &rf, None).unwrap_err().to_string();
        assert!(err.contains("--kill-grace"), "{err}");
        // A finite value too large for a Duration is refused, not panicked on.
        let req = RunRequest {
            timeout: Some(1e30),
            ..RunRequest::default()
        };
        let err = fault_policy(&req, &rf, None).unwrap_err().to_string();
        assert!(err.contains("--timeout") && err.contains("use 0"), "{err}");
        // A bad value from the configuration names the file and the key, not a flag.
        let bad: config::RacefreeConfig = toml::from_str("run-timeout = -3\n").unwrap();
        let path = Path::new("/p/pyproject.toml");
        let err = fault_policy(&RunRequest::default(), &bad, Some(path))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`run-timeout` in [tool.racefree] of /p/pyproject.toml"),
            "{err}"
        );
        assert!(toml::from_str::<config::RacefreeConfig>("flaky-result = \"maybe\"").is_err());
    }
}
