//! The per-unit cost of namespace isolation (bench/isolation/run.sh): spawn-and-wait times of
//! a command started directly and through `racefree __unit-init`, interleaved round by round
//! so both see the same machine. Wall time includes waiting for a CPU, which on a busy machine
//! dominates; CPU time (user + system of the process and everything it waited for, from
//! getrusage) is the work isolation costs. Usage:
//!
//!   isolation_bench RACEFREE_BINARY ROUNDS [PYTHON]
//!
//! Prints one line per scenario and the overhead of isolation per unit.

use std::process::{Command, Stdio};
use std::time::Instant;

struct Scenario {
    name: &'static str,
    argv: Vec<String>,
    ms: Vec<f64>,
    cpu_ms: f64,
}

/// User + system time of this process's waited-for descendants, in milliseconds.
fn children_cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole rusage into the valid pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let usage = unsafe { usage.assume_init() };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Wall and CPU milliseconds of one spawn-and-wait.
fn time_once(argv: &[String]) -> Result<(f64, f64), String> {
    let cpu_before = children_cpu_ms();
    let started = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !status.success() {
        return Err(format!("{argv:?} ended with {status}"));
    }
    Ok((ms, children_cpu_ms() - cpu_before))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: isolation_bench RACEFREE_BINARY ROUNDS [PYTHON]".into());
    }
    let racefree = args[1].clone();
    let rounds: usize = args[2].parse().map_err(|e| format!("ROUNDS: {e}"))?;
    let true_bin = "/bin/true".to_string();
    let init = |extra: &[&str], cmd: &[&str]| -> Vec<String> {
        let mut v = vec![racefree.clone(), "__unit-init".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("--".into());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    };
    let mut scenarios = vec![
        Scenario {
            name: "/bin/true",
            argv: vec![true_bin.clone()],
            ms: Vec::new(),
            cpu_ms: 0.0,
        },
        Scenario {
            name: "racefree --version",
            argv: vec![racefree.clone(), "--version".into()],
            ms: Vec::new(),
            cpu_ms: 0.0,
        },
        Scenario {
            name: "__unit-init -- /bin/true",
            argv: init(&[], &["/bin/true"]),
            ms: Vec::new(),
            cpu_ms: 0.0,
        },
        Scenario {
            name: "__unit-init --private-network -- /bin/true",
            argv: init(&["--private-network"], &["/bin/true"]),
            ms: Vec::new(),
            cpu_ms: 0.0,
        },
    ];
    if let Some(python) = args.get(3) {
        scenarios.push(Scenario {
            name: "python -c pass",
            argv: vec![python.clone(), "-c".into(), "pass".into()],
            ms: Vec::new(),
            cpu_ms: 0.0,
        });
        scenarios.push(Scenario {
            name: "__unit-init -- python -c pass",
            argv: init(&[], &[python, "-c", "pass"]),
            ms: Vec::new(),
            cpu_ms: 0.0,
        });
    }
    // Warm up caches (page cache, dynamic loader) before measuring.
    for s in &scenarios {
        time_once(&s.argv)?;
    }
    for _ in 0..rounds {
        for s in &mut scenarios {
            let (ms, cpu) = time_once(&s.argv)?;
            s.ms.push(ms);
            s.cpu_ms += cpu;
        }
    }
    println!(
        "{rounds} rounds, interleaved; spawn + wait, milliseconds per process (lower is better)"
    );
    println!(
        "  {:<44} {:>8} {:>8} {:>8} {:>8}",
        "scenario", "median", "mean", "p95", "CPU"
    );
    let mut medians = std::collections::BTreeMap::new();
    let mut cpu = std::collections::BTreeMap::new();
    for s in &mut scenarios {
        s.ms.sort_by(f64::total_cmp);
        let median = quantile(&s.ms, 0.5);
        let mean = s.ms.iter().sum::<f64>() / s.ms.len() as f64;
        let cpu_per = s.cpu_ms / s.ms.len() as f64;
        println!(
            "  {:<44} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            s.name,
            median,
            mean,
            quantile(&s.ms, 0.95),
            cpu_per
        );
        medians.insert(s.name, median);
        cpu.insert(s.name, cpu_per);
    }
    let overhead = |with: &str, without: &str| {
        let (w, wo) = (medians[with], medians[without]);
        let (c, co) = (cpu[with], cpu[without]);
        println!("  {with} vs {without}:");
        println!(
            "      wall (median) +{:.2} ms per unit, {:.2}x; CPU +{:.2} ms per unit, {:.2}x (target: under 5 ms)",
            w - wo,
            w / wo,
            c - co,
            c / co
        );
    };
    println!("Isolation overhead per unit:");
    overhead("__unit-init -- /bin/true", "/bin/true");
    overhead("__unit-init --private-network -- /bin/true", "/bin/true");
    overhead("__unit-init -- /bin/true", "racefree --version");
    if medians.contains_key("python -c pass") {
        overhead("__unit-init -- python -c pass", "python -c pass");
    }
    Ok(())
}
